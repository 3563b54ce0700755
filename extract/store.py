"""The store contract: every read and write of a maxa Zarr store goes through this module.

A store is a Zarr v3 group. Its attributes hold one JSON object under the key `maxa`:
`format_version`, `kind` ("features" or "targets"), `shard_size`, `provenance` (what produced it),
`fingerprint` (a hash of the provenance fields that determine the bytes, recomputed on every open) and
`extra` (later additions such as statistics). The attributes are written together with the group, before
any array, flagged `"creating": true` until every array exists, so a kill at any instant of creation
leaves a store that the next run recognises and re-creates. Per-image arrays are written one shard at a
time; a `done` array (one flag per shard, its own chunk each, so concurrent writers of different shards
never touch the same object) records which shards are complete. A store is complete only when every
flag is set; readers refuse incomplete stores. Derived data (statistics, PCA bases) is written beside a
store, never into it. The layout is documented in docs/store.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
import zarr.errors
from zarr.codecs import BloscCodec, BloscShuffle, Crc32cCodec, ZstdCodec
from zarr.storage import LocalStore, MemoryStore

from maxa.core.errors import MaxaError
from maxa.core.provenance import NONFINITE_KEY
from maxa.core.records import canonical_json, digest
from maxa.extract.shard_writer import (
    DamagedShard,
    has_checksums,
    raw_reads_enabled,
    raw_shards,
    read_rows_fetched,
    read_rows_raw,
    write_rows,
)

if TYPE_CHECKING:
    import dask.array

FORMAT_VERSION = 2
"""2: `ids` as UTF-8 bytes in uint8 (N, width) (a Zarr v3 core type), canonical-JSON fingerprint.
1: `ids` in zarr-python's `string` extension type; still read."""
ATTR_KEY = "maxa"
IDS = "ids"
DONE = "done"
DIGESTS = "digests"
"""Target stores: blake2b-128 content digest of each sample as prepare read it (uint8 (N, 16))."""
DIGEST_SIZE = 16
RESERVED = (IDS, DONE, DIGESTS)
CREATING = "creating"
"""Flag in the attributes while a store's arrays are being created."""
META_FIELDS = ("format_version", "kind", "fingerprint", "shard_size", "provenance")
NONFINITE_KEEP = NONFINITE_KEY
"""Provenance field: "keep" records that NaN/inf values were allowed into a store on purpose."""
VOLATILE_PROVENANCE = frozenset({"created", "maxa_version", "root"})
"""Provenance fields that describe the run or where the inputs were, not the bytes: left out of the
fingerprint (format 1 left out only `created` and `maxa_version`)."""

_CONFIG_LOCK = threading.Lock()
FAST_PIPELINE = "zarrs.ZarrsCodecPipeline"
"""Rust codec pipeline used for reads of local stores when the `zarrs` package is installed."""

CodecFactory = Callable[[np.dtype], tuple[list[Any], list[Any]]]
"""dtype -> (filters, compressors) for zarr's create_array."""

CODECS: dict[str, CodecFactory] = {}


def register_codec(name: str) -> Callable[[CodecFactory], CodecFactory]:
    """Make a codec setting available to ArraySpec(codec=name) and the I/O benchmark."""

    def add(factory: CodecFactory) -> CodecFactory:
        CODECS[name] = factory
        return factory

    return add


@register_codec("none")
def _none(dtype: np.dtype) -> tuple[list[Any], list[Any]]:
    return [], []


@register_codec("blosc-lz4")
def _blosc_lz4(dtype: np.dtype) -> tuple[list[Any], list[Any]]:
    return [], [BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.shuffle, typesize=dtype.itemsize)]


@register_codec("blosc-lz4-bitshuffle")
def _blosc_lz4_bit(dtype: np.dtype) -> tuple[list[Any], list[Any]]:
    return [], [BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.bitshuffle, typesize=dtype.itemsize)]


@register_codec("blosc-zstd")
def _blosc_zstd(dtype: np.dtype) -> tuple[list[Any], list[Any]]:
    return [], [BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.shuffle, typesize=dtype.itemsize)]


@register_codec("zstd")
def _zstd(dtype: np.dtype) -> tuple[list[Any], list[Any]]:
    return [], [ZstdCodec(level=3)]


