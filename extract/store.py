"""The store contract: every read and write of a maxa Zarr store goes through this module.

A store is a Zarr v3 group. Its attributes hold one JSON object under the key `maxa`:
`format_version`, `kind` ("features" or "targets"), `provenance` (what produced it) and
`fingerprint` (a hash of the provenance fields that determine the bytes). Arrays are written one
shard at a time; a `done` array (one flag per shard, its own chunk each, so concurrent writers of
different shards never touch the same object) records which shards are complete. A store is
complete only when every flag is set; readers refuse incomplete stores.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
import zarr.errors
from zarr.codecs import BloscCodec, BloscShuffle

from maxa.extract.errors import MaxaError

FORMAT_VERSION = 1
ATTR_KEY = "maxa"
IDS = "ids"
DONE = "done"
VOLATILE_PROVENANCE = frozenset({"created", "maxa_version"})
"""Provenance fields that describe the run, not the bytes: left out of the fingerprint."""


@dataclass(frozen=True)
class ArraySpec:
    """One per-image array: the shape of a single image's entry, its dtype and dimension names."""

    item_shape: tuple[int, ...]
    dtype: str
    dims: tuple[str, ...]
    compress: bool = True


def fingerprint(provenance: Mapping[str, Any]) -> str:
    """Hash of the provenance fields that determine the stored bytes (run-specific fields excluded)."""
    stable = {k: v for k, v in provenance.items() if k not in VOLATILE_PROVENANCE}
    return hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()[:16]


def provenance_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Human-readable list of the fingerprinted fields that differ between two provenances."""
    keys = sorted((set(old) | set(new)) - VOLATILE_PROVENANCE)
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _compressors(spec: ArraySpec) -> Any:
    if not spec.compress:
        return None
    # lz4 + byte shuffle: cheap to decode (full-store reads stay near raw disk speed) and the
    # shuffle lets float16 activations compress at all.
    typesize = np.dtype(spec.dtype).itemsize
    return [BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.shuffle, typesize=typesize)]


class Store:
    """An open maxa store (features or targets)."""

    def __init__(self, group: zarr.Group, url: str) -> None:
        self.group = group
        self.url = url
        meta = dict(group.attrs).get(ATTR_KEY)
        if not isinstance(meta, dict):
            raise MaxaError(f"{url} is not a maxa store (no '{ATTR_KEY}' attributes)")
        version = int(meta.get("format_version", -1))
        if version > FORMAT_VERSION:
            raise MaxaError(
                f"{url} was written by a newer maxa (store format {version}, this maxa reads up to "
                f"{FORMAT_VERSION}); upgrade maxa"
            )
        self.meta: dict[str, Any] = meta

    def _node(self, name: str) -> zarr.Array:
        node = self.group[name]
        if not isinstance(node, zarr.Array):
            raise MaxaError(f"store {self.url}: {name!r} is not an array")
        return node

    # --- metadata -------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return str(self.meta["kind"])

    @property
    def provenance(self) -> dict[str, Any]:
        return dict(self.meta["provenance"])

    @property
    def fingerprint(self) -> str:
        return str(self.meta["fingerprint"])

    @property
    def shard_size(self) -> int:
        return int(self.meta["shard_size"])

    @property
    def num_items(self) -> int:
        return int(self._node(IDS).shape[0])

    @property
    def num_shards(self) -> int:
        return int(self._node(DONE).shape[0])

    def __len__(self) -> int:
        return self.num_items

    def ids(self) -> list[str]:
        return [str(x) for x in np.asarray(self._node(IDS)[:])]

    def array_names(self) -> list[str]:
        return sorted(name for name in self.group.array_keys() if name not in (IDS, DONE))

    def array(self, name: str) -> zarr.Array:
        if name not in self.array_names():
            raise MaxaError(
                f"store {self.url} has no array {name!r}; it has: {', '.join(self.array_names())}"
            )
        return self._node(name)

    # --- completeness ---------------------------------------------------------------------------
    def done_shards(self) -> np.ndarray:
        return np.asarray(self._node(DONE)[:], dtype=bool)

    def pending_shards(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(~self.done_shards())]

    @property
    def complete(self) -> bool:
        return bool(self.done_shards().all())

    def shard_range(self, shard: int) -> tuple[int, int]:
        start = shard * self.shard_size
        return start, min(start + self.shard_size, self.num_items)

    def require_complete(self) -> None:
        pending = self.pending_shards()
        if pending:
            raise MaxaError(
                f"store {self.url} is incomplete: {len(pending)} of {self.num_shards} shards not written "
                f"(first missing: {pending[0]}); re-run the command that writes it to resume"
            )

    # --- writing --------------------------------------------------------------------------------
    def write_shard(self, shard: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Write one whole shard of every array, then mark it done (the mark comes last)."""
        start, stop = self.shard_range(shard)
        for name, block in arrays.items():
            if block.shape[0] != stop - start:
                raise ValueError(
                    f"shard {shard} of {name!r}: {block.shape[0]} items, expected {stop - start}"
                )
            self._node(name)[start:stop] = block
        self._node(DONE)[shard] = True

    def set_attr(self, key: str, value: Any) -> None:
        """Store an extra JSON attribute next to the provenance (e.g. statistics, skipped ids)."""
        meta = dict(self.meta)
        meta.setdefault("extra", {})[key] = value
        self.group.attrs[ATTR_KEY] = meta
        self.meta = meta


