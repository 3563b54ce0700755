"""Control stores: the shape of a backbone's feature store, without the backbone's knowledge.

A probe's number means something only beside what the same probe scores from features that know nothing
about the image. `--weights control:noise` writes iid standard-normal features (seeded per image row, so
a resumed or distributed extraction writes the same values); `--weights control:position` writes the same
features for every image: fixed sin-cos codes of each patch's grid position (core/positional.py), zero
padded to the channel count; prefix tokens carry zeros (they have no position). Both keep the named
model's grid, channels, layers and input size, so probe, evaluate and report treat them as any backbone
and the leaderboard shows them as rows (evaluate/controls.py adds each backbone's margin over them).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from maxa.core.errors import MaxaError
from maxa.core.positional import sincos_2d
from maxa.extract.config import CONTROL_NOISE, CONTROL_POSITION

NOISE = CONTROL_NOISE
POSITION = CONTROL_POSITION
KINDS = (NOISE, POSITION)
SEED = 0
"""Seed of the noise control (with the image row: one stream per image)."""


def is_control(weights: str) -> bool:
    return weights in KINDS


def position_codes(shape: tuple[int, ...]) -> np.ndarray:
    """One image's position-only features: (h, w, C) sin-cos codes of the grid, or (T, C) zeros."""
    if len(shape) != 3:
        return np.zeros(shape, np.float32)
    h, w, channels = shape
    dim = channels // 4 * 4
    if dim == 0:
        raise MaxaError(f"--weights {POSITION} needs at least 4 feature channels; this layer has {channels}")
    codes = np.zeros((h * w, channels), np.float32)
    codes[:, :dim] = sincos_2d(h, w, dim).numpy()
    return codes.reshape(h, w, channels)


def noise(shape: tuple[int, ...], row: int, name: str, seed: int = SEED) -> np.ndarray:
    """iid N(0, 1) features of one image and array, a function of (seed, row, array name) alone."""
    stream = [seed, row, *name.encode()]
    return np.random.default_rng(stream).standard_normal(shape, dtype=np.float32)


class ControlForward:
    """Stands in for the backbone's batched forward pass: the control arrays of a batch of image rows."""

    def __init__(self, kind: str, shapes: dict[str, tuple[int, ...]], device: torch.device) -> None:
        if kind not in KINDS:
            raise MaxaError(f"unknown control {kind!r} (expected one of {', '.join(KINDS)})")
        self.kind, self.shapes, self.device = kind, shapes, device
        self.fixed = {name: position_codes(s) for name, s in shapes.items()} if kind == POSITION else {}

    def __call__(self, rows: np.ndarray) -> Iterator[tuple[int, int, dict[str, torch.Tensor]]]:
        """Yields (start, stop, arrays) like BatchedForward: the whole batch at once."""
        out = {}
        for name, shape in self.shapes.items():
            if self.kind == POSITION:
                batch = np.broadcast_to(self.fixed[name], (len(rows), *shape))
            else:
                batch = np.stack([noise(shape, int(row), name) for row in rows])
            out[name] = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        yield 0, len(rows), out
