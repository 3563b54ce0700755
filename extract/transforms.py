"""Resizing images and dense targets to the fixed resolutions stores are written at."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (h, w, 3), bicubic (as timm's eval transforms)."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BICUBIC))


def resize_nearest(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Any (H, W) label map -> (h, w) by nearest neighbour: ids and invalid depths never mix."""
    h, w = size
    if label.shape == (h, w):
        return label
    rows = np.minimum(((np.arange(h) + 0.5) * label.shape[0] / h).astype(np.int64), label.shape[0] - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * label.shape[1] / w).astype(np.int64), label.shape[1] - 1)
    return label[rows[:, None], cols[None, :]]


BOUNDARY_WINDOW_PER_SIDE = 100
"""The boundary dilation window is side // 100 pixels per axis (about 1% of the image side)."""


def boundary_window(shape: tuple[int, int]) -> tuple[int, int]:
    """Dilation window (rows, cols) for a label map of `shape`: side // 100, at least 1 (no dilation)."""
    return max(1, shape[0] // BOUNDARY_WINDOW_PER_SIDE), max(1, shape[1] // BOUNDARY_WINDOW_PER_SIDE)


def instance_boundaries(instances: np.ndarray) -> np.ndarray:
    """uint8 instance-boundary map as the MAXA paper's code builds it (deap datasets/functions.py).

    A pixel is a boundary when its 3x3 (8-connected) neighbourhood holds more than one id, i.e. grey
    dilation != grey erosion with edges reflected (skimage `find_boundaries(mode="thick")`); the map is
    then dilated by a `boundary_window` box (skimage `dilation` semantics: an even window k covers
    offsets -(k-1)//2 .. k//2), so boundaries are ~1% of the image side wide at any label size.
    """
    import scipy.ndimage as ndi  # lazy: scipy.ndimage costs ~0.3 s to import

    ids = np.asarray(instances)
    if ids.ndim != 2:
        raise ValueError(f"instance map must be 2-D, got shape {ids.shape}")
    edge = ndi.maximum_filter(ids, size=3, mode="reflect") != ndi.minimum_filter(ids, size=3, mode="reflect")
    window = boundary_window(ids.shape)
    if window != (1, 1):
        # scipy centres an even window at offset -k//2 .. k//2 - 1; origin -1 moves it to skimage's.
        origin = [-1 if k % 2 == 0 else 0 for k in window]
        edge = ndi.maximum_filter(edge, size=window, mode="reflect", origin=origin)
    return edge.astype(np.uint8)


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W) normalized with the backbone's mean/std."""
    import torch  # lazy: dataset readers use this module, and `maxa params` checks them without torch

    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s
