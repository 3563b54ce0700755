"""The DAVIS 2017 semi-supervised measures: region similarity J, boundary accuracy F, and J&F.

Definitions as in the official davis2017-evaluation code (davis2017/metrics.py, evaluation.py, utils.py):
- J of one object in one frame: |pred ∩ gt| / |pred ∪ gt|, and 1 when both are empty.
- F: boundaries are the pixels whose value differs from the neighbour to the right, below, or
  below-right (the last row compares only to the right, the last column only below, the corner is
  never a boundary). Each boundary map is dilated by a disk of radius ceil(0.008 x image diagonal)
  pixels (metrics.py f_measure, lines 77-89: skimage `disk`, cv2.dilate); precision = share of
  predicted boundary pixels inside the dilated true boundary, recall = share of true boundary pixels
  inside the dilated predicted one. No predicted boundary: P=1, R=0;
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
from scipy.spatial import cKDTree

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


def within_radius(points: np.ndarray, anchors: np.ndarray, radius: int) -> np.ndarray:
    """For each (y, x) row of `points`: does it lie in `anchors` dilated by a disk of `radius`?

    The disk is davis2017's structuring element (skimage `disk`: offsets with dy² + dx² <= r²), so
    a point lies in the dilation exactly when some anchor is at squared distance <= radius², so a
    nearest-neighbour query over the anchors answers it without dilating the whole frame (cost grows
    with the boundary length, not the image area). Distances between integer points compare
    exactly: sqrt is correctly rounded and sqrt(radius²) == radius.
    """
    if not len(points) or not len(anchors):
        return np.zeros(len(points), dtype=bool)
    distance, _ = cKDTree(anchors).query(points, k=1, distance_upper_bound=radius + 0.5)
    return distance <= radius


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
        pred_points, gt_points = np.argwhere(pred_edge), np.argwhere(gt_edge)
        precision = int(within_radius(pred_points, gt_points, radius).sum()) / n_pred
        recall = int(within_radius(gt_points, pred_points, radius).sum()) / n_gt
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
