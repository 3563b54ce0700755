"""The built-in adapters' factories: (in_channels, out_channels, options) -> a module mapping (B, h, w, C)
features to (B, K, H, W) outputs. Which adapters exist, and whether `maxa probe` trains them, is declared in
probe/adapter_specs.py (the k-NN baseline is built from a memory bank instead).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from maxa.core.errors import MaxaError
from maxa.core.registry import resolve
from maxa.probe.adapter_specs import ADAPTERS
from maxa.probe.knn import KnnProbe
from maxa.probe.maxa import LinearProbe, MaxaAdapter, MaxaConfig
from maxa.probe.split import SplitAdapter

AdapterFactory = Callable[[int, int, dict[str, Any]], nn.Module]


def build_maxa(in_channels: int, out_channels: int, options: dict[str, Any]) -> nn.Module:
    grid = options.get("query_grid", 28)
    config = MaxaConfig(
        query_grid=(grid, grid) if isinstance(grid, int) else tuple(grid),
        width=options.get("width", 16),
        heads=options.get("heads", 8),
        # Checkpoints written before the option existed lack the key: they used the default layout.
        upsampler_width=options.get("upsampler_width") or None,
    )
    return MaxaAdapter(in_channels, out_channels, config)


def build_linear(in_channels: int, out_channels: int, options: dict[str, Any]) -> nn.Module:
    return LinearProbe(in_channels, out_channels)


def build_knn(in_channels: int, out_channels: int, options: dict[str, Any]) -> nn.Module:
    """An empty bank of the recorded size (a checkpoint's state dict fills it)."""
    return KnnProbe(
        in_channels,
        out_channels,
        int(options.get("bank_size", 0)),
        int(options.get("knn_k", 10)),
        str(options.get("knn_link", "log")),
    )


def build_adapter(name: str, in_channels: int, out_channels: int, options: dict[str, Any]) -> nn.Module:
    """The adapter `name`; with `options["output_groups"]` (a task's outputs that each get a decoder, as
    the paper's code builds them) one trained adapter per group. Checkpoints written before the option
    existed lack it: one adapter for all outputs, as they were trained."""
    factory: AdapterFactory = resolve(ADAPTERS.get(name).implementation)
    groups = [int(g) for g in options.get("output_groups") or []]
    if len(groups) < 2 or not is_trainable(name):
        return factory(in_channels, out_channels, options)
    if sum(groups) != out_channels:
        raise MaxaError(f"output groups {groups} do not add up to the task's {out_channels} output channels")
    return SplitAdapter(groups, lambda channels: factory(in_channels, channels, options))


def is_trainable(name: str) -> bool:
    return ADAPTERS.get(name).trainable


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@torch.no_grad()
def set_output_bias(module: nn.Module, bias: list[float]) -> None:
    """Start the adapter's output at a constant (the task's best constant); other adapters are left as is."""
    value = torch.tensor(bias, dtype=torch.float32)
    if isinstance(module, SplitAdapter):
        for part, chunk in zip(module.parts, value.split(module.groups), strict=True):
            set_output_bias(part, chunk.tolist())
    elif isinstance(module, MaxaAdapter):
        # The output is head(upsampled) + skip(bilinear): the constant goes on the skip path only.
        module.skip.bias.copy_(value)
        module.head.bias.zero_()
    elif isinstance(module, LinearProbe):
        module.classifier.bias.copy_(value)
