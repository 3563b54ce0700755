"""Writing (and bulk-reading) whole shards at disk speed, as the same Zarr v3 objects zarr-python writes.

zarr-python encodes a shard chunk by chunk through its async codec pipeline, which caps feature
writes at ~0.25x of a plain file write (benchmarks/store_io.py). When an array's codecs make a shard's
bytes predictable, maxa lays them out itself: the sharding codec with one chunk per image and no
compression (maxa's float16 default) stores a shard as the images' raw little-endian bytes in order,
each followed by its CRC32C (the core `crc32c` codec inside the shard; stores written before maxa
checksummed chunks lack it and are still read), then the shard index (uint64 little-endian
offset/length pairs, C order, then a CRC32C of those bytes: the Zarr v3 sharding spec's default
`index_codecs` with `index_location: end`). Reads check every checksum they pass over. Local
files are written through a temporary file renamed into place (as zarr's LocalStore does), so a
killed writer never leaves a torn shard; other stores get the bytes through zarr's own store API.
Arrays with any other codec (compressed targets) go through zarr-python unchanged.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import numpy as np
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec
from zarr.codecs.sharding import ShardingCodecIndexLocation
from zarr.storage import LocalStore

MISSING = np.uint64(2**64 - 1)
"""Index entry of a chunk that a shard does not hold (past the end of the array)."""
CRC_BYTES = 4
GROUP_BYTES = 1 << 20
"""Local checked reads fetch ~1 MiB of rows at a time and check them while they are still in cache."""
IOV_MAX = 1024


class DamagedShard(Exception):
    """A shard object that is absent, cut short or fails a checksum (the store names it to the user)."""

    def __init__(self, shard: int, reason: str, *, missing: bool = False) -> None:
        super().__init__(f"shard {shard}: {reason}")
        self.shard, self.reason, self.missing = shard, reason, missing


@dataclass(frozen=True)
class RawShards:
    """Facts of an array whose shards can be written as raw bytes: rows per shard, bytes per row, and
    whether each row's chunk ends in its CRC32C."""

    shard_rows: int
    row_bytes: int
    dtype: np.dtype
    checksum: bool = True

    @property
    def stride(self) -> int:
        """Bytes one row's chunk takes in the shard object."""
        return self.row_bytes + (CRC_BYTES if self.checksum else 0)


def row_sharding(array: zarr.Array) -> ShardingCodec | None:
    """The sharding codec of `array` when its shards have maxa's frame (whatever the inner codecs): the only
    codec, sharding along the first axis only, one row per inner chunk, the index stored last as bytes +
    crc32c, little-endian. Else None."""
    codecs = getattr(array.metadata, "codecs", None)
    if not codecs or len(codecs) != 1 or not isinstance(codecs[0], ShardingCodec):
        return None
    sharding = codecs[0]
    shape, shard = tuple(array.shape), tuple(array.shards or ())
    if not shape or tuple(sharding.chunk_shape) != (1, *shape[1:]) or shard[1:] != shape[1:]:
        return None
    index = list(sharding.index_codecs)
    if (
        sharding.index_location != ShardingCodecIndexLocation.end
        or len(index) != 2
        or not isinstance(index[0], BytesCodec)
        or not isinstance(index[1], Crc32cCodec)
        or (index[0].endian is not None and index[0].endian.value != "little")
    ):
        return None
    return sharding


def raw_shards(array: zarr.Array) -> RawShards | None:
    """The raw layout of `array`, or None when its shards need zarr's codec pipeline.

    Raw means: exactly one codec, sharding along the first axis only, one row per inner chunk, the
    inner codecs `bytes` (+ `crc32c`), and the index stored last as bytes + crc32c.
    """
    sharding = row_sharding(array)
    if sharding is None:
        return None
    shape, shard = tuple(array.shape), tuple(array.shards or ())
    inner = list(sharding.codecs)
    checksum = len(inner) == 2 and isinstance(inner[1], Crc32cCodec)
    if len(inner) != 1 + checksum or not isinstance(inner[0], BytesCodec):
        return None
    dtype = np.dtype(array.dtype)
    if dtype.kind not in "biuf" or (dtype.itemsize > 1 and inner[0].endian is None):
        return None
    if dtype.itemsize > 1 and inner[0].endian is not None and inner[0].endian.value != "little":
        return None
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    return RawShards(int(shard[0]), row_bytes, dtype, checksum)


