"""Fixed 2-D positional helpers shared by the probes.

All grids are flattened row-major (y outer, x inner), matching ``features.reshape(B, h * w, C)`` for
channel-last ``(B, h, w, C)`` feature maps, so a code or coordinate at row ``i`` belongs to the token at
``(i // w, i % w)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from maxa.core.positional import check_grid, sincos_2d

__all__ = ["normalized_grid", "sincos_2d", "squared_distances"]


def normalized_grid(
    h: int,
    w: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Token centres as ``(y, x)`` in ``[0, 1]`` image coordinates, shape ``(h * w, 2)``.

    ``linspace(0, 1, n)`` per axis puts the first and last token of any grid on the image border, so grids
    of different sizes (queries vs. backbone tokens) live in one shared coordinate frame.
    A 1-wide axis sits at 0.
    """
    check_grid(h, w)
    ys, xs = torch.meshgrid(
        torch.linspace(0.0, 1.0, h, dtype=torch.float64),
        torch.linspace(0.0, 1.0, w, dtype=torch.float64),
        indexing="ij",
    )
    return torch.stack([ys.reshape(-1), xs.reshape(-1)], dim=1).to(device=device, dtype=dtype)


def squared_distances(
    q_hw: tuple[int, int],
    k_hw: tuple[int, int],
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Squared Euclidean distances between two normalized grids, shape ``(Nq, Nk)``.

    Computed from explicit differences (not ``cdist``) so identical positions give exactly zero.
    """
    q = normalized_grid(*q_hw, dtype=torch.float64)
    k = normalized_grid(*k_hw, dtype=torch.float64)
    d2 = (q[:, None, :] - k[None, :, :]).pow(2).sum(dim=-1)
    return d2.to(device=device, dtype=dtype)
