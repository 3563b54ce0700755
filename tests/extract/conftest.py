"""Fixtures shared by the backbone tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from torch import nn

from maxa.extract import backbones

SizeOverrides = Mapping[str, Mapping[str, Any]]


@pytest.fixture
def small_timm(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[SizeOverrides], None]]:
    """Call it with {timm architecture: size overrides}: those architectures are then built smaller
    (fewer blocks / narrower) wherever maxa creates a timm model (describe's cache is kept clean)."""
    create = backbones._timm_create

    def use(overrides: SizeOverrides) -> None:
        def small(name: str, **kwargs: Any) -> nn.Module:
            return create(name, **{**overrides.get(name.split(".", 1)[0], {}), **kwargs})

        monkeypatch.setattr(backbones, "_timm_create", small)
        backbones._describe_architecture.cache_clear()

    yield use
    backbones._describe_architecture.cache_clear()
