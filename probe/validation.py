"""Model selection on the validation hold-out of the training split (`--val-fraction`, `--val-seed`).

Each member's mean task loss on the held-out rows picks the (layer, lr) with the lowest mean over seeds.
A probe starts from the best input-independent output (its output bias); training on features that carry
nothing (noise) can end worse than that start, so the chosen member's loss is compared with the constant
baseline's on the same rows, and the sweep record says when the member lost. The evaluated split is never
looked at here.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from maxa.core.errors import MaxaError
from maxa.probe.config import ProbeConfig
from maxa.probe.data import StorePair
from maxa.probe.loader import blocks_of_rows
from maxa.probe.member import Member, loss_size, select
from maxa.probe.tasks import Stats, Task

CRITERION = (
    "mean task loss on the validation hold-out of the training split (lower is better), mean over seeds"
)


def _held_out(
    pair: StorePair, task: Task, rows: np.ndarray, batch_size: int, *, features: bool
) -> Iterator[tuple[np.ndarray | None, np.ndarray]]:
    """(features or None, encoded targets) of the held-out rows, in batches, in store order."""
    for feats, raw in blocks_of_rows(pair, rows, keep=True, features=features):
        encoded = task.encode(raw)
        for start in range(0, len(raw), batch_size):
            block = None if feats is None else feats[start : start + batch_size]
            yield block, encoded[start : start + batch_size]


@torch.inference_mode()
def validation_losses(
    members: list[Member],
    pair: StorePair,
    task: Task,
    rows: np.ndarray,
    batch_size: int,
    device: torch.device,
) -> list[float]:
    """Mean task loss of each member over the held-out training rows (one read shared by all)."""
    totals, count = [0.0] * len(members), 0
    for member in members:
        member.model.eval()
    for feats, encoded in _held_out(pair, task, rows, batch_size, features=True):
        assert feats is not None
        x, y = torch.from_numpy(feats).to(device), torch.from_numpy(encoded).to(device)
        for i, member in enumerate(members):
            member.use(task)
            size = loss_size(task, member.model, pair.label_size)
            output = member.model(select(member.channels, x), output_size=size)
            totals[i] += float(task.loss(output.float(), y)) * len(y)
        count += len(y)
    for member in members:
        member.model.train()
    return [t / max(count, 1) for t in totals]


def constant_val_loss(pair: StorePair, task: Task, stats: Stats, rows: np.ndarray, batch_size: int) -> float:
    """Mean task loss of the constant baseline (`task.constant_output`) over the held-out rows."""
    total, count = 0.0, 0
    for _, encoded in _held_out(pair, task, rows, batch_size, features=False):
        y = torch.from_numpy(encoded)
        output = task.constant_output(stats, len(y), pair.label_size)
        total += float(task.loss(output, y)) * len(y)
        count += len(y)
    return total / max(count, 1)


def choose(configs: list[ProbeConfig], val_losses: list[float]) -> tuple[str, float]:
    """The (layer, lr) with the lowest mean validation loss over seeds (first in grid order on ties)."""
    groups: dict[tuple[str, float], list[float]] = {}
    for config, loss in zip(configs, val_losses, strict=True):
        groups.setdefault((config.layer, config.lr), []).append(loss)
    if len(groups) == 1:
        return next(iter(groups))
    means = {key: float(np.mean(v)) for key, v in groups.items()}
    if not all(np.isfinite(list(means.values()))):
        raise MaxaError("a sweep member's validation loss is not finite; lower --sweep-lrs")
    return min(means, key=lambda key: means[key])
