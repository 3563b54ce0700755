"""A feature store and a target store joined on sample ids: validated once, then read in whole shards.

Stage two reads stores only in contiguous row ranges (whole shards), never sample by sample: Zarr reads
whole chunks at GB/s but tops out near 1k random samples/s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from maxa.core import store as st
from maxa.core.errors import MaxaError
from maxa.core.provenance import FeatureProvenance, TargetProvenance, dataset_reference
from maxa.core.store import layer_name


def resolve_layer(store: st.Store, layer: str | int) -> str:
    """Accept 'layer_11', '11' or -1 (the last stored layer)."""
    names = [n for n in store.array_names() if n.startswith("layer_")]
    if isinstance(layer, int) or str(layer).lstrip("-").isdigit():
        index = int(layer)
        if index < 0:
            ordered = sorted(names, key=lambda n: int(n.split("_", 1)[1]))
            if -index > len(ordered):
                raise MaxaError(
                    f"store {store.url} has {len(ordered)} layers; --layer {layer} is out of range"
                )
            return ordered[index]
        candidate = layer_name(index)
    else:
        candidate = str(layer)
    if candidate not in names:
        raise MaxaError(f"store {store.url} has no layer {layer!r}; stored layers: {', '.join(names)}")
    return candidate


def resolve_layers(store: st.Store, layers: str | int | Sequence[str | int]) -> list[str]:
    """Several layers ('2,5', ['-2', '-1']) -> their array names; they must share one feature grid."""
    items = [p.strip() for p in layers.split(",") if p.strip()] if isinstance(layers, str) else layers
    if isinstance(items, int):
        items = [items]
    names = [resolve_layer(store, item) for item in items]
    if len(set(names)) != len(names):
        raise MaxaError(f"--layer {layers!r} names the same layer twice ({', '.join(names)})")
    grids = {name: tuple(store.array(name).shape[1:3]) for name in names}
    if len(set(grids.values())) > 1:
        shapes = ", ".join(f"{n} {g[0]}x{g[1]}" for n, g in grids.items())
        raise MaxaError(
            f"layers concatenated with --layer must share one feature grid; {store.url} has {shapes}"
        )
    return names


@dataclass
class StorePair:
    """Feature rows and their target rows; every read goes through here."""

    features: st.Store
    targets: st.Store
    layers: list[str]
    target: str
    target_rows: np.ndarray  # target-store row of each feature-store row
    feature_shape: tuple[int, int, int]  # (h, w, C) with C summed over the concatenated layers
    label_size: tuple[int, int]
    _ranges: list[tuple[int, int]] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.target_rows)

    @cached_property
    def fprov(self) -> FeatureProvenance:
        """The feature store's provenance record."""
        return FeatureProvenance.of(self.features)

    @cached_property
    def tprov(self) -> TargetProvenance:
        """The target store's provenance record."""
        return TargetProvenance.of(self.targets)

    @property
    def num_classes(self) -> int:
        return self.tprov.num_classes

    def feature_bytes_per_item(self) -> int:
        h, w, c = self.feature_shape
        return h * w * c * 2

    def shard_ranges(self) -> list[tuple[int, int]]:
        """Row ranges of the feature store's shards (the unit of every read)."""
        if self._ranges is None:  # each store lookup reads Zarr metadata: compute once
            self._ranges = [self.features.shard_range(s) for s in range(self.features.num_shards)]
        return list(self._ranges)

    def with_layers(self, layers: str | int | Sequence[str | int]) -> StorePair:
        """The same joined stores reading other layers (nothing is reopened or joined again)."""
        names = resolve_layers(self.features, layers)
        shapes = [self.features.array(name).shape for name in names]
        grid = (int(shapes[0][1]), int(shapes[0][2]), int(sum(s[3] for s in shapes)))
        return replace(self, layers=names, feature_shape=grid)

    def read_features(self, start: int, stop: int) -> np.ndarray:
        """float16 (n, h, w, C) of rows start..stop, layers concatenated along channels (NaN/inf refused)."""
        return self.read_features_at(slice(start, stop))

    def read_features_at(self, rows: slice | np.ndarray) -> np.ndarray:
        """`read_features` of a slice or of given rows (read chunk by chunk, only those rows)."""
        blocks = [self.features.read_rows(name, rows) for name in self.layers]
        return blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=-1)

    @property
    def remote(self) -> bool:
        """Whether either store lives in an object store (reads then go together: `read_blocks`)."""
        return self.features.remote or self.targets.remote

    def read_blocks(self, ranges: Sequence[tuple[int, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(`read_features`, `read_targets`) of several row ranges: from object stores every shard of every
        layer and the targets in one round trip (st.read_rows_together), from local disk one by one."""
        reads: list[tuple[st.Store, str, slice | np.ndarray]] = []
        for start, stop in ranges:
            reads += [(self.features, name, slice(start, stop)) for name in self.layers]
            reads.append((self.targets, self.target, self.target_rows[start:stop]))
        blocks = st.read_rows_together(reads)
        step = len(self.layers) + 1
        out = []
        for at in range(0, len(blocks), step):
            layers, targets = blocks[at : at + step - 1], blocks[at + step - 1]
            out.append((layers[0] if len(layers) == 1 else np.concatenate(layers, axis=-1), targets))
        return out

    def read_targets(self, start: int, stop: int) -> np.ndarray:
        """Raw target maps (n, H, W) of feature rows start..stop."""
        return self.read_targets_at(slice(start, stop))

    def read_targets_at(self, rows: slice | np.ndarray) -> np.ndarray:
        """`read_targets` of a slice or of given feature rows."""
        return self.targets.read_rows(self.target, self.target_rows[rows])


def join_stores(features_url: str, targets_url: str) -> tuple[st.Store, st.Store, np.ndarray]:
    """The one join of a feature store with a target store: both complete, of the same dataset split
    (name, split, reader fingerprint and content), every feature id present in the targets.

    Returns both stores and the target row of each feature row.
    """
    fstore = st.open_store(features_url, "features")
    tstore = st.open_store(targets_url, "targets")
    fref = FeatureProvenance.of(fstore).dataset  # both records validated here, never a KeyError later
    tref = dataset_reference(tstore)
    diff = fref.differences(tref)
    if diff:
        raise MaxaError(
            f"feature store {features_url} and target store {targets_url} describe different data "
            f"({'; '.join(diff)})"
        )
    fids, tids = fstore.ids(), tstore.ids()
    position = {sid: i for i, sid in enumerate(tids)}
    missing = [sid for sid in fids if sid not in position]
    if missing:
        raise MaxaError(f"{len(missing)} feature ids are not in {targets_url} (first: {missing[0]!r})")
    return fstore, tstore, np.asarray([position[sid] for sid in fids], np.int64)


def open_pair(
    features_url: str, targets_url: str, layers: str | int | Sequence[str | int], target: str
) -> StorePair:
    """Join both stores (join_stores) and select the layers and the target stage two reads."""
    fstore, tstore, rows = join_stores(features_url, targets_url)
    if target not in tstore.array_names():
        raise MaxaError(
            f"target store {targets_url} has no {target!r} target (it has {tstore.array_names()})"
        )
    label = tuple(int(v) for v in tstore.array(target).shape[1:3])
    return StorePair(fstore, tstore, [], target, rows, (0, 0, 0), (label[0], label[1])).with_layers(layers)
