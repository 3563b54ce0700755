"""k-NN label transfer: a parameter-free baseline that reads labels off the nearest training patches.

The memory bank (maxa.probe.bank.PatchBank, the one the local k-NN test uses too) holds (at most
`bank_size`, drawn uniformly with the seed) training patch features and each patch's label: the label
map pooled to the feature grid (the majority class for semantic, by the one rule of probe/patch_labels.py
that the local k-NN test uses too; the mean valid depth for depth). A test patch averages the labels of its k
nearest bank patches by cosine similarity (class votes, or depths); the averaged maps are resized
bilinearly to the label resolution and turned into the task's output space (log vote fractions / log
metres), so evaluation treats the result like any adapter's output and the argmax of the votes is the
majority label. probe/bank_fit.py is how `maxa probe` fills it (its strategy behind the adapter interface).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from maxa.probe.bank import PatchBank, UniformPatches, collect
from maxa.probe.data import StorePair
from maxa.probe.tasks import Task

_LOG_FLOOR = 1e-4


class KnnProbe(PatchBank):
    """A fixed memory bank; `forward` maps (B, h, w, C) features to (B, V, H, W) outputs, no training.

    The bank (maxa.probe.bank) keeps float16 unit keys and float values; its state dict is `keys` and
    `values`, so a checkpoint holds the whole bank.
    """

    def __init__(
        self, in_channels: int, out_channels: int, bank_size: int, k: int = 10, link: str = "log"
    ) -> None:
        if link not in ("log", "identity"):
            raise ValueError(f"link must be 'log' or 'identity', got {link!r}")
        super().__init__(
            torch.zeros(bank_size, in_channels, dtype=torch.float16), torch.zeros(bank_size, out_channels)
        )
        self.in_channels, self.out_channels, self.k, self.link = in_channels, out_channels, k, link

    def extra_repr(self) -> str:
        return f"bank={self.keys.shape[0]}, in_channels={self.in_channels}, k={self.k}, link={self.link}"

    def set_bank(self, keys: Tensor, values: Tensor) -> None:
        """Store L2-normalized keys (fp16) and their values."""
        self.fill(keys, values.float())

    def neighbour_mean(self, queries: Tensor) -> Tensor:
        """(Q, C) features -> (Q, V) mean value of each query's k most cosine-similar bank patches."""
        return self.query(queries, [self.k])[self.k]

    @torch.no_grad()
    def forward(self, features: Tensor, output_size: tuple[int, int] | None = None) -> Tensor:
        if features.ndim != 4 or features.shape[-1] != self.in_channels:
            raise ValueError(f"expected (B, h, w, {self.in_channels}) features, got {tuple(features.shape)}")
        if self.keys.shape[0] == 0:
            raise ValueError("the k-NN memory bank is empty")
        b, h, w, c = features.shape
        mean = self.neighbour_mean(features.reshape(-1, c))
        maps = mean.reshape(b, h, w, -1).permute(0, 3, 1, 2)
        if output_size is not None and tuple(output_size) != (h, w):
            maps = F.interpolate(maps, size=tuple(output_size), mode="bilinear", align_corners=False)
        return maps.clamp(min=_LOG_FLOOR).log() if self.link == "log" else maps


def build_bank(
    pair: StorePair, task: Task, *, bank_size: int, k: int, seed: int, progress: bool = True
) -> KnnProbe:
    """Draw up to `bank_size` training patches uniformly (one pass over the store) into a KnnProbe."""
    num_classes = pair.num_classes
    keys, values = collect(
        pair,
        UniformPatches(bank_size, seed),
        lambda raw, grid: task.patch_values(raw, grid, num_classes),
        progress=progress,
    )
    if not len(keys):
        values = torch.zeros(0, task.out_channels(num_classes))
    probe = KnnProbe(keys.shape[1], values.shape[1], keys.shape[0], k, task.knn_link or "identity")
    probe.set_bank(keys, values)
    return probe
