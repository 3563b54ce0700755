"""Object centres and sizes as the MAXA paper's code defines them (constantinpape/deap).

Targets (deap `datasets/functions.py`, `prepare_labels`, the "centers_gauss" branch): pixel coordinates
are normalized with `linspace(0, 1, side)` per axis; each object's centre is the mean of its pixels'
coordinates, and both the centre and the pixel grid are snapped to multiples of 1/side; the heatmap adds
exp(-d² / 2s²) per object, s = 0.12 * sqrt(mask area / image area) * 224 / W, clipped to [0, 1]; the
box size (x extent, y extent) = ((max col - min col) / W, (max row - min row) / H) is the regression target
at every pixel within 0.01 (normalized) of the snapped centre.

Loss (deap `tasks/center_net.py`, `CenterNetTask` in its default "focal" mode): torchvision's
`sigmoid_focal_loss` (alpha 0.25, gamma 2, mean over all pixels) against the Gaussian heatmap, plus the
mean L1 error of the sizes over the target's non-zero size entries.

Decoding (`CenterNetTask.evaluate`): peaks are pixels equal to the 3x3 maximum of the sigmoid heatmap
(edges reflected) with score > 0.01; a box is the peak's pixel index ± half the predicted size (sizes
scaled by the label map's width and height), clamped to the map; greedy NMS at IoU 0.5, then the best 100.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F
from torch import Tensor

from maxa.probe.task_specs import MAX_DETECTIONS

SIGMA_SCALE = 0.12
SIGMA_REFERENCE_WIDTH = 224.0
SIZE_RADIUS = 0.01
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0
MIN_SCORE = 0.01
NMS_IOU = 0.5


def _axes(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference's normalized pixel coordinates (y over H rows, x over W columns)."""
    return np.linspace(0.0, 1.0, h), np.linspace(0.0, 1.0, w)


def encode(instances: np.ndarray) -> np.ndarray:
    """(n, H, W) instance maps -> (n, 3, H, W) float32 targets: heatmap, box x extent / W, y extent / H."""
    n, h, w = instances.shape
    out = np.zeros((n, 3, h, w), np.float32)
    gy, gx = _axes(h, w)
    snap_y, snap_x = np.round(gy * h) / h, np.round(gx * w) / w
    for i in range(n):
        heat = np.zeros((h, w), np.float64)
        ids = np.unique(instances[i])
        for obj in ids[ids > 0]:
            rows, cols = np.nonzero(instances[i] == obj)
            cy, cx = np.round(gy[rows].mean() * h) / h, np.round(gx[cols].mean() * w) / w
            s = SIGMA_SCALE * np.sqrt(rows.size / (h * w)) * SIGMA_REFERENCE_WIDTH / w
            d = (snap_y[:, None] - cy) ** 2 + (snap_x[None, :] - cx) ** 2
            heat += np.exp(-d / (2 * s**2))
            near = np.sqrt(d) < SIZE_RADIUS
            out[i, 1][near] = (cols.max() - cols.min()) / w
            out[i, 2][near] = (rows.max() - rows.min()) / h
        out[i, 0] = np.clip(heat, 0.0, 1.0)
    return out


def focal_loss(
    logits: Tensor, target: Tensor, alpha: float = FOCAL_ALPHA, gamma: float = FOCAL_GAMMA
) -> Tensor:
    """Mean sigmoid focal loss (RetinaNet's form, as torchvision.ops.sigmoid_focal_loss) with soft targets."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    return (alpha_t * ce * (1 - p_t) ** gamma).mean()


def loss(output: Tensor, target: Tensor) -> Tensor:
    """Focal loss on the heatmap + mean L1 of the sizes where the target size is non-zero."""
    heat = focal_loss(output[:, 0].float(), target[:, 0].float())
    sizes, size_target = output[:, 1:3].float(), target[:, 1:3].float()
    valid = size_target > 0
    if not valid.any():  # no object in the batch (the reference's mean over nothing would be NaN)
        return heat + sizes.sum() * 0.0
    return heat + (sizes - size_target).abs()[valid].mean()


def _area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xyxy boxes a (n, 4) and b (m, 4)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    wh = np.clip(np.minimum(a[:, None, 2:], b[None, :, 2:]) - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int | None = None
) -> np.ndarray:
    """Indices kept by greedy NMS, best score first: a box is dropped when its IoU with a kept, better box
    exceeds the threshold (torchvision.ops.nms's rule; its compiled op is missing on CPU-only torch here).

    Greedy NMS decides boxes in score order, so stopping after `max_keep` kept boxes gives exactly the
    first `max_keep` of the full result, at O(max_keep x n) instead of an n x n IoU matrix (an untrained
    heatmap has thousands of peaks). Each kept box is compared with the boxes still alive only."""
    order = np.argsort(-scores, kind="stable")
    alive = boxes[order].astype(np.float64)
    ranks = np.arange(len(order))
    areas = _area(alive)
    keep: list[int] = []
    while len(ranks) and (max_keep is None or len(keep) < max_keep):
        best, rest = alive[0], alive[1:]
        keep.append(int(ranks[0]))
        lt = np.maximum(best[:2], rest[:, :2])
        wh = np.clip(np.minimum(best[2:], rest[:, 2:]) - lt, 0, None)
        inter = wh[:, 0] * wh[:, 1]
        union = areas[0] + areas[1:] - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
        survive = iou <= iou_threshold
        alive, ranks, areas = rest[survive], ranks[1:][survive], areas[1:][survive]
    return order[np.asarray(keep, np.int64)] if keep else np.zeros(0, np.int64)


@torch.no_grad()
def decode(
    output: Tensor, max_detections: int = MAX_DETECTIONS, nms_iou: float = NMS_IOU
) -> list[tuple[Tensor, Tensor]]:
    """(B, 3, H, W) outputs -> per image (boxes (k, 4) xyxy in label pixels, scores (k,)), best first."""
    _, _, h, w = output.shape
    heat = output[:, 0].float().sigmoid().cpu().numpy()
    sizes = output[:, 1:3].float().cpu().numpy()
    results = []
    for i in range(heat.shape[0]):
        peaks = (heat[i] == ndi.maximum_filter(heat[i], size=3, mode="reflect")) & (heat[i] > MIN_SCORE)
        rows, cols = np.nonzero(peaks)
        scores = heat[i][rows, cols]
        half = sizes[i][:, rows, cols].T * np.array([w, h]) / 2
        centres = np.stack([cols, rows], axis=1).astype(np.float64)
        boxes = np.concatenate([centres - half, centres + half], axis=1)
        boxes = np.clip(boxes, 0, [w, h, w, h])
        keep = nms(boxes, scores, nms_iou, max_keep=max_detections)
        results.append((torch.from_numpy(boxes[keep]).float(), torch.from_numpy(scores[keep]).float()))
    return results