def bitround_codec(keepbits: int) -> CodecFactory:
    """Lossy: keep `keepbits` mantissa bits (float16 has 10), then bit-shuffled Blosc-lz4 (the zeroed
    bits are sub-byte, so only a bit shuffle exposes them). Not a default."""

    def factory(dtype: np.dtype) -> tuple[list[Any], list[Any]]:
        import warnings

        from zarr.codecs.numcodecs import BitRound

        with warnings.catch_warnings():  # "numcodecs codecs are not in the Zarr v3 spec": documented
            warnings.simplefilter("ignore")
            filters = [BitRound(keepbits=keepbits)]
        return filters, _blosc_lz4_bit(dtype)[1]

    return factory


register_codec("bitround7-blosc-lz4")(bitround_codec(7))

FEATURE_CODEC = "none"
"""Default for float16 (feature) arrays, chosen by benchmarks/store_io.py (see docs/store.md): float16
activations compress only ~1.0-1.1x losslessly, so any codec only costs read speed."""
DEFAULT_CODEC = "blosc-lz4"
"""Default for every other dtype (labels, instance ids, depth): piecewise-constant or smooth maps
compress many-fold and lz4 decodes at memory speed."""


@dataclass(frozen=True)
class ArraySpec:
    """One per-image array: the shape of a single image's entry, its dtype and dimension names.

    `codec` names an entry of CODECS; None picks the measured default for the dtype (or "none"
    when `compress` is False).
    """

    item_shape: tuple[int, ...]
    dtype: str
    dims: tuple[str, ...]
    compress: bool = True
    codec: str | None = None

    def codec_name(self) -> str:
        if self.codec is not None:
            return self.codec
        if not self.compress:
            return "none"
        return FEATURE_CODEC if np.dtype(self.dtype) == np.float16 else DEFAULT_CODEC


def fingerprint(provenance: Mapping[str, Any], format_version: int = FORMAT_VERSION) -> str:
    """Hash of the provenance fields that determine the stored bytes (run-specific fields excluded).

    Format 2 (docs/store.md): first 16 hex of sha256 of the canonical JSON (sorted keys, separators
    "," and ":", UTF-8) of the provenance without `created`, `maxa_version` and `root`.
    """
    legacy = format_version < 2
    volatile = {"created", "maxa_version"} if legacy else VOLATILE_PROVENANCE
    stable = {k: v for k, v in provenance.items() if k not in volatile}
    if not legacy:
        return digest(stable)
    return hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()[:16]


def encode_ids(ids: Sequence[str]) -> np.ndarray:
    """Sample ids -> uint8 (N, width): UTF-8 bytes, zero-padded (a core type every Zarr v3 reader opens)."""
    raw = [str(i).encode("utf-8") for i in ids]
    for sid, b in zip(ids, raw, strict=True):
        if not b or b"\x00" in b:
            raise MaxaError(f"sample id {sid!r} must be non-empty and hold no NUL character")
    width = max((len(b) for b in raw), default=1)
    out = np.zeros((len(raw), width), np.uint8)
    for row, b in enumerate(raw):
        out[row, : len(b)] = np.frombuffer(b, np.uint8)
    return out


def decode_ids(codes: np.ndarray) -> list[str]:
    """The inverse of encode_ids; also accepts format-1 string arrays."""
    codes = np.asarray(codes)
    if codes.dtype.kind in "OUT":
        return [str(x) for x in codes]
    return [bytes(row).rstrip(b"\x00").decode("utf-8") for row in codes]


_EXPONENT: dict[int, tuple[Any, int]] = {
    2: (np.int16, 0x7C00),
    4: (np.int32, 0x7F800000),
    8: (np.int64, 0x7FF0000000000000),
}
_CHECK_CHUNK = 1 << 16


def nonfinite_rows(block: np.ndarray) -> np.ndarray:
    """Indices of the rows (images) of a float block holding NaN or inf.

    The common case (none) costs about one memory pass: an IEEE value is NaN or inf exactly when its
    exponent bits are all ones, so the largest masked exponent tells; np.isfinite (3x slower on float16)
    runs only on a block that fails.
    """
    block = np.ascontiguousarray(block)
    if block.dtype.kind != "f" or block.size == 0:
        return np.zeros(0, np.int64)
    view, mask = _EXPONENT[block.dtype.itemsize]
    flat, top = block.view(view).reshape(-1), view(mask)
    buffer = np.empty(min(flat.size, _CHECK_CHUNK), view)  # stays in cache: ~1 memory pass in all
    for start in range(0, flat.size, _CHECK_CHUNK):
        part = buffer[: min(_CHECK_CHUNK, flat.size - start)]
        np.bitwise_and(flat[start : start + len(part)], top, out=part)
        if part.max() == top:
            return np.flatnonzero(~np.isfinite(block.reshape(len(block), -1)).all(axis=1))
    return np.zeros(0, np.int64)


