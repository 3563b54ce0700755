"""Adapter registry: name -> a module mapping (B, h, w, C) features to (B, K, H, W) outputs."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from torch import nn

from maxa.extract.errors import MaxaError
from maxa.probe.maxa import LinearProbe, MaxaAdapter, MaxaConfig

AdapterFactory = Callable[[int, int, dict[str, Any]], nn.Module]


def _maxa(in_channels: int, out_channels: int, options: dict[str, Any]) -> nn.Module:
    grid = options.get("query_grid", 28)
    config = MaxaConfig(
        query_grid=(grid, grid) if isinstance(grid, int) else tuple(grid),
        width=options.get("width", 16),
        heads=options.get("heads", 8),
    )
    return MaxaAdapter(in_channels, out_channels, config)


def _linear(in_channels: int, out_channels: int, options: dict[str, Any]) -> nn.Module:
    return LinearProbe(in_channels, out_channels)


ADAPTERS: dict[str, AdapterFactory] = {"maxa": _maxa, "linear": _linear}


def build_adapter(name: str, in_channels: int, out_channels: int, options: dict[str, Any]) -> nn.Module:
    if name not in ADAPTERS:
        close = difflib.get_close_matches(name, sorted(ADAPTERS), n=2)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise MaxaError(f"unknown adapter {name!r}{hint} (known: {', '.join(sorted(ADAPTERS))})")
    return ADAPTERS[name](in_channels, out_channels, options)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
