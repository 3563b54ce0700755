"""Tiny real-format stores for the probe tests: synthetic targets and "pixel" feature stores (tests.kit)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from maxa.extract.targets import PrepareConfig, prepare
from tests.kit.stores import LABEL, SHARD, write_feature_store

FeatureFactory = Callable[..., str]


@pytest.fixture(scope="session")
def probe_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("probe_stores")
    for split, count in (("train", 96), ("val", 32)):
        config = PrepareConfig(
            split=split,
            label_size=LABEL,
            shard_size=SHARD,
            options={"num_images": count, "image_size": 64, "num_classes": 3, "max_objects": 4},
        )
        prepare(config, str(root / f"targets_{split}.zarr"), progress=False)
        write_feature_store(
            str(root / f"targets_{split}.zarr"),
            str(root / f"features_{split}.zarr"),
            channels={"layer_0": 64, "layer_1": 32},
        )
    return root


@pytest.fixture(scope="session")
def stores(probe_root: Path) -> dict[str, str]:
    """URLs of the train/val target and feature stores (features: layer_0 64 ch, layer_1 32 ch, 8x8 grid)."""
    return {
        f"{kind}_{split}": str(probe_root / f"{kind}_{split}.zarr")
        for kind in ("targets", "features")
        for split in ("train", "val")
    }


@pytest.fixture
def feature_factory(stores: dict[str, str], tmp_path: Path) -> FeatureFactory:
    """Write another feature store of the training split (other grid, shard size, id order...)."""

    def make(name: str = "extra.zarr", **kwargs: object) -> str:
        return write_feature_store(stores["targets_train"], str(tmp_path / name), **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    """Tiny adapters train faster on one thread, and far faster on a CPU shared with other jobs."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
