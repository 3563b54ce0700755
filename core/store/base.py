"""An opened store: its attribute record, arrays, sample ids, shard bookkeeping and layout (what every
reader and writer of the contract shares)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
from typing import Any

import numpy as np
import zarr
from zarr.storage import LocalStore

from maxa.core.errors import MaxaError
from maxa.core.store.codecs import ArraySpec, codec_names, spec_of
from maxa.core.store.layout import ATTR_KEY, DIGESTS, DONE, IDS, RESERVED, check_meta, decode_ids

_CONFIG_LOCK = threading.Lock()
FAST_PIPELINE = "zarrs.ZarrsCodecPipeline"
"""Rust codec pipeline used for reads of local stores when the `zarrs` package is installed."""


def fast_reads_available() -> bool:
    """zarrs reads local stores several times faster (benchmarks/store_io.py); MAXA_ZARRS=0 disables."""
    return os.environ.get("MAXA_ZARRS", "1") != "0" and importlib.util.find_spec("zarrs") is not None


class StoreBase:
    """An open maxa store (features or targets): metadata, arrays and shard bookkeeping."""

    meta: dict[str, Any]
    """The `maxa` attribute record (docs/store.md)."""

    def __init__(self, group: zarr.Group, url: str, *, fast_reads: bool = False) -> None:
        self.group = group
        self.url = url
        self.meta = check_meta(dict(group.attrs).get(ATTR_KEY), url)
        self._ids: list[str] | None = None
        self._digests: np.ndarray | None = None
        self._fast = fast_reads and self.read_only and isinstance(group.store, LocalStore)
        self._readers: dict[str, zarr.Array] = {}  # opened once: metadata reads cost more than a chunk
        self._plain: dict[str, zarr.Array] = {}  # the same arrays through zarr-python (raw-read layout)
        self._objects: dict[str, set[int]] = {}  # shard objects present, listed once
        self._nodes: dict[tuple[str, bool], zarr.Array] = {}  # arrays looked up once
        self._names: list[str] | None = None
        self._done: np.ndarray | None = None
        self.repaired: dict[int, str] = {}
        """Shards a resume found damaged and flagged to be written again (create_or_resume)."""

    @property
    def read_only(self) -> bool:
        return bool(self.group.store.read_only)

    @property
    def remote(self) -> bool:
        """Whether the store is reached through requests (an object store or memory), not local files."""
        return not isinstance(self.group.store, LocalStore)

    def _node(self, name: str, fast: bool = False) -> zarr.Array:
        """An array of the group, looked up once (each lookup reads its metadata: a request on an object
        store); derived arrays (paths with '/') are replaced by write_aux, so they are looked up afresh."""
        key = (name, fast and self._fast)
        if key in self._nodes:
            return self._nodes[key]
        node = self._lookup(name, fast)
        if "/" not in name:
            self._nodes[key] = node
        return node

    def _lookup(self, name: str, fast: bool) -> zarr.Array:
        # zarr's config is process-global and `config.set` applies on creation: without the lock, two
        # reader threads' set/restore can interleave and leave the fast pipeline (which ignores read-only
        # mode) switched on for every later array.
        with _CONFIG_LOCK:
            pipeline = (
                zarr.config.set({"codec_pipeline.path": FAST_PIPELINE}) if fast and self._fast else None
            )
            with pipeline or contextlib.nullcontext():
                try:
                    node = self.group[name]
                except KeyError:
                    raise MaxaError(f"store {self.url} has no {name!r}") from None
        if not isinstance(node, zarr.Array):
            raise MaxaError(f"store {self.url}: {name!r} is not an array")
        if not self.read_only:
            # Every written chunk gets an object, even an all-zero one, so a done shard always has
            # its shard object and `missing_shard_objects` can tell lost data from zeros.
            node = node.with_config({"write_empty_chunks": True})
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
    def format_version(self) -> int:
        return int(self.meta["format_version"])

    @property
    def shard_size(self) -> int:
        return int(self.meta["shard_size"])

    @property
    def extra(self) -> dict[str, Any]:
        return dict(self.meta.get("extra", {}))

    @property
    def num_items(self) -> int:
        return int(self._node(IDS).shape[0])

    @property
    def num_shards(self) -> int:
        return int(self._node(DONE).shape[0])

    def __len__(self) -> int:
        return self.num_items

    def ids(self) -> list[str]:
        """Sample ids in row order (read once: they never change)."""
        if self._ids is None:
            node = self._node(IDS)
            self._ids = decode_ids(np.asarray(node[:]))
            if len(self._ids) != node.shape[0]:
                raise MaxaError(f"store {self.url}: ids array is damaged")
        return list(self._ids)

    def digests(self) -> np.ndarray | None:
        """Per-sample content digests (target stores of format 2), None where the store has none.

        Read once per opened read-only store (extraction asks three times); a writable store is being
        prepared, so its digests are read afresh.
        """
        if self._digests is not None and self.read_only:
            return self._digests.copy()
        if DIGESTS not in set(self.group.array_keys()):
            return None
        self._digests = np.asarray(self._node(DIGESTS)[:], np.uint8)
        return self._digests.copy()

    def array_names(self) -> list[str]:
        """The per-image arrays (features or targets), without `ids`, `done` and derived arrays."""
        if self._names is None or not self.read_only:  # listed once when nothing can add one
            self._names = sorted(name for name in self.group.array_keys() if name not in RESERVED)
        return list(self._names)

    def array(self, name: str) -> zarr.Array:
        if name not in self.array_names():
            raise MaxaError(
                f"store {self.url} has no array {name!r}; it has: {', '.join(self.array_names())}"
            )
        return self._node(name)

    def _done_flags(self) -> np.ndarray:
        """The done flags, read once (this object's own writes keep them current)."""
        if self._done is None:
            self._done = self.done_shards()
        return self._done

    def shard_objects(self, name: str) -> set[int]:
        """Shards of `name` whose object exists (listed once; this object's own writes keep it current)."""
        if name in self._objects:
            return self._objects[name]
        from zarr.core.sync import sync

        node = self._plain.get(name) or self.array(name)
        tail = (0,) * (node.ndim - 1)
        keys = {
            f"{node.path}/{node.metadata.encode_chunk_key((shard, *tail))}": shard
            for shard in range(self.num_shards)
        }

        async def listing() -> set[int]:
            return {keys[k] async for k in node.store.list_prefix(f"{node.path}/") if k in keys}

        self._objects[name] = sync(listing())
        return self._objects[name]

    def spec(self, name: str) -> ArraySpec:
        """The ArraySpec an array was created from (codec: the registered setting its codecs match)."""
        return spec_of(self.array(name))

    def layout(self) -> dict[str, dict[str, Any]]:
        """Every array in the store (per-image, ids, done, derived): shape, dtype, chunks, codecs."""
        out: dict[str, dict[str, Any]] = {}
        digests = [DIGESTS] if DIGESTS in set(self.group.array_keys()) else []
        for name in [*self.array_names(), IDS, DONE, *digests, *self.aux_names()]:
            node = self._node(name)
            out[name] = {
                "shape": list(node.shape),
                "dtype": str(node.dtype),
                "chunks": list(node.chunks),
                "shards": list(node.shards) if node.shards else None,
                "dims": list(node.metadata.dimension_names or ()),  # type: ignore[union-attr]
                "codecs": codec_names(node),
            }
        return out

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

    # --- derived arrays (statistics, PCA bases) -------------------------------------------------
    def aux_names(self) -> list[str]:
        """Paths of the derived arrays in subgroups, e.g. 'stats/layer_11/pca_components'."""
        return sorted(
            path
            for path, node in self.group.members(max_depth=None)
            if "/" in path and isinstance(node, zarr.Array)
        )
