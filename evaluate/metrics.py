"""Segmentation metrics from a confusion matrix accumulated over batches."""

from __future__ import annotations

import numpy as np
import torch

from maxa.extract.sample import IGNORE_INDEX


class ConfusionMatrix:
    """Accumulates (true, predicted) pixel counts; ignore-labelled pixels never count."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        valid = (target != IGNORE_INDEX) & (target >= 0) & (target < self.num_classes)
        t, p = target[valid].long(), pred[valid].long().clamp(0, self.num_classes - 1)
        self.matrix += (
            torch.bincount(t * self.num_classes + p, minlength=self.num_classes**2)
            .view(self.num_classes, self.num_classes)
            .cpu()
        )

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for classes absent from both ground truth and prediction."""
        m = self.matrix.double()
        inter = m.diag()
        union = m.sum(0) + m.sum(1) - inter
        iou = torch.where(union > 0, inter / union.clamp(min=1), torch.full_like(inter, float("nan")))
        return iou.numpy()

    def miou(self) -> float:
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = int(self.matrix.sum())
        return float(self.matrix.diag().sum()) / total if total else float("nan")
