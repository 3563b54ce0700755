"""A feature store of given arrays for a target store's split, without a backbone (docs/store.md, "Writing a
store by hand"): what benchmarks and experiments write when the features come from somewhere else."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from maxa.core import store as st


def write_feature_store(
    targets_url: str,
    out: str,
    arrays: Mapping[str, np.ndarray],
    provenance: Mapping[str, Any],
    shard_size: int,
) -> st.Store:
    """`arrays`: layer name -> (N, h, w, C) values in the target store's row order, stored as float16.

    The join fields (`dataset` from the target store) and `feature_shapes`/`layers`/`dtype` are filled in;
    `provenance` gives the rest (at least `model` and `backbone_params` for `maxa probe`).
    """
    targets = st.open_store(targets_url, "targets")
    tprov = targets.provenance
    shapes = {name: tuple(values.shape[1:]) for name, values in arrays.items()}
    full = {
        **provenance,
        "layers": list(arrays),
        "dataset": {
            "name": tprov["dataset"],
            "split": tprov["split"],
            "fingerprint": tprov["dataset_fingerprint"],
        },
        "feature_shapes": {name: list(shape) for name, shape in shapes.items()},
        "dtype": "float16",
    }
    specs = {
        name: st.ArraySpec(shape, "float16", ("image", "y", "x", "channel")) for name, shape in shapes.items()
    }
    store = st.create_or_resume(
        out, kind="features", provenance=full, ids=targets.ids(), arrays=specs, shard_size=shard_size
    )
    for shard in store.pending_shards():
        a, b = store.shard_range(shard)
        store.write_shard(shard, {name: np.asarray(v[a:b], np.float16) for name, v in arrays.items()})
    return store
