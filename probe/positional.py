"""Fixed 2-D positional helpers shared by the probes.

All grids are flattened row-major (y outer, x inner), matching ``features.reshape(B, h * w, C)`` for
channel-last ``(B, h, w, C)`` feature maps, so a code or coordinate at row ``i`` belongs to the token at
``(i // w, i % w)``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_grid(h: int, w: int) -> None:
    if h < 1 or w < 1:
        raise ValueError(f"grid must be at least 1x1, got {h}x{w}")


def sincos_2d(
    h: int,
    w: int,
    dim: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Fixed sin-cos codes of integer grid positions, shape ``(h * w, dim)``.

    The first half of the channels encodes the row (y), the second half the column (x); each half is
    ``[sin(p * f_k), cos(p * f_k)]`` over the usual transformer frequencies ``f_k = 10000^(-k / (dim/4))``.
    Codes are parameter-free so a probe cannot overfit its notion of position.
    """
    _check_grid(h, w)
    if dim < 4 or dim % 4:
        raise ValueError(f"sin-cos dim must be a positive multiple of 4, got {dim}")
    n_freq = dim // 4
    # float64 so large grids do not lose precision before the final cast.
    freqs = 1.0 / (10000.0 ** (torch.arange(n_freq, dtype=torch.float64) / n_freq))
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )

    def encode(pos: Tensor) -> Tensor:
        angles = pos.reshape(-1, 1) * freqs.reshape(1, -1)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    codes = torch.cat([encode(ys), encode(xs)], dim=1)
    return codes.to(device=device, dtype=dtype)


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
    _check_grid(h, w)
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