def has_checksums(array: zarr.Array) -> bool:
    """Whether every chunk of `array` carries a CRC32C (inside its shards or as its own last codec)."""
    codecs = list(getattr(array.metadata, "codecs", None) or ())
    if len(codecs) == 1 and isinstance(codecs[0], ShardingCodec):
        codecs = list(codecs[0].codecs)
    return bool(codecs) and isinstance(codecs[-1], Crc32cCodec)


def crc(data: np.ndarray) -> int:
    """CRC32C of a contiguous array's bytes (what the `crc32c` codec stores, little-endian)."""
    return int(google_crc32c.value(data))


def shard_index(rows: int, shard_rows: int, stride: int) -> bytes:
    """The encoded index of a shard holding `rows` chunks of `stride` bytes back to back (the rest absent)."""
    table = np.full((shard_rows, 2), MISSING, dtype="<u8")
    table[:rows, 0] = np.arange(rows, dtype=np.uint64) * np.uint64(stride)
    table[:rows, 1] = stride
    raw = table.tobytes()
    return raw + np.uint32(google_crc32c.value(raw)).astype("<u4").tobytes()


def _row_checksums(rows: np.ndarray) -> np.ndarray:
    """uint8 (n, 4): each row's CRC32C as the codec appends it."""
    flat = rows.reshape(len(rows), -1).view(np.uint8)
    return np.array([crc(row) for row in flat], "<u4").view(np.uint8).reshape(len(rows), CRC_BYTES)


def _shard_key(array: zarr.Array, shard: int) -> str:
    coords = (shard, *(0 for _ in range(array.ndim - 1)))
    key = array.metadata.encode_chunk_key(coords)
    return f"{array.path}/{key}" if array.path else key


PARTIAL = ".partial"
"""Suffix of a shard being written; one left behind was cut off by a killed writer."""


