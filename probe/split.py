"""One adapter per output group of a multi-output task, concatenated on channels.

The paper's code (deap models/dense_attentive_probing.py `SelfAttReadouts`) builds a full decoder
(cross-attention, MLP and upsampler) for each named output: its centres config has two, a 1-channel
heatmap and a 2-channel size map (experiments.py `centernet_cfg`). `SplitAdapter` is that layout for any
adapter: each group is an independent module that reads the same features.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


class SplitAdapter(nn.Module):
    """Adapters for consecutive channel groups; ``forward`` concatenates their outputs in group order."""

    def __init__(self, groups: list[int], build: Callable[[int], nn.Module]) -> None:
        super().__init__()
        if len(groups) < 2 or min(groups) < 1:
            raise ValueError(f"a split adapter needs two or more positive output groups, got {groups}")
        self.groups = [int(g) for g in groups]
        self.out_channels = sum(self.groups)
        self.parts = nn.ModuleList(build(g) for g in self.groups)

    @property
    def native_size(self) -> tuple[int, int] | None:
        """The parts' own output size (all parts are built alike)."""
        size = getattr(self.parts[0], "native_size", None)
        return None if size is None else (int(size[0]), int(size[1]))

    def forward(self, features: Tensor, output_size: tuple[int, int] | None = None) -> Tensor:
        return torch.cat([part(features, output_size=output_size) for part in self.parts], dim=1)
