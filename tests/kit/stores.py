"""The one set of store writers tests share: every store is written through the real store contract.

`write_feature_store` makes "pixel" features of a target store's split (each patch's feature is a fixed
random projection of its own pixels, so every task is learnable in seconds and no backbone runs);
`write_stores` writes hand-made feature (and target) arrays; `fill` and `copy_store` are the shard loops;
`empty_store` starts a store to write by hand; `tiny_extract` is the smallest real extraction's config.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import fsspec
import numpy as np

from maxa.core import store as st
from maxa.extract.config import ExtractConfig

LABEL = 32
GRID = 8
SHARD = 16


def tiny_extract(shard_size: int = 4) -> ExtractConfig:
    """The smallest real extraction: a random-init ViT-Ti/16 at 32 px, its last layer, one batch a shard."""
    return ExtractConfig(
        model="vit_tiny_patch16_224",
        weights="random-init",
        input_size=32,
        layers=[-1],
        batch_size=shard_size,
        shard_size=shard_size,
    )


def fill(store: st.Store, arrays: Mapping[str, np.ndarray]) -> st.Store:
    """Write every shard of `store` from whole per-image arrays (first axis: image)."""
    for shard in range(store.num_shards):
        start, stop = store.shard_range(shard)
        store.write_shard(shard, {name: block[start:stop] for name, block in arrays.items()})
    return store


def empty_store(
    url: str,
    specs: Mapping[str, st.ArraySpec],
    n: int,
    shard_size: int,
    provenance: Mapping[str, Any] | None = None,
) -> st.Store:
    """A new, writable feature store of `n` images (ids i0, i1, ...) and nothing written yet: the start of
    the tests of writing, reading and checking stores."""
    return st.create_or_resume(
        url,
        kind="features",
        provenance=dict(provenance or {"test": "store"}),
        ids=[f"i{k}" for k in range(n)],
        arrays=specs,
        shard_size=shard_size,
    )


def write_store(url: str, arrays: Mapping[str, np.ndarray], **create: Any) -> st.Store:
    """A complete store of whole per-image arrays: `create` are create_or_resume's keywords (kind,
    provenance, ids, arrays' specs as `specs`, shard_size)."""
    create["arrays"] = create.pop("specs")
    return fill(st.create_or_resume(url, **create), arrays)


def copy_store(
    source: str,
    out: str,
    *,
    edit: Callable[[dict[str, np.ndarray]], None] | None = None,
    **changes: Any,
) -> str:
    """A copy of a (tiny) store under changed provenance keys; `edit` may change the arrays in place."""
    src = st.open_store(source)
    names = src.array_names()
    arrays = {name: src.read(name) for name in names}
    if edit is not None:
        edit(arrays)
    specs = {name: src.spec(name) for name in names}
    provenance = {**src.provenance, **changes}
    write_store(out, arrays, kind=src.kind, provenance=provenance, ids=src.ids(), specs=specs,
                shard_size=src.shard_size)  # fmt: skip
    return out


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
    ordered = [ids[i] for i in order]
    write_store(out, arrays, kind="features", provenance=provenance, ids=ordered, specs=specs,
                shard_size=shard_size)  # fmt: skip
    return out


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
        url = str(root / f"{name}-targets.zarr")
        targets_url = write_store(url, targets, kind="targets", provenance=tprov, ids=ids, specs=specs,
                                  shard_size=shard_size).url  # fmt: skip
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
    halves = {k: v.astype(np.float16) for k, v in features.items()}
    url = str(root / f"{name}-features.zarr")
    fstore = write_store(url, halves, kind="features", provenance=fprov, ids=ids, specs=fspecs,
                         shard_size=shard_size)  # fmt: skip
    return fstore.url, targets_url


def _local(tmp_path: Path, monkeypatch: Any) -> str:
    return str(tmp_path / "store.zarr")


def _memory(tmp_path: Path, monkeypatch: Any) -> str:
    return f"memory://{tmp_path.name}-{uuid.uuid4().hex}/store.zarr"


def _fsspec(tmp_path: Path, monkeypatch: Any) -> str:
    # Object stores need no folders; fsspec's local file system makes them, as any remote would behave.
    monkeypatch.setitem(fsspec.config.conf, "local", {"auto_mkdir": True})
    return f"local://{tmp_path / 'store.zarr'}"


BACKENDS: dict[str, Callable[[Path, Any], str]] = {"local": _local, "memory": _memory, "fsspec": _fsspec}
"""Where a store test's store lives: a folder (zarr's LocalStore), fsspec's in-memory file system, and
local files through zarr's FsspecStore (the path every remote URL takes)."""