def provenance_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Human-readable list of the fingerprinted fields that differ between two provenances."""
    keys = sorted((set(old) | set(new)) - VOLATILE_PROVENANCE)
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def fast_reads_available() -> bool:
    """zarrs reads local stores several times faster (benchmarks/store_io.py); MAXA_ZARRS=0 disables."""
    return os.environ.get("MAXA_ZARRS", "1") != "0" and importlib.util.find_spec("zarrs") is not None


def _codec_dicts(codecs: Sequence[Any]) -> list[Any]:
    return [c.to_dict() for c in codecs if not isinstance(c, Crc32cCodec)]


CHECKSUM = Crc32cCodec
"""The last codec of every chunk maxa writes (docs/store.md: every Zarr v3 reader checks it)."""


def _rows_of(selection: Any, n: int) -> tuple[int, int]:
    """The image rows [start, stop) a selection touches (all rows when it cannot tell)."""
    first = selection[0] if isinstance(selection, tuple) and selection else selection
    if isinstance(first, slice) and first.step in (None, 1):
        start, stop, _ = first.indices(n)
        return start, max(start, stop)
    if isinstance(first, (int, np.integer)):
        row = int(first) % n if n else 0
        return row, row + 1
    return 0, n


def _codec_names(array: zarr.Array) -> list[str]:
    names = []
    for codec in (*array.filters, *array.compressors):
        cname = getattr(codec, "cname", None)
        label = getattr(codec, "codec_name", None) or type(codec).__name__
        names.append(f"{label}({getattr(cname, 'value', cname)})" if cname is not None else str(label))
    return names


class ShardDamaged(MaxaError):
    """A shard marked done whose object is missing or fails its checksums."""

    def __init__(self, message: str, shard: int, reason: str) -> None:
        super().__init__(message)
        self.shard, self.reason = shard, reason


class Store:
    """An open maxa store (features or targets)."""

    def __init__(self, group: zarr.Group, url: str, *, fast_reads: bool = False) -> None:
        self.group = group
        self.url = url
        meta = dict(group.attrs).get(ATTR_KEY)
        if not isinstance(meta, dict):
            raise MaxaError(f"{url} is not a maxa store (no '{ATTR_KEY}' attributes)")
        try:
            version = int(meta.get("format_version", -1))
        except (TypeError, ValueError):
            raise MaxaError(f"{url}: format_version {meta.get('format_version')!r} is no integer") from None
        if version > FORMAT_VERSION:
            raise MaxaError(
                f"{url} was written by a newer maxa (store format {version}, this maxa reads up to "
                f"{FORMAT_VERSION}); upgrade maxa"
            )
        if meta.get(CREATING):
            raise MaxaError(
                f"store {url} was interrupted while being created; re-run the command that writes it "
                "(it starts the store afresh: no shard was written yet)"
            )
        missing = [k for k in META_FIELDS if k not in meta]
        if missing:
            raise MaxaError(f"store {url}: attrs['{ATTR_KEY}'] lack {', '.join(missing)} (docs/store.md)")
        if not isinstance(meta["provenance"], dict):
            raise MaxaError(f"store {url}: provenance must be a JSON object")
        expected = fingerprint(meta["provenance"], version)
        if meta["fingerprint"] != expected:
            raise MaxaError(
                f"store {url}: fingerprint {meta['fingerprint']} does not match its provenance ({expected}); "
                "the attributes were edited or damaged: re-create the store"
            )
        self.meta: dict[str, Any] = meta
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

    def read(self, name: str, selection: Any = slice(None)) -> np.ndarray:
        """Read a per-image array (all of it by default) into memory: the fast path for bulk reads.

        Contiguous rows of uncompressed arrays are read straight from the shard objects
        (`shard_writer.read_rows_raw`: ~memmap speed locally, whole-shard concurrent requests from object
        stores); everything else reads through the zarrs pipeline when it is installed, whose arrays are
        never handed out because it does not enforce read-only mode on writes. Every chunk's checksum is
        checked, and a shard marked done whose object is missing or damaged is refused (`DamagedShard`
        becomes a MaxaError naming the store, array, shard and the command that repairs it).
        """
        plain = self._plain.get(name)
        if plain is None:
            plain = self._plain[name] = self.array(name)  # validates the name, once
        start, stop = _rows_of(selection, self.num_items)
        if isinstance(selection, slice) and selection.step in (None, 1) and raw_reads_enabled():
            try:
                block = read_rows_raw(plain, start, stop) if stop > start else None
            except DamagedShard as exc:
                if not (exc.missing and not self._done_flags()[exc.shard]):
                    raise self.damaged(name, exc.shard, exc.reason) from None
                block = None  # a shard not written yet reads as its fill value, as through zarr
            if block is not None:
                return block
        self._require_objects(name, start, stop)
        remote = not isinstance(self.group.store, (LocalStore, MemoryStore)) and raw_reads_enabled()
        if remote and isinstance(selection, slice) and selection.step in (None, 1) and stop > start:
            try:  # whole shards, one request each, all at once; decoded (and checked) in memory
                return read_rows_fetched(plain, start, stop)
            except DamagedShard as exc:
                if not (exc.missing and not self._done_flags()[exc.shard]):
                    raise self.damaged(name, exc.shard, exc.reason) from None
                # a shard not written yet: zarr reads it as its fill value below
            except (ValueError, RuntimeError) as exc:
                raise self._locate_damage(name, start, stop, exc) from exc
        if not (isinstance(selection, slice) and selection.step in (None, 1)):
            # zarr-python decodes (and checks) every chunk it touches
            return self._zarr_read(plain, name, selection, start, stop)
        node = self._readers.get(name)
        if node is None:
            node = self._readers[name] = self._node(name, fast=True)
        # zarrs checks chunk checksums only when it decodes a whole shard: read whole shards, then cut;
        # a partial last shard (fewer images than the shard holds) goes through zarr-python.
        size, n = self.shard_size, self.num_items
        first, last = start - start % size, min(n, -(-stop // size) * size)
        tail = n - n % size
        if stop <= start:
            return self._zarr_read(node, name, selection, start, stop)
        parts = []
        if first < min(last, tail):
            parts.append(self._zarr_read(node, name, slice(first, min(last, tail)), start, stop))
        if last > tail:
            parts.append(self._zarr_read(plain, name, slice(max(first, tail), last), start, stop))
        block = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if (first, last) == (start, stop):
            return block
        return block[start - first : stop - first].copy()

    def _zarr_read(self, node: zarr.Array, name: str, selection: Any, start: int, stop: int) -> np.ndarray:
        try:
            return np.asarray(node[selection])
        except (ValueError, RuntimeError) as exc:  # zarr's and zarrs' checksum and decoding errors
            raise self._locate_damage(name, start, stop, exc) from exc

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

    def _require_objects(self, name: str, start: int, stop: int) -> None:
        """Refuse a read that zarr would fill with zeros because a done shard's object is gone."""
        if stop <= start:
            return
        done = self._done_flags()
        first, last = start // self.shard_size, (stop - 1) // self.shard_size
        wanted = [s for s in range(first, last + 1) if s < len(done) and done[s]]
        if wanted:
            present = self.shard_objects(name)
            lost = [s for s in wanted if s not in present]
            if lost:
                raise self.damaged(name, lost[0], "its object is missing")

    def _locate_damage(self, name: str, start: int, stop: int, exc: Exception) -> Exception:
        """The shard of a failed zarr read that fails alone (named), or the original error."""
        node = self._plain.get(name) or self.array(name)
        done = self._done_flags()
        for shard in range(start // self.shard_size, (max(start, stop - 1)) // self.shard_size + 1):
            a, b = self.shard_range(shard)
            try:
                node[a:b]
            except (ValueError, RuntimeError) as inner:
                if shard < len(done) and done[shard]:
                    return self.damaged(name, shard, f"it cannot be decoded ({inner})")
        return exc

    def damaged(self, name: str, shard: int, reason: str) -> ShardDamaged:
        """The one-line refusal of a damaged shard: store, array, shard, images and the repair."""
        a, b = self.shard_range(shard)
        command = "maxa extract" if self.kind == "features" else "maxa prepare"
        return ShardDamaged(
            f"store {self.url}: {name} shard {shard} (images {a}-{b - 1}) is marked done but {reason}; "
            f"re-run the `{command}` that wrote it with the same inputs (it redoes damaged shards only) "
            "or fetch the store again",
            shard,
            reason,
        )

    def unchecked_arrays(self) -> list[str]:
        """Per-image arrays whose chunks carry no checksum (written before maxa stored them)."""
        return [name for name in self.array_names() if not has_checksums(self.array(name))]

    def damaged_shards(self) -> dict[int, str]:
        """Done shards of any per-image array whose object is missing or fails a checksum (full read)."""
        found: dict[int, str] = {}
        done = [int(s) for s in np.flatnonzero(self.done_shards())]
        for name in self.array_names():
            for shard in done:
                if shard in found:
                    continue
                try:
                    self.read(name, slice(*self.shard_range(shard)))
                except ShardDamaged as exc:
                    found[shard] = f"{name} {exc.reason}"
        return found

    def repair_note(self) -> str | None:
        """What a resume found damaged and writes again (None when nothing was)."""
        if not self.repaired:
            return None
        shards = sorted(self.repaired)
        return (
            f"{self.url}: {len(shards)} done shard(s) were missing or damaged and are written again: "
            f"{shards[:10]} (first: {self.repaired[shards[0]]})"
        )

    def unflag(self, shards: Sequence[int]) -> None:
        """Clear the done flags of shards that must be written again."""
        self._require_writable()
        node = self._node(DONE)
        for shard in shards:
            node[int(shard)] = False
        self._done = None
        self._objects.clear()

    def read_rows(
        self, name: str, rows: Sequence[int] | np.ndarray | slice, *, finite: bool = True
    ) -> np.ndarray:
        """Rows of a per-image array in the given order, read as whole contiguous runs (the fast path;
        never per sample). `finite`: refuse NaN/inf in a float array, naming the store and the images
        (also in a store that records `nonfinite: keep`: keeping them is for inspection, not training)."""
        if isinstance(rows, slice):
            start, stop, _ = rows.indices(self.num_items)
            rows = np.arange(start, stop)
        rows = np.asarray(rows, np.int64)
        if rows.size == 0:
            out = self.read(name, slice(0, 0))
        else:
            breaks = np.flatnonzero(np.diff(rows) != 1) + 1
            runs = np.split(rows, breaks)
            shards = np.unique(rows // self.shard_size)
            if len(runs) > len(shards) and raw_shards(self._plain.get(name) or self.array(name)) is None:
                out = self._gather_by_shard(name, rows, shards)  # decoded shard by shard, each once
            else:
                parts = [self.read(name, slice(int(r[0]), int(r[-1]) + 1)) for r in runs]
                out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if finite:  # even when kept on purpose: a probe must never learn from them
            self._refuse_nonfinite(
                name, out, rows, f"run `maxa store verify {self.url}` and re-create the store"
            )
        return out

    def _gather_by_shard(self, name: str, rows: np.ndarray, shards: np.ndarray) -> np.ndarray:
        """`rows` of a compressed array, each shard they touch read whole once."""
        out: np.ndarray | None = None
        for shard in shards:
            a, b = self.shard_range(int(shard))
            where = np.flatnonzero((rows >= a) & (rows < b))
            block = self.read(name, slice(a, b))
            if out is None:
                out = np.empty((len(rows), *block.shape[1:]), block.dtype)
            out[where] = block[rows[where] - a]
        assert out is not None
        return out

    def _refuse_nonfinite(self, name: str, block: np.ndarray, rows: np.ndarray, hint: str) -> None:
        """One-line refusal of NaN/inf in a float block of the given store rows, naming its first images."""
        bad = nonfinite_rows(block)
        if len(bad):
            ids = self.ids()
            first = ", ".join(
                repr(ids[int(r)]) if int(r) < len(ids) else f"row {int(r)}" for r in rows[bad[:3]]
            )
            raise MaxaError(
                f"store {self.url}: {name} holds NaN or inf for {len(bad)} image(s) (first: {first}); {hint}"
            )

    def spec(self, name: str) -> ArraySpec:
        """The ArraySpec an array was created from (codec: the registered setting its codecs match)."""
        node = self.array(name)
        dims = tuple(str(d) for d in (node.metadata.dimension_names or ()))  # type: ignore[union-attr]
        stored = _codec_dicts([*node.filters, *node.compressors])
        codec = None
        for candidate, make in CODECS.items():
            filters, compressors = make(np.dtype(node.dtype))
            if _codec_dicts([*filters, *compressors]) == stored:
                codec = candidate
                break
        return ArraySpec(tuple(node.shape[1:]), str(node.dtype), dims, codec=codec)

    def dask_array(self, name: str) -> dask.array.Array:
        """The array as dask, one dask chunk per shard: out-of-core, whole-shard reads through `read`
        (so every chunk's checksum is checked)."""
        import dask
        import dask.array as da

        node = self.array(name)  # validates the name
        item = tuple(node.shape[1:])
        blocks = [
            da.from_delayed(
                dask.delayed(self.read, pure=True)(name, slice(a, b)), (b - a, *item), dtype=node.dtype
            )
            for a, b in (self.shard_range(s) for s in range(self.num_shards))
            if b > a
        ]
        if not blocks:
            return da.zeros((0, *item), dtype=node.dtype, chunks=(1, *item))
        return da.concatenate(blocks, axis=0)

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
                "codecs": _codec_names(node),
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

    def missing_shard_objects(self, name: str) -> list[int]:
        """Shards flagged done whose object is absent from storage (lost in a copy or a pull)."""
        present = self.shard_objects(name)
        return [int(s) for s in np.flatnonzero(self.done_shards()) if int(s) not in present]

    def problems(self, check_values: bool = True) -> list[str]:
        """Everything that makes this store unfit to read: missing or damaged shards, wrong shapes, NaN/inf.

        `check_values` reads every done shard once, whole (never per sample), checking each chunk's
        checksum and every float for NaN/inf.
        """
        found: list[str] = []
        n, num_shards = self.num_items, self.num_shards
        if num_shards != max(1, math.ceil(n / self.shard_size)):
            found.append(
                f"done has {num_shards} flags, expected {math.ceil(n / self.shard_size)} for {n} images"
            )
        pending = self.pending_shards()
        if pending:
            found.append(f"{len(pending)} of {num_shards} shards not written (first: {pending[0]})")
        ids = self.ids()
        digests = self.digests()
        if digests is not None and digests.shape != (n, DIGEST_SIZE):
            found.append(f"digests: shape {list(digests.shape)}, expected {[n, DIGEST_SIZE]}")
        if len(set(ids)) != len(ids):
            found.append(f"sample ids are not unique ({len(ids) - len(set(ids))} duplicates)")
        expected_shapes = self.provenance.get("feature_shapes", {}) if self.kind == "features" else {}
        for name in self.array_names():
            node = self.array(name)
            item = tuple(node.shape[1:])
            if node.shape[0] != n:
                found.append(f"{name}: {node.shape[0]} images, ids has {n}")
            if name in expected_shapes and list(item) != list(expected_shapes[name]):
                found.append(f"{name}: item shape {list(item)}, provenance says {expected_shapes[name]}")
            if tuple(node.chunks) != (1, *item) or (
                node.shards and tuple(node.shards) != (self.shard_size, *item)
            ):
                found.append(f"{name}: chunks {node.chunks} / shards {node.shards} do not follow the layout")
            lost = self.missing_shard_objects(name)
            if lost:
                found.append(f"{name}: shards {lost[:5]} are marked done but their data is missing")
            if check_values:
                found.extend(self._read_problems(name, set(lost), ids))
        return found

    def _read_problems(self, name: str, lost: set[int], ids: list[str]) -> list[str]:
        """Read every done shard of `name` once: checksum failures by shard, NaN/inf by image."""
        damaged: list[str] = []
        bad: list[int] = []
        float_array = np.dtype(self.array(name).dtype).kind == "f"
        for shard in np.flatnonzero(self.done_shards()):
            if int(shard) in lost:
                continue
            a, b = self.shard_range(int(shard))
            try:
                block = self.read(name, slice(a, b))
            except ShardDamaged as exc:
                damaged.append(f"{int(shard)} ({exc.reason})")
                continue
            if float_array:
                bad.extend(a + int(i) for i in nonfinite_rows(block))
        found = []
        if damaged:
            found.append(f"{name}: shards {', '.join(damaged[:5])} are marked done but damaged")
        if bad:
            found.append(
                f"{name}: {len(bad)} images hold NaN or inf (first: {', '.join(ids[i] for i in bad[:3])})"
            )
        return found

    # --- writing --------------------------------------------------------------------------------
    def _require_writable(self) -> None:
        if self.read_only:
            raise MaxaError(f"store {self.url} is open read-only")

    def check_finite(self, start: int, stop: int, name: str, block: np.ndarray) -> None:
        """Refuse NaN/inf in a float block, naming the images, unless the store records `nonfinite: keep`."""
        if self.provenance.get(NONFINITE_KEEP) != "keep":
            self._refuse_nonfinite(name, block, np.arange(start, stop), "the shard was not marked done")

    def write_shard(self, shard: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Write one whole shard of every array, then mark it done (the mark comes last).

        NaN/inf in a float array is refused before anything is written (see check_finite).
        """
        self._require_writable()
        start, stop = self.shard_range(shard)
        for name, block in arrays.items():
            self.check_finite(start, stop, name, np.asarray(block))
        for name, block in arrays.items():
            if block.shape[0] != stop - start:
                raise ValueError(
                    f"shard {shard} of {name!r}: {block.shape[0]} items, expected {stop - start}"
                )
            write_rows(self._node(name), start, block)
            if name in self._objects:
                self._objects[name].add(shard)
        self._node(DONE)[shard] = True
        if self._done is not None:
            self._done[shard] = True

    def set_attr(self, key: str, value: Any) -> None:
        """Store an extra JSON attribute next to the provenance (e.g. statistics, skipped ids)."""
        self._require_writable()
        meta = dict(self.meta)
        meta["extra"] = {**meta.get("extra", {}), key: value}
        self.group.attrs[ATTR_KEY] = meta
        self.meta = meta

    # --- derived arrays (statistics, PCA bases) -------------------------------------------------
    def aux_names(self) -> list[str]:
        """Paths of the derived arrays in subgroups, e.g. 'stats/layer_11/pca_components'."""
        return sorted(
            path
            for path, node in self.group.members(max_depth=None)
            if "/" in path and isinstance(node, zarr.Array)
        )

    def write_aux(self, path: str, data: np.ndarray, attrs: Mapping[str, Any] | None = None) -> None:
        """Write (or replace) a small derived array in a subgroup; never one of the per-image arrays."""
        self._require_writable()
        parent, _, leaf = path.rpartition("/")
        if not parent or not leaf:
            raise MaxaError(f"derived array path {path!r} must name a subgroup, e.g. 'stats/layer_11/mean'")
        group = self.group
        for part in parent.split("/"):
            group = group.require_group(part)
        data = np.ascontiguousarray(data)
        array = group.create_array(
            leaf,
            shape=data.shape,
            dtype=data.dtype,
            chunks=data.shape if data.ndim else (),
            overwrite=True,
            fill_value=0,
            compressors=[ZstdCodec(level=0), CHECKSUM()],
        )
        array[...] = data
        if attrs:
            array.attrs.update(dict(attrs))

    def read_aux(self, path: str) -> tuple[np.ndarray, dict[str, Any]]:
        if path not in self.aux_names():
            raise MaxaError(f"store {self.url} has no derived array {path!r}")
        node = self._node(path)
        return np.asarray(node[...]), dict(node.attrs)


def check_location(url: str) -> None:
    """Fail before any work when a local store path cannot be written (remote URLs fail on write)."""
    path = _resolve(url)
    if "://" in path:
        return
    if os.path.isdir(path):
        if not os.access(path, os.W_OK | os.X_OK):
            raise MaxaError(f"store {url} cannot be written (permission denied); choose another path")
        return
    from maxa.core.records import check_writable

    check_writable(path, "store")


def _resolve(url: str) -> str:
    """`file://` URLs become plain paths, so local stores use zarr's LocalStore (atomic writes)."""
    return url[len("file://") :] if url.startswith("file://") else url


STORAGE_ENV = "MAXA_STORAGE_OPTIONS"
"""JSON object of fsspec storage options for every object-store URL this process opens (set by
`maxa --storage-options` and params.yaml `storage`; inherited by dask workers). Never recorded."""


def fsspec_options(url: str, given: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """fsspec options for `url`: MAXA_STORAGE_OPTIONS for object stores, overridden by `given`."""
    local = "://" not in url or url.startswith(("file://", "memory://"))
    text = "" if local else os.environ.get(STORAGE_ENV, "")
    try:
        defaults = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise MaxaError(f"{STORAGE_ENV} must hold a JSON object of fsspec storage options ({exc})") from None
    if not isinstance(defaults, dict):
        raise MaxaError(f"{STORAGE_ENV} must hold a JSON object of fsspec storage options")
    return {**defaults, **dict(given or {})} or None


def _open_group(url: str, mode: str, options: Mapping[str, Any] | None = None) -> zarr.Group | None:
    try:
        return zarr.open_group(_resolve(url), mode=mode, storage_options=fsspec_options(url, options))  # type: ignore[arg-type]
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
        return None


def open_store(
    url: str,
    kind: str | None = None,
    *,
    require_complete: bool = True,
    writable: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> Store:
    """Open an existing store (any fsspec URL or local path): read-only unless `writable`."""
    group = _open_group(url, "r+" if writable else "r", storage_options)
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
    if shard_size < 1:
        raise MaxaError(f"shard size must be >= 1, got {shard_size}")
    for name, spec in arrays.items():
        if spec.codec_name() not in CODECS:
            raise MaxaError(
                f"array {name!r}: unknown codec {spec.codec_name()!r}; known: {', '.join(CODECS)}"
            )
    provenance = dict(provenance)
    fp = fingerprint(provenance)
    existing = _open_group(url, "r+", storage_options)
    if existing is not None and not _half_created(existing, list(arrays)):
        store: Store | None = None
        try:
            store = Store(existing, url)
        except MaxaError as exc:
            if not overwrite:
                if isinstance(dict(existing.attrs).get(ATTR_KEY), dict):
                    raise  # newer format or damaged: never replaced without --overwrite
                raise MaxaError(
                    f"{url} exists and is not a maxa store; remove it or choose another path"
                ) from exc
        if store is not None and store.format_version < FORMAT_VERSION and not overwrite:
            raise MaxaError(
                f"store {url} is in store format {store.format_version}; this maxa writes format "
                f"{FORMAT_VERSION} (readers still accept it): pass --overwrite to re-create it, or choose "
                "another path"
            )
        if store is not None and store.fingerprint == fp and store.ids() == list(ids):
            if repair:
                store.repaired = store.damaged_shards()
                store.unflag(sorted(store.repaired))
            if not store.complete:
                check_location(url)
            return store  # same inputs: resume (or nothing left to do)
        if store is not None and not overwrite:
            if store.fingerprint != fp:
                diff = "; ".join(provenance_diff(store.provenance, provenance))
                raise MaxaError(
                    f"store {url} was made from different inputs ({diff}); "
                    "choose another path or pass --overwrite to replace it"
                )
            raise MaxaError(f"store {url} holds different sample ids than requested; pass --overwrite")

    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "fingerprint": fp,
        "shard_size": shard_size,
        "provenance": provenance,
    }
    canonical_json(provenance)  # refuses NaN / non-JSON values before anything is written
    check_location(url)
    codes = encode_ids(ids)
    # The attributes go out with the group itself, flagged until the last array exists.
    group = zarr.open_group(
        _resolve(url),
        mode="w",
        attributes={ATTR_KEY: {**meta, CREATING: True}},
        storage_options=fsspec_options(url, storage_options),
    )
    n = len(ids)
    num_shards = max(1, math.ceil(n / shard_size))
    for name, spec in arrays.items():
        filters, compressors = CODECS[spec.codec_name()](np.dtype(spec.dtype))
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
        shape=(num_shards,),
        dtype="bool",
        chunks=(1,),
        fill_value=False,
        dimension_names=("shard",),
        compressors=[CHECKSUM()],
    )
    group.attrs[ATTR_KEY] = meta
    return Store(group, url)


def _half_created(group: zarr.Group, arrays: Sequence[str]) -> bool:
    """A store killed during creation: flagged `creating`, or (format 1 wrote the attributes last) a
    group without attributes holding only arrays this call would create and no done shard."""
    attrs = dict(group.attrs)
    meta = attrs.get(ATTR_KEY)
    if isinstance(meta, dict):
        return bool(meta.get(CREATING))
    if attrs or any(True for _ in group.group_keys()):
        return False
    names = set(group.array_keys())
    if not names or not names <= {*arrays, *RESERVED}:
        return False  # an empty or foreign group is not ours to replace
    if DONE in names:
        return not bool(np.asarray(group[DONE][:]).any())  # type: ignore[index]
    return True
