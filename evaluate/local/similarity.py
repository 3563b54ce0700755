"""Cosine nearest neighbours in bounded memory, and the paper's removal of high-variance dimensions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from maxa.extract.errors import MaxaError


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


def normalize(x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """float32 unit vectors along the last axis, restricted to the `keep` channels."""
    x = x.float()
    if keep is not None:
        x = x.index_select(-1, keep.to(x.device))
    return F.normalize(x, dim=-1)


def topk_cosine(
    queries: torch.Tensor, bank: torch.Tensor, k: int, *, bank_chunk: int = 65536
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k similarities and bank indices per query row (unit vectors in, best first).

    The similarity matrix is only ever held for `bank_chunk` bank rows at a time; the running
    top-k is merged chunk by chunk, so memory is O(queries x (bank_chunk + k)).
    """
    k = min(k, bank.shape[0])
    best_sim = torch.full((queries.shape[0], 0), float("-inf"), device=queries.device)
    best_idx = torch.zeros((queries.shape[0], 0), dtype=torch.int64, device=queries.device)
    for start in range(0, bank.shape[0], bank_chunk):
        sims = queries @ bank[start : start + bank_chunk].T
        sim, idx = torch.topk(sims, min(k, sims.shape[1]), dim=1)
        merged_sim = torch.cat([best_sim, sim], dim=1)
        merged_idx = torch.cat([best_idx, idx + start], dim=1)
        best_sim, order = torch.topk(merged_sim, min(k, merged_sim.shape[1]), dim=1)
        best_idx = torch.gather(merged_idx, 1, order)
    return best_sim, best_idx
