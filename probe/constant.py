"""The constant baseline on the validation hold-out: what a sweep's chosen member must beat.

A probe starts from the best input-independent output (its output bias); training on features that carry
nothing (noise) can end worse than that start. Held-out selection therefore compares the chosen member's
validation loss with the constant's on the same rows, and the sweep record says when the member lost.
"""

from __future__ import annotations

import numpy as np
import torch

from maxa.probe.data import StorePair
from maxa.probe.loader import blocks_of_rows
from maxa.probe.tasks import Stats, Task


def constant_val_loss(pair: StorePair, task: Task, stats: Stats, rows: np.ndarray, batch_size: int) -> float:
    """Mean task loss of the constant baseline (`task.constant_output`) over the held-out rows."""
    total, count = 0.0, 0
    for _, raw in blocks_of_rows(pair, rows, keep=True, features=False):
        encoded = task.encode(raw)
        for start in range(0, len(raw), batch_size):
            y = torch.from_numpy(encoded[start : start + batch_size])
            output = task.constant_output(stats, len(y), pair.label_size)
            total += float(task.loss(output, y)) * len(y)
            count += len(y)
    return total / max(count, 1)
