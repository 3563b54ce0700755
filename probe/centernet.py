"""CenterNet-style object centres and sizes: boxes from instance masks, heatmap targets, loss, decoding.

Boxes are xyxy in pixel-edge coordinates of the label map (a 1-pixel object at (x, y) is (x, y, x+1, y+1)).
Targets are a Gaussian heatmap peaking at exactly 1 on each object's centre pixel, with a width that
follows the box (std 0.09 of the box side per axis, as in TTFNet's elliptical variant of CenterNet), and
the box width/height, as fractions of the label map, stored at the centre pixels only.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi
import torch
import torch.nn.functional as F
from torch import Tensor

SIGMA_PER_SIDE = 0.54 / 6.0
"""Heatmap std as a fraction of the box width (x) and height (y)."""


def boxes_from_instances(instances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-instance boxes (n, 4) xyxy and mask areas (n,) in pixels; id 0 is background.

    Ids need not be consecutive; boxes come in increasing id order.
    """
    inst = np.asarray(instances)
    if inst.ndim != 2:
        raise ValueError(f"instances must be a 2-D id map, got shape {inst.shape}")
    positive = inst > 0
    ids = np.unique(inst[positive])
    if ids.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float64)
    dense = np.zeros(inst.shape, np.int64)  # ids renumbered 1..n so find_objects returns no gaps
    dense[positive] = np.searchsorted(ids, inst[positive]) + 1
    boxes = [(cols.start, rows.start, cols.stop, rows.stop) for rows, cols in ndi.find_objects(dense)]
    areas = np.bincount(dense.ravel(), minlength=ids.size + 1)[1:]
    return np.asarray(boxes, np.float32).reshape(-1, 4), areas.astype(np.float64)


def encode(instances: np.ndarray) -> np.ndarray:
    """(n, H, W) instance maps -> (n, 3, H, W) float32 targets: heatmap, box width / W, box height / H."""
    n, h, w = instances.shape
    out = np.zeros((n, 3, h, w), np.float32)
    ys = np.arange(h, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(w, dtype=np.float32)[None, :] + 0.5
    for i in range(n):
        boxes, _ = boxes_from_instances(instances[i])
        for x0, y0, x1, y1 in boxes:
            bw, bh = x1 - x0, y1 - y0
            px = min(int((x0 + x1) / 2), w - 1)
            py = min(int((y0 + y1) / 2), h - 1)
            sx, sy = max(SIGMA_PER_SIDE * bw, 0.5), max(SIGMA_PER_SIDE * bh, 0.5)
            # Centred on the centre *pixel*, so the peak value there is exactly 1.
            g = np.exp(-0.5 * (((xs - px - 0.5) / sx) ** 2 + ((ys - py - 0.5) / sy) ** 2))
            np.maximum(out[i, 0], g, out=out[i, 0])
            out[i, 0, py, px] = 1.0
            out[i, 1, py, px] = bw / w
            out[i, 2, py, px] = bh / h
    return out


def loss(output: Tensor, target: Tensor, alpha: float = 2.0, beta: float = 4.0) -> Tensor:
    """Penalty-reduced focal loss on the heatmap (CornerNet/CenterNet) + L1 on sizes at centre pixels.

    Both terms are normalized by the number of objects in the batch, as in CenterNet.
    """
    logits, sizes = output[:, 0].float(), output[:, 1:3].float()
    heat, size_target = target[:, 0].float(), target[:, 1:3].float()
    positive = heat == 1.0
    num_pos = positive.sum().clamp(min=1)
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    p = log_p.exp()
    pos_term = ((1 - p) ** alpha * log_p)[positive].sum()
    neg_term = ((1 - heat) ** beta * p**alpha * log_not_p)[~positive].sum()
    focal = -(pos_term + neg_term) / num_pos
    mask = positive.unsqueeze(1).expand_as(sizes)
    l1 = (sizes - size_target).abs()[mask].sum() / num_pos
    return focal + l1


@torch.no_grad()
def decode(output: Tensor, max_detections: int, min_score: float = 0.01) -> list[tuple[Tensor, Tensor]]:
    """(B, 3, H, W) outputs -> per image (boxes (k, 4) xyxy in label pixels, scores (k,)), best first.

    Peaks are 3x3 local maxima of the sigmoid heatmap above `min_score`; the top `max_detections` are kept.
    """
    b, _, h, w = output.shape
    heat = output[:, 0].float().sigmoid()
    peaks = (heat == F.max_pool2d(heat[:, None], 3, stride=1, padding=1)[:, 0]) & (heat > min_score)
    results = []
    scale = torch.tensor([w, h], dtype=torch.float32, device=output.device)
    for i in range(b):
        scores = torch.where(peaks[i], heat[i], torch.zeros_like(heat[i])).flatten()
        k = min(max_detections, int(peaks[i].sum()))
        top, index = scores.topk(k)
        centres = torch.stack([index % w, index // w], dim=1).float() + 0.5
        sizes = output[i, 1:3].float().flatten(1)[:, index].T.clamp(min=0) * scale
        boxes = torch.cat([centres - sizes / 2, centres + sizes / 2], dim=1)
        boxes = torch.minimum(boxes.clamp(min=0), torch.cat([scale, scale]))
        results.append((boxes.cpu(), top.cpu()))
    return results
