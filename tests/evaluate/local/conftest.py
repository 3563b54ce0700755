"""Tiny hand-made feature and target stores, written through the real store contract."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from maxa.extract import store as st

BACKBONE = {
    "model": "fake_vit",
    "name": "fake",
    "weights": "random-init",
    "weights_sha256": None,
    "input_size": [64, 64],
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "norm": False,
}

WriteStores = Callable[..., tuple[str, str | None]]


def write_stores(
    root: Path,
    name: str,
    features: dict[str, np.ndarray],
    targets: dict[str, np.ndarray] | None = None,
    *,
    ids: Sequence[str] | None = None,
    dataset: str = "fakeset",
    split: str = "val",
    num_classes: int = 3,
    shard_size: int = 4,
    backbone: dict[str, Any] | None = None,
    target_provenance: dict[str, Any] | None = None,
) -> tuple[str, str | None]:
    """A feature store (and, given targets, its target store) for one split; returns their paths."""
    n = next(iter(features.values())).shape[0]
    ids = list(ids) if ids is not None else [f"{dataset}-{split}-{i:04d}" for i in range(n)]
    fingerprint = f"{dataset}-{split}-{n}"
    targets_url = None
    if targets is not None:
        label_size = next(iter(targets.values())).shape[1:3]
        tprov = {
            "dataset": dataset,
            "split": split,
            "root": None,
            "dataset_config": {},
            "dataset_fingerprint": fingerprint,
            "num_classes": num_classes,
            "class_names": [f"class{i}" for i in range(num_classes)],
            "label_size": list(label_size),
            **(target_provenance or {}),
        }
        specs = {
            key: st.ArraySpec(value.shape[1:], str(value.dtype), ("image", "y", "x", "rgb")[: value.ndim])
            for key, value in targets.items()
        }
        tstore = st.create_or_resume(
            str(root / f"{name}-targets.zarr"),
            kind="targets",
            provenance=tprov,
            ids=ids,
            arrays=specs,
            shard_size=shard_size,
        )
        for shard in range(tstore.num_shards):
            start, stop = tstore.shard_range(shard)
            tstore.write_shard(shard, {k: v[start:stop] for k, v in targets.items()})
        targets_url = tstore.url
    fprov = dict(backbone or BACKBONE)
    fprov.update(
        {
            "dataset": {"name": dataset, "split": split, "fingerprint": fingerprint},
            "feature_shapes": {k: list(v.shape[1:]) for k, v in features.items()},
            "layers": sorted(features),
        }
    )
    fspecs = {
        k: st.ArraySpec(v.shape[1:], "float16", ("image", "y", "x", "channel")) for k, v in features.items()
    }
    fstore = st.create_or_resume(
        str(root / f"{name}-features.zarr"),
        kind="features",
        provenance=fprov,
        ids=ids,
        arrays=fspecs,
        shard_size=shard_size,
    )
    for shard in range(fstore.num_shards):
        start, stop = fstore.shard_range(shard)
        fstore.write_shard(shard, {k: v[start:stop].astype(np.float16) for k, v in features.items()})
    return fstore.url, targets_url


@pytest.fixture
def make_stores(tmp_path: Path) -> WriteStores:
    def make(
        name: str, features: dict[str, np.ndarray], targets: dict[str, np.ndarray] | None = None, **kw: Any
    ):
        return write_stores(tmp_path, name, features, targets, **kw)

    return make
