"""Fixtures shared by the backbone tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from torch import nn

from maxa.extract import backbones
from maxa.extract.targets import PrepareConfig, prepare

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


def small_targets(tmp_path_factory: pytest.TempPathFactory, num_images: int, shard_size: int) -> str:
    """A synthetic training-split target store of 48-px images with 16-px labels (fast to extract)."""
    url = str(tmp_path_factory.mktemp("targets") / "train.zarr")
    options = {"num_images": num_images, "image_size": 48}
    prepare(
        PrepareConfig(split="train", label_size=16, shard_size=shard_size, options=options),
        url,
        progress=False,
    )
    return url
