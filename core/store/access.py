"""Opening a store: an existing one to read (or extend), or one for a provenance, new or resumed."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

from maxa.core.codec_specs import CODECS, codec_factory
from maxa.core.errors import MaxaError
from maxa.core.records import canonical_json
from maxa.core.store.base import fast_reads_available
from maxa.core.store.codecs import CHECKSUM, ArraySpec
from maxa.core.store.layout import (
    ATTR_KEY,
    CREATING,
    DONE,
    FORMAT_VERSION,
    IDS,
    encode_ids,
    fingerprint,
    half_created,
    provenance_diff,
)
from maxa.core.store.location import check_location, fsspec_options, open_group, resolve
from maxa.core.store.write import Store


def open_store(
    url: str,
    kind: str | None = None,
    *,
    require_complete: bool = True,
    writable: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> Store:
    """Open an existing store (any fsspec URL or local path): read-only unless `writable`."""
    group = open_group(url, "r+" if writable else "r", storage_options)
    if group is None:
        raise MaxaError(f"no maxa store at {url}")
    store = Store(group, url, fast_reads=not writable and fast_reads_available())
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
    repair: bool = True,
) -> Store:
    """Return a writable store for this provenance: new, or the same one partially written.

    A store with the same fingerprint and ids is always resumed (a finished one has nothing left
    to do). With `repair`, resuming first reads every done shard and clears the flags of those whose
    object is missing or fails a checksum (listed in `store.repaired`), so they are written again.
    One made from different inputs is refused, naming what differs, unless `overwrite`.
    """
    request = _Request(url, kind, dict(provenance), ids, arrays, shard_size, storage_options)
    request.check()
    existing = open_group(url, "r+", storage_options)
    if existing is not None and not half_created(existing, list(arrays)):
        resumed = _resume(existing, url, request.provenance, ids, overwrite=overwrite, repair=repair)
        if resumed is not None:
            return resumed
    return request.create()


@dataclass(frozen=True)
class _Request:
    """A store asked for: where, of which kind, from which inputs, holding which arrays."""

    url: str
    kind: str
    provenance: dict[str, Any]
    ids: Sequence[str]
    arrays: Mapping[str, ArraySpec]
    shard_size: int
    storage_options: Mapping[str, Any] | None

    def check(self) -> None:
        if self.shard_size < 1:
            raise MaxaError(f"shard size must be >= 1, got {self.shard_size}")
        for name, spec in self.arrays.items():
            if spec.codec_name() not in CODECS:
                raise MaxaError(
                    f"array {name!r}: unknown codec {spec.codec_name()!r}; known: {', '.join(CODECS)}"
                )

    def create(self) -> Store:
        """A new store: attributes first (flagged `creating`), then every array, then the final attributes."""
        url, provenance, ids, shard_size = self.url, self.provenance, self.ids, self.shard_size
        meta: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "fingerprint": fingerprint(provenance),
            "shard_size": shard_size,
            "provenance": provenance,
        }
        canonical_json(provenance)  # refuses NaN / non-JSON values before anything is written
        check_location(url)
        codes = encode_ids(ids)
        # The attributes go out with the group itself, flagged until the last array exists.
        group = zarr.open_group(
            resolve(url),
            mode="w",
            attributes={ATTR_KEY: {**meta, CREATING: True}},
            storage_options=fsspec_options(url, self.storage_options),
        )
        n = len(ids)
        for name, spec in self.arrays.items():
            filters, compressors = codec_factory(spec.codec_name())(np.dtype(spec.dtype))
            group.create_array(
                name,
                shape=(n, *spec.item_shape),
                dtype=spec.dtype,
                chunks=(1, *spec.item_shape),
                shards=(shard_size, *spec.item_shape),
                dimension_names=spec.dims,
                filters=filters or None,
                compressors=[*compressors, CHECKSUM()],
                fill_value=0,
            )
        id_array = group.create_array(
            IDS,
            shape=codes.shape,
            dtype="uint8",
            chunks=(max(1, n), codes.shape[1]),
            dimension_names=("image", "byte"),
            compressors=[ZstdCodec(level=0), CHECKSUM()],
        )
        if n:
            id_array[:] = codes
        group.create_array(
            DONE,
            shape=(max(1, math.ceil(n / shard_size)),),
            dtype="bool",
            chunks=(1,),
            fill_value=False,
            dimension_names=("shard",),
            compressors=[CHECKSUM()],
        )
        group.attrs[ATTR_KEY] = meta
        return Store(group, url)


def _resume(
    group: zarr.Group,
    url: str,
    provenance: dict[str, Any],
    ids: Sequence[str],
    *,
    overwrite: bool,
    repair: bool,
) -> Store | None:
    """The existing store to go on writing (same inputs), None to replace it (`overwrite`), or a refusal."""
    try:
        store = Store(group, url)
    except MaxaError as exc:
        if overwrite:
            return None
        if isinstance(dict(group.attrs).get(ATTR_KEY), dict):
            raise  # newer format or damaged: never replaced without --overwrite
        raise MaxaError(f"{url} exists and is not a maxa store; remove it or choose another path") from exc
    if store.format_version < FORMAT_VERSION and not overwrite:
        raise MaxaError(
            f"store {url} is in store format {store.format_version}; this maxa writes format "
            f"{FORMAT_VERSION} (readers still accept it): pass --overwrite to re-create it, or choose "
            "another path"
        )
    fp = fingerprint(provenance)
    if store.fingerprint == fp and store.ids() == list(ids):
        if repair:
            store.repaired = store.damaged_shards()
            store.unflag(sorted(store.repaired))
        if not store.complete:
            check_location(url)
        return store  # same inputs: resume (or nothing left to do)
    if overwrite:
        return None
    if store.fingerprint != fp:
        diff = "; ".join(provenance_diff(store.provenance, provenance))
        raise MaxaError(
            f"store {url} was made from different inputs ({diff}); "
            "choose another path or pass --overwrite to replace it"
        )
    raise MaxaError(f"store {url} holds different sample ids than requested; pass --overwrite")
