"""Tiny real-format stores for the probe tests: synthetic targets and "pixel" feature stores.

The feature stores are written through the store contract exactly like `maxa extract` writes them, but
each patch's feature is a fixed random projection of the patch's own pixels (from the target store's RGB
previews), so every task is learnable from them in seconds and no backbone has to run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from maxa.extract import store as st
from maxa.extract.targets import PrepareConfig, prepare

LABEL = 32
GRID = 8
SHARD = 16

FeatureFactory = Callable[..., str]


def write_feature_store(
    targets_url: str,
    out: str,
    *,
    channels: dict[str, int] | None = None,
    grid: int = GRID,
    shard_size: int = SHARD,
    permute_ids: bool = False,
    seed: int = 0,
    backbone_params: int = 5_000_000,
) -> str:
    """A feature store of `targets_url`'s split: layer name -> channels, each a projection of patch pixels."""
    targets = st.open_store(targets_url, "targets")
    tprov = targets.provenance
    images = np.asarray(targets.array("image")[:]).astype(np.float32) / 255.0  # (N, L, L, 3)
    ids = targets.ids()
    order = np.random.default_rng(seed + 99).permutation(len(ids)) if permute_ids else np.arange(len(ids))
    n, size = images.shape[0], images.shape[1]
    p = size // grid
    patches = images.reshape(n, grid, p, grid, p, 3).transpose(0, 1, 3, 2, 4, 5).reshape(n, grid, grid, -1)
    patches = patches - patches.mean(axis=(0, 1, 2), keepdims=True)
    layers = channels or {"layer_0": 64}
    arrays = {}
    for index, (name, c) in enumerate(layers.items()):
        # The projection depends on the seed and layer only, so every split of one "backbone" shares it.
        rng = np.random.default_rng([seed, index])
        projection = rng.standard_normal((patches.shape[-1], c)).astype(np.float32) / np.sqrt(
            patches.shape[-1]
        )
        noise = 0.05 * np.random.default_rng([seed, index, n]).standard_normal((n, grid, grid, c))
        arrays[name] = ((patches @ projection) * 3.0 + noise).astype(np.float16)[order]
    provenance = {
        "model": "pixels",
        "name": "pixels",
        "weights": "random-init",
        "input_size": [size, size],
        "patch_size": [p, p],
        "layers": list(layers),
        "backbone_params": backbone_params,
        "dataset": {
            "name": tprov["dataset"],
            "split": tprov["split"],
            "fingerprint": tprov["dataset_fingerprint"],
        },
        "feature_shapes": {name: [grid, grid, c] for name, c in layers.items()},
        "dtype": "float16",
        "seed": seed,
    }
    specs = {
        name: st.ArraySpec((grid, grid, c), "float16", ("image", "y", "x", "channel"))
        for name, c in layers.items()
    }
    store = st.create_or_resume(
        out,
        kind="features",
        provenance=provenance,
        ids=[ids[i] for i in order],
        arrays=specs,
        shard_size=shard_size,
    )
    for shard in range(store.num_shards):
        a, b = store.shard_range(shard)
        store.write_shard(shard, {name: block[a:b] for name, block in arrays.items()})
    return out


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
