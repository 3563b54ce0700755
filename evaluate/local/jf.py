"""The DAVIS 2017 semi-supervised measures: region similarity J, boundary accuracy F, and J&F.

Definitions as in the official davis2017-evaluation code (davis2017/metrics.py, evaluation.py, utils.py):
- J of one object in one frame: |pred ∩ gt| / |pred ∪ gt|, and 1 when both are empty.
- F: boundaries are the pixels whose value differs from the neighbour to the right, below, or
  below-right (the last row compares only to the right, the last column only below, the corner is
  never a boundary). Each boundary map is dilated by a disk of radius ceil(0.008 x image diagonal)
  pixels; precision = share of predicted boundary pixels inside the dilated true boundary, recall =
  share of true boundary pixels inside the dilated predicted one. No predicted boundary: P=1, R=0;
  no true boundary: P=0, R=1; neither: both 1. F = 2PR / (P + R), 0 when P + R = 0.
- Objects are the ids 1..max of the first frame's annotation; the first and last frames are not
  scored. Per object: mean (nanmean over frames), recall (share of frames above 0.5) and decay
  (mean of the first quarter of frames minus the last). J&F = (mean of J means + mean of F means) / 2,
  means taken over all objects of all sequences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from maxa.evaluate.local.config import BOUND_TH


def jaccard(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> float:
    """Region similarity of two binary (H, W) masks; pixels under `void` do not count."""
    gt, pred = gt.astype(bool), pred.astype(bool)
    valid = np.ones_like(gt) if void is None else ~void.astype(bool)
    union = int(((gt | pred) & valid).sum())
    return 1.0 if union == 0 else int(((gt & pred) & valid).sum()) / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """1-pixel-wide boundary of a binary (H, W) mask, offset half a pixel towards the origin."""
    seg = mask.astype(bool)
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    edge = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    edge[-1, :] = seg[-1, :] ^ east[-1, :]
    edge[:, -1] = seg[:, -1] ^ south[:, -1]
    edge[-1, -1] = False
    return edge


def disk(radius: int) -> np.ndarray:
    """Binary disk structuring element: offsets (dy, dx) with dy² + dx² <= radius²."""
    offsets = np.arange(-radius, radius + 1)
    return (offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius**2


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a disk (a convolution with the disk, thresholded)."""
    if radius <= 0:
        return mask.astype(bool)
    kernel = torch.from_numpy(disk(radius).astype(np.float32))[None, None]
    x = torch.from_numpy(mask.astype(np.float32))[None, None]
    return (F.conv2d(x, kernel, padding=radius)[0, 0] > 0.5).numpy()


def boundary_radius(shape: tuple[int, ...], bound_th: float = BOUND_TH) -> int:
    return int(bound_th) if bound_th >= 1 else math.ceil(bound_th * math.hypot(shape[0], shape[1]))


def f_measure(
    gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None, bound_th: float = BOUND_TH
) -> float:
    """Boundary F-measure of two binary (H, W) masks with DAVIS's tolerance."""
    keep = np.ones(gt.shape, dtype=bool) if void is None else ~void.astype(bool)
    pred_edge = boundary_map(pred.astype(bool) & keep)
    gt_edge = boundary_map(gt.astype(bool) & keep)
    radius = boundary_radius(gt.shape, bound_th)
    n_pred, n_gt = int(pred_edge.sum()), int(gt_edge.sum())
    if n_pred == 0 and n_gt == 0:
        precision = recall = 1.0
    elif n_pred == 0:
        precision, recall = 1.0, 0.0
    elif n_gt == 0:
        precision, recall = 0.0, 1.0
    else:
        precision = int((pred_edge & dilate(gt_edge, radius)).sum()) / n_pred
        recall = int((gt_edge & dilate(pred_edge, radius)).sum()) / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def statistics(values: np.ndarray) -> tuple[float, float, float]:
    """(mean, recall, decay) of one object's per-frame values, as DAVIS summarizes them."""
    values = np.asarray(values, dtype=np.float64)
    if not len(values):
        return math.nan, math.nan, math.nan
    mean = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
    recall = float(np.nanmean(values > 0.5))
    ids = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(int)
    bins = [values[ids[i] : ids[i + 1] + 1] for i in range(4)]
    first, last = bins[0][np.isfinite(bins[0])], bins[3][np.isfinite(bins[3])]
    decay = float(first.mean() - last.mean()) if len(first) and len(last) else math.nan
    return mean, recall, decay


@dataclass
class SequenceScores:
    """Per-object, per-scored-frame J and F of one sequence (objects x frames)."""

    name: str
    j: np.ndarray
    f: np.ndarray


def score_sequence(
    name: str,
    gt: np.ndarray,
    pred: np.ndarray,
    *,
    void: np.ndarray | None = None,
    bound_th: float = BOUND_TH,
    skip_first_last: bool = True,
) -> SequenceScores:
    """J and F of every object (ids 1..max of gt frame 0) in every scored frame of a (T, H, W) sequence."""
    if gt.shape != pred.shape:
        raise ValueError(
            f"sequence {name}: prediction {pred.shape} and annotation {gt.shape} differ in shape"
        )
    num_objects = int(gt[0][gt[0] != 255].max(initial=0))
    frames = range(1, len(gt) - 1) if skip_first_last else range(len(gt))
    j = np.zeros((num_objects, len(frames)))
    f = np.zeros((num_objects, len(frames)))
    for col, t in enumerate(frames):
        frame_void = None if void is None else void[t]
        for obj in range(num_objects):
            truth, guess = gt[t] == obj + 1, pred[t] == obj + 1
            j[obj, col] = jaccard(truth, guess, frame_void)
            f[obj, col] = f_measure(truth, guess, frame_void, bound_th)
    return SequenceScores(name, j, f)


@dataclass
class JFSummary:
    """DAVIS's global numbers plus the per-object means they are averaged from."""

    scores: dict[str, float] = field(default_factory=dict)
    per_object: dict[str, dict[str, float]] = field(default_factory=dict)


def summarize(sequences: Sequence[SequenceScores]) -> JFSummary:
    stats: dict[str, list[tuple[float, float, float]]] = {"J": [], "F": []}
    per_object: dict[str, dict[str, float]] = {}
    for seq in sequences:
        for obj in range(seq.j.shape[0]):
            j_stats, f_stats = statistics(seq.j[obj]), statistics(seq.f[obj])
            stats["J"].append(j_stats)
            stats["F"].append(f_stats)
            per_object[f"{seq.name}_{obj + 1}"] = {"J": j_stats[0], "F": f_stats[0]}
    scores: dict[str, float] = {}
    for metric, rows in stats.items():
        arr = np.array(rows, dtype=np.float64).reshape(-1, 3)
        for col, label in enumerate(("Mean", "Recall", "Decay")):
            column = arr[:, col]
            scores[f"{metric}-{label}"] = float(np.mean(column)) if len(column) else math.nan
    scores["J&F-Mean"] = (scores["J-Mean"] + scores["F-Mean"]) / 2
    return JFSummary(scores, per_object)
