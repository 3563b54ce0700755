"""Writing (and bulk-reading) whole shards at disk speed, as the same Zarr v3 objects zarr-python writes.

zarr-python encodes a shard chunk by chunk through its async codec pipeline, which caps feature
writes at ~0.25x of a plain file write (benchmarks/store_io.py). When an array's codecs make a shard's
bytes predictable, maxa lays them out itself: the sharding codec with one chunk per image and no
compression (maxa's float16 default) stores a shard as the images' raw little-endian bytes in order,
followed by the shard index (uint64 little-endian offset/length pairs, C order, then a CRC32C of
those bytes: the Zarr v3 sharding spec's default `index_codecs` with `index_location: end`). Local
files are written through a temporary file renamed into place (as zarr's LocalStore does), so a
killed writer never leaves a torn shard; other stores get the bytes through zarr's own store API.
Arrays with any other codec (compressed targets) go through zarr-python unchanged.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import google_crc32c
import numpy as np
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec
from zarr.codecs.sharding import ShardingCodecIndexLocation
from zarr.storage import LocalStore

from maxa.core.errors import MaxaError

if TYPE_CHECKING:
    from maxa.extract.store import Store

MISSING = np.uint64(2**64 - 1)
"""Index entry of a chunk that a shard does not hold (past the end of the array)."""


@dataclass(frozen=True)
class RawShards:
    """Facts of an array whose shards can be written as raw bytes: rows per shard, bytes per row."""

    shard_rows: int
    row_bytes: int
    dtype: np.dtype


def raw_shards(array: zarr.Array) -> RawShards | None:
    """The raw layout of `array`, or None when its shards need zarr's codec pipeline.

    Raw means: exactly one codec, sharding along the first axis only, one row per inner chunk, the
    inner codecs a single `bytes` codec, and the index stored last as bytes + crc32c.
    """
    codecs = getattr(array.metadata, "codecs", None)
    if not codecs or len(codecs) != 1 or not isinstance(codecs[0], ShardingCodec):
        return None
    sharding = codecs[0]
    shape = tuple(array.shape)
    shard = tuple(array.shards or ())
    if not shape or tuple(sharding.chunk_shape) != (1, *shape[1:]) or shard[1:] != shape[1:]:
        return None
    inner = list(sharding.codecs)
    if len(inner) != 1 or not isinstance(inner[0], BytesCodec):
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
    dtype = np.dtype(array.dtype)
    if dtype.kind not in "biuf" or (dtype.itemsize > 1 and inner[0].endian is None):
        return None
    if dtype.itemsize > 1 and inner[0].endian is not None and inner[0].endian.value != "little":
        return None
    return RawShards(int(shard[0]), int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize, dtype)


def shard_index(rows: int, shard_rows: int, row_bytes: int) -> bytes:
    """The encoded index of a shard holding `rows` rows stored back to back (the rest absent)."""
    table = np.full((shard_rows, 2), MISSING, dtype="<u8")
    table[:rows, 0] = np.arange(rows, dtype=np.uint64) * np.uint64(row_bytes)
    table[:rows, 1] = row_bytes
    raw = table.tobytes()
    return raw + np.uint32(google_crc32c.value(raw)).astype("<u4").tobytes()


def _shard_key(array: zarr.Array, shard: int) -> str:
    coords = (shard, *(0 for _ in range(array.ndim - 1)))
    key = array.metadata.encode_chunk_key(coords)
    return f"{array.path}/{key}" if array.path else key


PARTIAL = ".partial"
"""Suffix of a shard being written; one left behind was cut off by a killed writer."""


def _write_file(path: Path, block: np.ndarray, index: bytes) -> None:
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
            view = block.data.cast("B")
            while view:  # raw writes may be short
                view = view[fh.write(view) :]
            fh.write(index)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


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
    index = shard_index(stop - start, layout.shard_rows, layout.row_bytes)
    store = array.store
    key = _shard_key(array, shard)
    if isinstance(store, LocalStore):
        if store.read_only:
            raise PermissionError(f"{store} is read-only")
        _write_file(Path(store.root) / key, data, index)
        return
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    payload = np.concatenate([data.reshape(-1).view(np.uint8), np.frombuffer(index, np.uint8)])
    sync(store.set(key, default_buffer_prototype().buffer.from_array_like(payload)))


def read_rows_raw(array: zarr.Array, start: int, stop: int) -> np.ndarray | None:
    """array[start:stop] read straight from local shard files, one `readinto` per shard.

    Used where the layout is raw (`raw_shards`) and each shard's index (CRC-checked) places the wanted
    rows back to back: true of every shard maxa or zarr-python writes uncompressed. Anything else
    returns None and the caller reads through zarr, which then decodes or reports the damage itself.
    """
    layout = raw_shards(array)
    store = array.store
    if layout is None or not isinstance(store, LocalStore) or not 0 <= start < stop <= array.shape[0]:
        return None
    out = np.empty((stop - start, *array.shape[1:]), dtype=layout.dtype.newbyteorder("<"))
    buffer = out.reshape(-1).view(np.uint8).data
    index_bytes = layout.shard_rows * 16 + 4
    row = start
    while row < stop:
        first = row - row % layout.shard_rows
        last = min(first + layout.shard_rows, stop)
        path = Path(store.root) / _shard_key(array, row // layout.shard_rows)
        try:
            with path.open("rb", buffering=0) as fh:
                size = os.fstat(fh.fileno()).st_size
                if size < index_bytes:
                    return None
                fh.seek(size - index_bytes)
                encoded = fh.read(index_bytes)
                if google_crc32c.value(encoded[:-4]) != int(np.frombuffer(encoded[-4:], "<u4")[0]):
                    return None
                table = np.frombuffer(encoded[:-4], "<u8").reshape(-1, 2)[row - first : last - first]
                step = np.uint64(layout.row_bytes)
                expected = table[0, 0] + np.arange(len(table), dtype=np.uint64) * step
                if (table[:, 1] != step).any() or (table[:, 0] != expected).any():
                    return None
                fh.seek(int(table[0, 0]))
                view = buffer[(row - start) * layout.row_bytes : (last - start) * layout.row_bytes]
                while view:
                    count = fh.readinto(view)
                    if not count:
                        return None
                    view = view[count:]
        except FileNotFoundError:
            return None
        row = last
    return out


def raw_reads_enabled() -> bool:
    """MAXA_RAW_READS=0 sends bulk reads through zarr's codec pipelines (the benchmark's comparison)."""
    return os.environ.get("MAXA_RAW_READS", "1") != "0"


def raw_writes_enabled() -> bool:
    """MAXA_RAW_WRITES=0 sends every write through zarr-python (the benchmark's comparison)."""
    return os.environ.get("MAXA_RAW_WRITES", "1") != "0"


class BufferPool:
    """Whole-shard buffers handed out again once written.

    A fresh shard buffer (tens of MB at ViT-B sizes) costs the kernel a page fault and a zeroed page
    per 4 KiB on first touch, on the thread that fills it; at GPU extraction rates that is a core's
    worth of work. Reused buffers keep their pages. Partial shards (the last one) get fresh buffers
    and are not kept.
    """

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], rows: int, dtype: Any, keep: int) -> None:
        self.shapes = {name: (rows, *shape) for name, shape in shapes.items()}
        self.dtype = np.dtype(dtype)
        self.keep = keep
        self.free: queue.SimpleQueue[dict[str, np.ndarray]] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.kept = 0  # buffers waiting in `free`

    def take(self, rows: int) -> dict[str, np.ndarray]:
        """Buffers for a shard of `rows` rows (contents undefined)."""
        full = next(iter(self.shapes.values()))[0] if self.shapes else rows
        if rows == full:
            try:
                buffers = self.free.get_nowait()
            except queue.Empty:
                pass
            else:
                with self.lock:
                    self.kept -= 1
                return buffers
        return {name: np.empty((rows, *shape[1:]), self.dtype) for name, shape in self.shapes.items()}

    def give(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Return a written shard's buffers (ones this pool cannot reuse are dropped)."""
        reusable = set(arrays) == set(self.shapes) and all(
            a.shape == self.shapes[n] and a.dtype == self.dtype and a.base is None for n, a in arrays.items()
        )
        if not reusable:
            return
        with self.lock:
            if self.kept >= self.keep:
                return
            self.kept += 1
        self.free.put(dict(arrays))


class ShardWriter:
    """Writes finished shards on background threads so the producer never waits on storage.

    Each thread writes whole shards, the unit zarr is safe to write concurrently. The queue is
    bounded: if writing falls behind, the producer waits rather than buffering without limit.
    The first error stops further writes and is raised in `put` or `close`. `release` gets each
    shard's arrays back once they are no longer needed (written or dropped after an error).
    """

    def __init__(
        self,
        store: Store,
        threads: int = 2,
        depth: int = 2,
        release: Callable[[Mapping[str, np.ndarray]], None] | None = None,
    ) -> None:
        self.store = store
        self.release = release
        self.jobs: queue.Queue[tuple[int, Mapping[str, np.ndarray]] | None] = queue.Queue(
            maxsize=depth + threads
        )
        self.error: BaseException | None = None
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(max(1, threads))]
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            if self.error is None:
                try:
                    self.store.write_shard(*job)
                except BaseException as exc:  # surfaced in put()/close()
                    self.error = exc
            if self.release is not None:
                self.release(job[1])

    def put(self, shard: int, arrays: Mapping[str, np.ndarray]) -> None:
        if self.error is not None:
            raise self.error
        self.jobs.put((shard, arrays))

    def close(self, raise_errors: bool = True) -> None:
        """Finish the queued shards (they are complete, so worth keeping) and stop the threads."""
        for _ in self.threads:
            self.jobs.put(None)
        for thread in self.threads:
            thread.join()
        if raise_errors and self.error is not None:
            raise self.error


def write_threads(default: int = 2) -> int:
    """Writer threads: MAXA_WRITE_THREADS or `default` (two keep a local disk busy while one waits)."""
    value: Any = os.environ.get("MAXA_WRITE_THREADS", default)
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise MaxaError(f"MAXA_WRITE_THREADS must be an integer >= 1, got {value!r}")
    return threads
