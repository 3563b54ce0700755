"""Reading the stores for the local tests: shard-wise, row-selective, joined on sample ids.

The probes load a whole layer at once (maxa.probe.data); the local tests stream instead, because
a memory bank plus every query patch of every stored layer would not fit for real datasets.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from maxa.core import store as st
from maxa.core.errors import MaxaError
from maxa.core.provenance import FeatureProvenance, TargetProvenance
from maxa.probe.data import resolve_layer


def layer_index(name: str) -> int:
    return int(name.split("_", 1)[1])


def stored_layers(store: st.Store) -> list[str]:
    """The store's `layer_<i>` arrays, shallowest first."""
    return sorted((n for n in store.array_names() if n.startswith("layer_")), key=layer_index)


def select_layers(stores: Sequence[st.Store], requested: Sequence[int | str]) -> list[str]:
    """Requested layers (all of the first store's layers when none are), checked to exist in every store."""
    names = [resolve_layer(stores[0], r) for r in requested] if requested else stored_layers(stores[0])
    for store in stores[1:]:
        missing = [n for n in names if n not in store.array_names()]
        if missing:
            raise MaxaError(
                f"store {store.url} has no {', '.join(missing)}; stored: {', '.join(stored_layers(store))}"
            )
    for name in names:
        shapes = {s.url: tuple(s.array(name).shape[-1:]) for s in stores}
        if len(set(shapes.values())) > 1:
            raise MaxaError(f"{name} has different channel counts in {shapes}")
    return sorted(dict.fromkeys(names), key=layer_index)


def check_same_backbone(a: st.Store, b: st.Store) -> None:
    """Features from two stores are only comparable when the same network made them the same way."""
    diff = FeatureProvenance.of(a).backbone_differences(FeatureProvenance.of(b))
    if diff:
        raise MaxaError(
            f"feature stores {a.url} and {b.url} come from different backbones ({'; '.join(diff)})"
        )


def require_target(store: st.Store, name: str) -> None:
    if name not in store.array_names():
        raise MaxaError(f"target store {store.url} has no {name!r} target (it has {store.array_names()})")


def iter_shards(store: st.Store, name: str) -> Iterator[tuple[int, int, np.ndarray]]:
    """(start, stop, block) over the whole array, one shard per read."""
    store.array(name)  # validates the name before the first read
    for shard in range(store.num_shards):
        start, stop = store.shard_range(shard)
        if stop > start:
            yield start, stop, store.read_rows(name, slice(start, stop))


def provenance_summary(fstore: st.Store, tstore: st.Store | None = None) -> dict[str, Any]:
    """The top-level fields every metrics JSON carries (the leaderboard's row key)."""
    prov = FeatureProvenance.of(fstore)
    ref = TargetProvenance.of(tstore).dataset if tstore is not None else prov.dataset
    record_stores = {"features": {"url": fstore.url, "fingerprint": fstore.fingerprint}}
    if tstore is not None:
        record_stores["targets"] = {"url": tstore.url, "fingerprint": tstore.fingerprint}
    return {
        "backbone": prov.backbone,
        "model": prov.model,
        "weights": prov.weights,
        "adapter": "none",
        "dataset": ref.name,
        "split": ref.split,
        "stores": record_stores,
    }
