"""DAVIS boundary F-measure: time per object-frame of maxa's f_measure against the official algorithm.

davis2017-evaluation (davis2017/metrics.py, f_measure, lines 57-119) takes both boundary maps, dilates
each by a disk of ceil(0.008 x diagonal) pixels with cv2.dilate and counts the matches. Without OpenCV
here, the official algorithm is run two ways, on the same masks and in the same run:
  - `official/ndimage`: scipy.ndimage.binary_dilation (the reference's own commented-out line 86),
  - `official/shift-or`: the dilation as an OR of the boundary map shifted by every disk offset
    (vectorized numpy, a strong stand-in for cv2.dilate),
plus `maxa/conv2d`: maxa's previous dilation (a float conv2d with the disk, thresholded).
Every implementation's F must equal the official one on every object-frame (checked, not assumed).

Masks are DAVIS-sized (480x854, radius 8) objects: smooth blobs of many sizes, predictions shifted,
grown or shrunk, some fragmented. Numbers are one run on a shared machine: compare rows, not runs.

    python benchmarks/jf.py                 # ~1 min on 2 cores
    python benchmarks/jf.py --pairs 50 --size 240 427
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from maxa.evaluate.local.jf import boundary_map, boundary_radius, f_measure

Masks = tuple[np.ndarray, np.ndarray]


def disk(radius: int) -> np.ndarray:
    axis = np.arange(-radius, radius + 1)
    return axis[:, None] ** 2 + axis[None, :] ** 2 <= radius**2


def dilate_ndimage(edge: np.ndarray, radius: int) -> np.ndarray:
    return ndimage.binary_dilation(edge, disk(radius))


def dilate_shift_or(edge: np.ndarray, radius: int) -> np.ndarray:
    h, w = edge.shape
    out = np.zeros_like(edge)
    for dy, dx in np.argwhere(disk(radius)) - radius:
        out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] |= edge[
            max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
        ]
    return out


def dilate_conv2d(edge: np.ndarray, radius: int) -> np.ndarray:
    kernel = torch.from_numpy(disk(radius).astype(np.float32))[None, None]
    x = torch.from_numpy(edge.astype(np.float32))[None, None]
    return (F.conv2d(x, kernel, padding=radius)[0, 0] > 0.5).numpy()


def official_f(dilate: Callable[[np.ndarray, int], np.ndarray]) -> Callable[[np.ndarray, np.ndarray], float]:
    """The reference's f_measure with a given dilation (no void pixels, bound_th 0.008)."""

    def measure(gt: np.ndarray, pred: np.ndarray) -> float:
        radius = boundary_radius(gt.shape)
        fg, gb = boundary_map(pred), boundary_map(gt)
        n_fg, n_gt = int(fg.sum()), int(gb.sum())
        if n_fg == 0 or n_gt == 0:
            precision, recall = (1.0 if n_fg == 0 else 0.0), (1.0 if n_gt == 0 else 0.0)
        else:
            precision = int((fg & dilate(gb, radius)).sum()) / n_fg
            recall = int((gb & dilate(fg, radius)).sum()) / n_gt
        return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)

    return measure


def make_pairs(count: int, shape: tuple[int, int], seed: int) -> list[Masks]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    pairs = []
    for i in range(count):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        ry, rx = rng.uniform(10, shape[0] / 2.5), rng.uniform(10, shape[1] / 2.5)
        angle = np.arctan2(yy - cy, xx - cx)
        wobble = 1 + 0.15 * np.sin(rng.integers(2, 7) * angle + rng.uniform(0, 6.3))
        gt = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= wobble**2
        dy, dx, grow = rng.normal(0, 6), rng.normal(0, 6), rng.uniform(0.85, 1.15)
        pred = ((yy - cy - dy) / (ry * grow)) ** 2 + ((xx - cx - dx) / (rx * grow)) ** 2 <= wobble**2
        if i % 5 == 4:
            pred &= rng.random(shape) > 0.02  # pepper holes: long ragged boundaries
        pairs.append((gt, pred))
    return pairs


def time_per_pair(
    measure: Callable[[np.ndarray, np.ndarray], float], pairs: list[Masks]
) -> tuple[float, list[float]]:
    values, times = [], []
    for gt, pred in pairs:
        start = time.perf_counter()
        values.append(measure(gt, pred))
        times.append(time.perf_counter() - start)
    return statistics.median(times), values


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=30, help="object-frames (mask pairs) to time")
    parser.add_argument("--size", type=int, nargs=2, default=(480, 854), metavar=("H", "W"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    shape = (args.size[0], args.size[1])
    pairs = make_pairs(args.pairs, shape, args.seed)
    print(f"{len(pairs)} object-frames at {shape[0]}x{shape[1]}, dilation radius {boundary_radius(shape)} px")
    runs = {
        "official/ndimage": official_f(dilate_ndimage),
        "official/shift-or": official_f(dilate_shift_or),
        "maxa/conv2d (before)": official_f(dilate_conv2d),
        "maxa f_measure (now)": f_measure,
    }
    results = {name: time_per_pair(measure, pairs) for name, measure in runs.items()}
    reference = results["official/ndimage"][1]
    fastest_official = min(results["official/ndimage"][0], results["official/shift-or"][0])
    print(f"{'implementation':<22} {'ms/object-frame':>16} {'x fastest official':>19}  equal to official")
    for name, (seconds, values) in results.items():
        equal = all(
            math.isclose(a, b, rel_tol=0, abs_tol=1e-12) for a, b in zip(values, reference, strict=True)
        )
        print(f"{name:<22} {seconds * 1e3:>16.2f} {seconds / fastest_official:>19.2f}  {equal}")
        if not equal:
            raise SystemExit(f"{name} disagrees with the official definition")


if __name__ == "__main__":
    main()
