"""The one patch-labelling rule: a label map pooled to a feature grid (each patch's majority label).

Both k-NN users read it: the k-NN baseline adapter (probe/knn.py, through the semantic task's
`patch_values`) and the local k-NN test (evaluate/local/knn.py). A leaf module, so the tasks import it
without importing the k-NN bank.
"""

from __future__ import annotations

import numpy as np
import torch

from maxa.core.sample import IGNORE_INDEX

COUNT_BUDGET = 1 << 24
"""Most (image, patch, class) label counts held at once while labelling patches."""


def patch_labels(labels: np.ndarray, grid: tuple[int, int], num_classes: int) -> torch.Tensor:
    """(N, H, W) label maps -> (N, h, w) int64: each patch's majority label.

    A label pixel belongs to patch floor(y h / H), floor(x w / W) (the cell nearest-neighbour
    upsampling reads it back from). Ignore pixels (255, or any id >= num_classes) vote too: a patch
    they dominate, or one covering no pixel, is labelled IGNORE_INDEX and never counts.
    """
    n, height, width = labels.shape
    h, w = grid
    rows = (np.arange(height) * h) // height
    cols = (np.arange(width) * w) // width
    cell = torch.from_numpy((rows[:, None] * w + cols[None, :]).ravel())
    buckets = num_classes + 1
    per_step = max(1, COUNT_BUDGET // (h * w * buckets))  # bounds the (images, cells, classes) counts
    out = []
    for start in range(0, n, per_step):
        lab = torch.from_numpy(np.ascontiguousarray(labels[start : start + per_step])).long()
        lab = lab.reshape(lab.shape[0], -1)
        lab = torch.where(lab < num_classes, lab, torch.full_like(lab, num_classes))
        index = (torch.arange(lab.shape[0])[:, None] * (h * w) + cell[None, :]) * buckets + lab
        counts = torch.bincount(index.ravel(), minlength=lab.shape[0] * h * w * buckets)
        counts = counts.view(lab.shape[0], h * w, buckets)
        winner = counts.argmax(-1)
        dropped = (winner == num_classes) | (counts.sum(-1) == 0)
        out.append(torch.where(dropped, torch.full_like(winner, IGNORE_INDEX), winner).view(-1, h, w))
    return torch.cat(out) if out else torch.zeros((0, h, w), dtype=torch.int64)