def _open_group(url: str, mode: str, storage_options: Mapping[str, Any] | None = None) -> zarr.Group | None:
    try:
        return zarr.open_group(url, mode=mode, storage_options=dict(storage_options or {}) or None)  # type: ignore[arg-type]
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
        return None


def open_store(
    url: str,
    kind: str | None = None,
    *,
    require_complete: bool = True,
    storage_options: Mapping[str, Any] | None = None,
) -> Store:
    """Open an existing store read-only (any fsspec URL or local path)."""
    group = _open_group(url, "r", storage_options)
    if group is None:
        raise MaxaError(f"no maxa store at {url}")
    store = Store(group, url)
    if kind is not None and store.kind != kind:
        raise MaxaError(f"{url} is a {store.kind} store, expected a {kind} store")
    if require_complete:
        store.require_complete()
    return store


def create_or_resume(
    url: str,
    *,
    kind: str,
    provenance: Mapping[str, Any],
    ids: Sequence[str],
    arrays: Mapping[str, ArraySpec],
    shard_size: int,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> Store:
    """Return a writable store for this provenance: new, or the same one partially written.

    A store with the same fingerprint and ids is always resumed (a finished one has nothing left
    to do). One made from different inputs is refused, naming what differs, unless `overwrite`.
    """
    if shard_size < 1:
        raise MaxaError(f"shard size must be >= 1, got {shard_size}")
    provenance = dict(provenance)
    fp = fingerprint(provenance)
    existing = _open_group(url, "r+", storage_options)
    if existing is not None:
        try:
            store: Store | None = Store(existing, url)
        except MaxaError as exc:
            if not overwrite:
                raise MaxaError(
                    f"{url} exists and is not a maxa store; remove it or choose another path"
                ) from exc
            store = None
        if store is not None and store.fingerprint == fp and store.ids() == list(ids):
            return store  # same inputs: resume (or nothing left to do)
        if store is not None and not overwrite:
            if store.fingerprint != fp:
                diff = "; ".join(provenance_diff(store.provenance, provenance))
                raise MaxaError(
                    f"store {url} was made from different inputs ({diff}); "
                    "choose another path or pass --overwrite to replace it"
                )
            raise MaxaError(f"store {url} holds different sample ids than requested; pass --overwrite")

    group = zarr.open_group(url, mode="w", storage_options=dict(storage_options or {}) or None)
    n = len(ids)
    num_shards = max(1, math.ceil(n / shard_size))
    for name, spec in arrays.items():
        group.create_array(
            name,
            shape=(n, *spec.item_shape),
            dtype=spec.dtype,
            chunks=(1, *spec.item_shape),
            shards=(shard_size, *spec.item_shape),
            dimension_names=spec.dims,
            compressors=_compressors(spec),
            fill_value=0,
        )
    id_array = group.create_array(IDS, shape=(n,), dtype=str, chunks=(max(1, n),), dimension_names=("image",))
    if n:
        id_array[:] = np.asarray(list(ids), dtype=object)
    group.create_array(DONE, shape=(num_shards,), dtype="bool", chunks=(1,), fill_value=False)
    group.attrs[ATTR_KEY] = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "fingerprint": fp,
        "shard_size": shard_size,
        "provenance": provenance,
    }
    return Store(group, url)
