"""Fixed sin-cos codes of 2-D grid positions: what the MAXA adapter adds to its queries and keys, and
what the position-only control store carries instead of a backbone's features (extract/controls.py)."""

from __future__ import annotations

import torch
from torch import Tensor


def check_grid(h: int, w: int) -> None:
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
    check_grid(h, w)
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