def _write_file(path: Path, block: np.ndarray, index: bytes, checksums: np.ndarray | None = None) -> None:
    """Write to a temporary name in the same folder, then rename over `path` (atomic on POSIX).

    Only one writer ever writes a given shard, so temporary files of this shard found here are
    leftovers of a killed run: removed, so a resumed store holds no dead bytes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f"{path.name}.*{PARTIAL}"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}{PARTIAL}")
    try:
        with tmp.open("wb", buffering=0) as fh:
            parts: list[np.ndarray] = []
            if checksums is None:
                parts.append(block.reshape(-1).view(np.uint8))
            else:
                rows = block.reshape(len(block), -1).view(np.uint8)
                parts.extend(b for pair in zip(rows, checksums, strict=True) for b in pair)
            parts.append(np.frombuffer(index, np.uint8))
            _write_all(fh.fileno(), parts)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _write_all(fd: int, parts: list[np.ndarray]) -> None:
    """Write the buffers in order with as few system calls as the kernel allows (writes may be short)."""
    views = [p.data.cast("B") for p in parts if p.size]
    while views:
        count = os.writev(fd, views[:IOV_MAX])
        while views and count >= len(views[0]):
            count -= len(views[0])
            views.pop(0)
        if count:
            views[0] = views[0][count:]


def write_rows(array: zarr.Array, start: int, block: np.ndarray) -> None:
    """array[start:start + len(block)] = block, whole shards as raw bytes where the layout allows.

    Anything else (other codecs, writes that do not cover whole shards) goes through zarr-python.
    """
    layout = raw_shards(array) if raw_writes_enabled() else None
    stop = start + block.shape[0]
    whole = (
        layout is not None
        and start % layout.shard_rows == 0
        and (stop - start == layout.shard_rows or stop == array.shape[0])
        and 0 < stop - start <= layout.shard_rows
        and tuple(block.shape[1:]) == tuple(array.shape[1:])
    )
    if not whole or layout is None:
        array[start:stop] = block
        return
    data = np.ascontiguousarray(block, dtype=layout.dtype.newbyteorder("<"))
    shard = start // layout.shard_rows
    index = shard_index(stop - start, layout.shard_rows, layout.stride)
    checksums = _row_checksums(data) if layout.checksum else None
    store = array.store
    key = _shard_key(array, shard)
    if isinstance(store, LocalStore):
        if store.read_only:
            raise PermissionError(f"{store} is read-only")
        _write_file(Path(store.root) / key, data, index, checksums)
        return
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    body = np.empty((len(data), layout.stride), np.uint8)
    body[:, : layout.row_bytes] = data.reshape(len(data), -1).view(np.uint8)
    if checksums is not None:
        body[:, layout.row_bytes :] = checksums
    payload = np.concatenate([body.reshape(-1), np.frombuffer(index, np.uint8)])
    sync(store.set(key, default_buffer_prototype().buffer.from_array_like(payload)))


def read_rows_raw(array: zarr.Array, start: int, stop: int) -> np.ndarray | None:
    """array[start:stop] read straight from the shard objects, every row's CRC32C checked.

    Local stores: one positioned read per ~1 MiB of rows, checked while in cache. Other stores (s3, gcs,
    memory): one request per shard, all shards of the call at once: the whole object when at least half
    of it is wanted, else its index and then the wanted byte range. Used where the layout is raw
    (`raw_shards`) and each shard's index places the wanted rows back to back (true of every shard
    maxa or zarr-python writes uncompressed); otherwise returns None and the caller reads through zarr.
    Raises DamagedShard for an object that is absent, cut short, or fails a checksum.
    """
    layout = raw_shards(array)
    if layout is None or not 0 <= start < stop <= array.shape[0]:
        return None
    if not isinstance(array.store, LocalStore):
        from maxa.core.store.fetch import fetch_rows

        got = fetch_rows([(array, start, stop)])[0]
        if isinstance(got, Exception):
            raise got
        return got
    out = np.empty((stop - start, *array.shape[1:]), dtype=layout.dtype.newbyteorder("<"))
    return out if _read_local(array, layout, spans_of(layout, start, stop, out)) else None


Span = tuple[int, int, int, np.ndarray]
"""(shard, first row within it, end row within it, the bytes of `out` those rows go to)."""


def spans_of(layout: RawShards, start: int, stop: int, out: np.ndarray) -> list[Span]:
    """The per-shard pieces of rows start..stop and the bytes of `out` (rows start..stop) each fills."""
    flat = out.reshape(-1).view(np.uint8)
    spans = []
    row = start
    while row < stop:
        shard, first = divmod(row, layout.shard_rows)
        last = min(row - first + layout.shard_rows, stop)
        target = flat[(row - start) * layout.row_bytes :][: (last - row) * layout.row_bytes]
        spans.append((shard, first, first + last - row, target))
        row = last
    return spans


def index_size(layout: RawShards) -> int:
    """Bytes of a shard's encoded index (16 per inner chunk, then its CRC32C)."""
    return layout.shard_rows * 16 + CRC_BYTES


def shard_index_table(encoded: bytes | np.ndarray, shard_rows: int, shard: int) -> np.ndarray:
    """The (offset, length) rows of a shard's index, taken from the end of `encoded` after its CRC32C is
    checked (uint64, one row per inner chunk; 2**64-1 for a chunk the shard does not hold)."""
    encoded = np.frombuffer(encoded, np.uint8) if isinstance(encoded, bytes) else encoded
    size = shard_rows * 16 + CRC_BYTES
    if len(encoded) < size:
        raise DamagedShard(shard, f"the object is cut short ({len(encoded)} bytes)")
    encoded = encoded[len(encoded) - size :]
    if crc(encoded[:-CRC_BYTES]) != int(encoded[-CRC_BYTES:].view("<u4")[0]):
        raise DamagedShard(shard, "its index fails its CRC32C checksum")
    return encoded[:-CRC_BYTES].view("<u8").reshape(-1, 2)


