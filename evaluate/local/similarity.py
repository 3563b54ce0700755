"""The paper's removal of high-variance dimensions before cosine comparisons (the neighbour search and
unit vectors live with the one patch bank, probe/bank.py)."""

from __future__ import annotations

import torch

from maxa.core.errors import MaxaError


def kept_dimensions(variance: torch.Tensor, drop: int) -> torch.Tensor:
    """Indices of the channels left after dropping the `drop` highest-variance ones (in channel order).

    MAE-style features carry a few channels of much larger variance than the rest; they dominate
    every distance and hide the semantic ones, and dropping them restores k-NN (Vanyan et al., 2024).
    """
    channels = variance.numel()
    if not 0 <= drop < channels:
        raise MaxaError(
            f"--drop-dims must be between 0 and {channels - 1} (features have {channels}), got {drop}"
        )
    order = torch.argsort(variance.double(), descending=True)
    return torch.sort(order[drop:]).values


class ChannelMoments:
    """Per-channel mean and variance accumulated over batches of vectors (float64, one pass)."""

    def __init__(self, channels: int) -> None:
        self.count = 0
        self.total = torch.zeros(channels, dtype=torch.float64)
        self.squares = torch.zeros(channels, dtype=torch.float64)

    def update(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).to("cpu", torch.float64)
        self.count += x.shape[0]
        self.total += x.sum(0)
        self.squares += (x * x).sum(0)

    def variance(self) -> torch.Tensor:
        if not self.count:
            raise MaxaError("no feature vectors to measure channel variance on")
        mean = self.total / self.count
        return (self.squares / self.count - mean * mean).clamp(min=0)
