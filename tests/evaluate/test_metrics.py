"""Tests for ConfusionMatrix (evaluate/metrics.py) against an independent numpy computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from maxa.evaluate.metrics import ConfusionMatrix
from maxa.extract.sample import IGNORE_INDEX

NUM_CLASSES = 5
ABSENT = 3  # never in ground truth nor prediction


def _random_labels(seed: int, shape: tuple[int, ...] = (4, 16, 16)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    present = [c for c in range(NUM_CLASSES) if c != ABSENT]
    target = rng.choice(present, size=shape).astype(np.int64)
    pred = rng.choice(present, size=shape).astype(np.int64)
    # Make predictions mostly right so IoUs are not all tiny.
    agree = rng.random(shape) < 0.6
    pred[agree] = target[agree]
    target[rng.random(shape) < 0.15] = IGNORE_INDEX
    return pred, target


def _reference(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Per-class IoU (NaN where a class is absent from both), nan-mean IoU and pixel accuracy."""
    valid = target != IGNORE_INDEX
    p, t = pred[valid], target[valid]
    ious = np.full(NUM_CLASSES, np.nan)
    for c in range(NUM_CLASSES):
        inter = np.sum((p == c) & (t == c))
        union = np.sum((p == c) | (t == c))
        if union:
            ious[c] = inter / union
    return ious, float(np.nanmean(ious)), float(np.mean(p == t))


def test_matches_numpy_reference() -> None:
    pred, target = _random_labels(0)
    cm = ConfusionMatrix(NUM_CLASSES)
    cm.update(torch.from_numpy(pred), torch.from_numpy(target))
    ref_iou, ref_miou, ref_acc = _reference(pred, target)
    iou = cm.iou()
    assert np.isnan(iou[ABSENT])
    assert np.isnan(ref_iou[ABSENT])
    np.testing.assert_allclose(iou, ref_iou, rtol=0, atol=1e-12, equal_nan=True)
    assert cm.miou() == pytest.approx(ref_miou, abs=1e-12)
    # The absent class is excluded from the mean, not counted as zero.
    finite = iou[np.isfinite(iou)]
    assert cm.miou() == pytest.approx(finite.sum() / (NUM_CLASSES - 1))
    assert cm.miou() > finite.sum() / NUM_CLASSES
    assert cm.pixel_accuracy() == pytest.approx(ref_acc, abs=1e-12)


def test_ignore_pixels_do_not_count() -> None:
    pred, target = _random_labels(1)
    cm = ConfusionMatrix(NUM_CLASSES)
    cm.update(torch.from_numpy(pred), torch.from_numpy(target))
    assert int(cm.matrix.sum()) == int(np.sum(target != IGNORE_INDEX))
    # Reference confusion matrix: rows = truth, columns = prediction.
    valid = target != IGNORE_INDEX
    ref = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(ref, (target[valid], pred[valid]), 1)
    np.testing.assert_array_equal(cm.matrix.numpy(), ref)


def test_batches_accumulate_like_one_update() -> None:
    pred, target = _random_labels(2, shape=(6, 12, 12))
    whole = ConfusionMatrix(NUM_CLASSES)
    whole.update(torch.from_numpy(pred), torch.from_numpy(target))
    batched = ConfusionMatrix(NUM_CLASSES)
    for lo, hi in [(0, 1), (1, 4), (4, 6)]:
        batched.update(torch.from_numpy(pred[lo:hi]), torch.from_numpy(target[lo:hi]))
    assert torch.equal(batched.matrix, whole.matrix)
    np.testing.assert_array_equal(batched.iou(), whole.iou())
    assert batched.miou() == whole.miou()
    assert batched.pixel_accuracy() == whole.pixel_accuracy()


def test_perfect_prediction() -> None:
    _, target = _random_labels(3)
    pred = np.where(target == IGNORE_INDEX, 0, target)
    cm = ConfusionMatrix(NUM_CLASSES)
    cm.update(torch.from_numpy(pred), torch.from_numpy(target))
    assert cm.miou() == 1.0
    assert cm.pixel_accuracy() == 1.0


def test_empty_matrix_is_nan() -> None:
    cm = ConfusionMatrix(NUM_CLASSES)
    target = torch.full((2, 4, 4), IGNORE_INDEX)
    cm.update(torch.zeros(2, 4, 4, dtype=torch.long), target)
    assert int(cm.matrix.sum()) == 0
    assert np.isnan(cm.iou()).all()
    assert math.isnan(cm.miou())
    assert math.isnan(cm.pixel_accuracy())