def row_table(encoded: bytes | np.ndarray, layout: RawShards, span: Span) -> np.ndarray | None:
    """Offsets of the span's rows from the shard's encoded index, or None when they are not back to back."""
    shard, first, end, _ = span
    if len(encoded) != index_size(layout):
        raise DamagedShard(shard, "the object is cut short")
    table = shard_index_table(encoded, layout.shard_rows, shard)[first:end]
    step = np.uint64(layout.stride)
    expected = table[0, 0] + np.arange(len(table), dtype=np.uint64) * step
    if (table[:, 1] != step).any() or (table[:, 0] != expected).any():
        return None
    return table


def check_rows(rows: np.ndarray, sums: np.ndarray, shard: int, first: int) -> None:
    """Refuse the first row (of a shard, starting at row `first`) whose bytes do not match its CRC32C."""
    stored = sums.reshape(-1, CRC_BYTES).view("<u4").reshape(-1)
    for i, row in enumerate(rows):
        if crc(row) != int(stored[i]):
            raise DamagedShard(shard, f"row {first + i} of the shard fails its CRC32C checksum")


def _read_local(array: zarr.Array, layout: RawShards, spans: list[Span]) -> bool:
    root = Path(array.store.root)  # type: ignore[attr-defined]
    group = max(1, min(IOV_MAX // 2, GROUP_BYTES // layout.stride))
    sums = np.empty((group, CRC_BYTES), np.uint8)
    for span in spans:
        shard, first, end, target = span
        try:
            fd = os.open(root / _shard_key(array, shard), os.O_RDONLY)
        except FileNotFoundError:
            raise DamagedShard(shard, "its object is missing", missing=True) from None
        try:
            size = os.fstat(fd).st_size
            if size < index_size(layout):
                raise DamagedShard(shard, f"the object is cut short ({size} bytes)")
            table = row_table(os.pread(fd, index_size(layout), size - index_size(layout)), layout, span)
            if table is None:
                return False
            if int(table[-1, 0]) + layout.stride > size - index_size(layout):
                raise DamagedShard(shard, f"the object is cut short ({size} bytes)")
            rows = target.reshape(end - first, layout.row_bytes)
            # the whole run is asked for at once, so the disk streams it while groups are checked
            os.posix_fadvise(fd, int(table[0, 0]), len(rows) * layout.stride, os.POSIX_FADV_WILLNEED)
            if not layout.checksum:
                _pread_all(fd, [rows], int(table[0, 0]), shard)
                continue
            for at in range(0, len(rows), group):
                part = rows[at : at + group]
                buffers = [b for i, row in enumerate(part) for b in (row, sums[i])]
                _pread_all(fd, buffers, int(table[at, 0]), shard)
                check_rows(part, sums[: len(part)], shard, first + at)
        finally:
            os.close(fd)
    return True


def _pread_all(fd: int, buffers: list[np.ndarray], offset: int, shard: int) -> None:
    """Fill `buffers` from `offset` (positioned reads may return short)."""
    views = [b.data.cast("B") for b in buffers]
    while views:
        count = os.preadv(fd, views, offset)
        if not count:
            raise DamagedShard(shard, "the object is cut short")
        offset += count
        while views and count >= len(views[0]):
            count -= len(views[0])
            views.pop(0)
        if count:
            views[0] = views[0][count:]


def raw_reads_enabled() -> bool:
    """MAXA_RAW_READS=0 sends bulk reads through zarr's codec pipelines, also from object stores (the
    benchmarks' comparison with the read paths before maxa's own)."""
    return os.environ.get("MAXA_RAW_READS", "1") != "0"


def raw_writes_enabled() -> bool:
    """MAXA_RAW_WRITES=0 sends every write through zarr-python (the benchmark's comparison)."""
    return os.environ.get("MAXA_RAW_WRITES", "1") != "0"
