"""Reads from object stores (s3, gcs, memory): every shard object a read touches requested at once, many
reads in one round trip through zarr's event loop, then checked and decoded in the caller's thread. The
requests go to the store's client: obstore for s3:// stores opened to read (core/store/objects.py), fsspec
otherwise.

Each request costs the object-store client a few milliseconds of Python, so a read asks for each shard
object once: whole (an open-ended range: s3fs sends a HEAD for the size first without one), or its index
and then the wanted byte range when less than half of it is wanted (uncompressed shards). The event loop
only moves bytes; checksums and decoding run in the thread that asked, so a busy reader never stalls the
transfers of the others. Uncompressed shards are laid out by `raw`; compressed ones in the layout maxa writes
(one image per inner chunk, the codecs `bytes` + Blosc/Zstd/Gzip + `crc32c`, the index last as bytes + crc32c)
are decoded here chunk by chunk with numcodecs, after each chunk's CRC32C (zarr-python, even handed the
whole object, decodes each chunk as its own asyncio task: ~15 ms for a 32-image label shard, mostly
scheduling). Any other layout is decoded by zarr-python from the fetched bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from numcodecs.abc import Codec
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, GzipCodec, ZstdCodec

from maxa.core.store.raw import (
    CRC_BYTES,
    MISSING,
    DamagedShard,
    RawShards,
    Span,
    _shard_key,
    check_rows,
    crc,
    index_size,
    raw_shards,
    row_sharding,
    row_table,
    shard_index_table,
    spans_of,
)


@dataclass(frozen=True)
class PackedShards:
    """Facts of an array whose shards hold one compressed (or plain) chunk per row, decodable here."""

    shard_rows: int
    item_shape: tuple[int, ...]
    dtype: np.dtype  # with the byte order the chunks are stored in
    decoders: tuple[Codec, ...]  # numcodecs codecs, in decoding order (the reverse of the codec list)
    checksum: bool
    fill_value: Any


def _decoder(codec: object) -> Codec | None:
    """The numcodecs codec that decodes what a zarr bytes-to-bytes codec encoded (decoding needs none of
    the encoder's settings: Blosc and Zstd frames describe themselves)."""
    import numcodecs

    if isinstance(codec, BloscCodec):
        return numcodecs.Blosc()
    if isinstance(codec, ZstdCodec):
        return numcodecs.Zstd()
    if isinstance(codec, GzipCodec):
        return numcodecs.GZip()
    return None


def packed_shards(array: zarr.Array) -> PackedShards | None:
    """The layout of `array` when this module can decode its shards, else None (zarr-python decodes).

    That is: sharding along the first axis only, one row per inner chunk, inner codecs `bytes`, then any
    of Blosc/Zstd/Gzip, then optionally `crc32c`, and the index stored last as bytes + crc32c.
    """
    sharding = row_sharding(array)
    if sharding is None:
        return None
    shape, shard = tuple(array.shape), tuple(array.shards or ())
    inner = list(sharding.codecs)
    checksum = isinstance(inner[-1], Crc32cCodec)
    if checksum:
        inner = inner[:-1]
    if not inner or not isinstance(inner[0], BytesCodec):
        return None
    decoders = [_decoder(codec) for codec in inner[1:]]
    if any(d is None for d in decoders):
        return None
    dtype = np.dtype(array.dtype)
    if dtype.kind not in "biuf":
        return None
    if dtype.itemsize > 1:
        if inner[0].endian is None:
            return None
        dtype = dtype.newbyteorder("<" if inner[0].endian.value == "little" else ">")
    fill = array.metadata.fill_value
    return PackedShards(
        int(shard[0]),
        shape[1:],
        dtype,
        tuple(d for d in reversed(decoders) if d is not None),
        checksum,
        fill,
    )


def decode_shard(blob: np.ndarray, layout: PackedShards, shard: int, first: int, out: np.ndarray) -> None:
    """Decode rows first..first + len(out) of one shard object (uint8) into `out`, every checksum checked.

    A chunk the index marks absent reads as the fill value (as in zarr); an index or chunk that fails its
    CRC32C, lies outside the object or does not decode raises DamagedShard.
    """
    table = shard_index_table(blob, layout.shard_rows, shard)
    body = len(blob) - (layout.shard_rows * 16 + CRC_BYTES)
    rows = out.reshape(len(out), -1)
    flat = rows.view(np.uint8)
    for i in range(len(out)):
        offset, length = (int(v) for v in table[first + i])
        if offset == int(MISSING) and length == int(MISSING):
            rows[i] = layout.fill_value
            continue
        if offset + length > body or length < (CRC_BYTES if layout.checksum else 0):
            raise DamagedShard(shard, f"row {first + i} of the shard lies outside the object")
        chunk = blob[offset : offset + length]
        if layout.checksum:
            chunk, stored = chunk[:-CRC_BYTES], chunk[-CRC_BYTES:]
            if crc(chunk) != int(stored.view("<u4")[0]):
                raise DamagedShard(shard, f"row {first + i} of the shard fails its CRC32C checksum")
        try:
            _decode_into(chunk, layout.decoders, flat[i])
        except Exception as exc:  # any codec's complaint means the bytes are not what was written
            raise DamagedShard(shard, f"row {first + i} of the shard cannot be decoded ({exc})") from None


def _decode_into(chunk: np.ndarray, decoders: Sequence[Codec], row: np.ndarray) -> None:
    """Run the bytes-to-bytes decoders on `chunk` and copy the result into `row`, which it must fill
    exactly (a decoder handed a larger buffer would not say that it fell short)."""
    data: Any = chunk
    for decoder in decoders:
        data = decoder.decode(data)
    got = data.reshape(-1).view(np.uint8) if isinstance(data, np.ndarray) else np.frombuffer(data, np.uint8)
    if len(got) != len(row):
        raise ValueError(f"{len(got)} bytes decoded where the row holds {len(row)}")
    row[:] = got


Read = tuple[zarr.Array, int, int]
"""Rows start..stop of an array."""


def fetch_rows(reads: Sequence[Read]) -> list[np.ndarray | Exception | None]:
    """The rows of each read, all fetched in one round trip, checked and decoded in this thread.

    Per read: the rows (native byte order); None where an uncompressed shard's index does not place the
    rows back to back (the caller reads through zarr); or the exception that refused it: DamagedShard
    for an object that is absent (`missing`), cut short or fails a checksum, ValueError/RuntimeError from
    zarr-python for a layout it decoded.
    """
    import asyncio

    from zarr.core.sync import sync

    plans = [_Plan(array, start, stop) for array, start, stop in reads]

    async def every() -> list[Any]:
        return list(await asyncio.gather(*(plan.fetch() for plan in plans), return_exceptions=True))

    out: list[np.ndarray | Exception | None] = []
    for plan, fetched in zip(plans, sync(every()), strict=True):
        if isinstance(fetched, BaseException):
            if not isinstance(fetched, Exception):
                raise fetched
            out.append(fetched)
            continue
        try:
            out.append(plan.finish(fetched))
        except (DamagedShard, ValueError, RuntimeError) as exc:
            out.append(exc)
    return out


def read_rows_fetched(array: zarr.Array, start: int, stop: int) -> np.ndarray:
    """array[start:stop] of an object-store array, whole shards fetched at once and decoded (one read of
    `fetch_rows`); raises what refused it."""
    got = fetch_rows([(array, start, stop)])[0]
    if isinstance(got, Exception):
        raise got
    if got is None:
        return np.asarray(array[start:stop])
    return got


class _Plan:
    """One read: what to request (per shard of the rows) and how to turn the bytes into rows."""

    def __init__(self, array: zarr.Array, start: int, stop: int) -> None:
        from zarr.core.buffer import default_buffer_prototype

        self.array, self.start, self.stop = array, start, stop
        self.proto = default_buffer_prototype()
        self.raw: RawShards | None = raw_shards(array)
        self.packed = packed_shards(array) if self.raw is None else None
        rows = int(array.shards[0]) if array.shards else int(array.chunks[0])
        self.shards = range(start // rows, (stop - 1) // rows + 1) if stop > start else range(0)
        self.rows = rows
        if self.raw is not None:
            self.out = np.empty((stop - start, *array.shape[1:]), self.raw.dtype.newbyteorder("<"))
            self.spans = spans_of(self.raw, start, stop, self.out)

    async def fetch(self) -> list[Any]:
        """Per shard: the bytes of the wanted rows (raw layouts; None: not back to back), else the object."""
        import asyncio

        if self.raw is not None:
            return list(await asyncio.gather(*(self._raw_span(self.raw, span) for span in self.spans)))
        return list(await asyncio.gather(*(self._whole(shard) for shard in self.shards)))

    async def _whole(self, shard: int) -> Any:
        from zarr.abc.store import OffsetByteRequest

        got = await self.array.store.get(_shard_key(self.array, shard), self.proto, OffsetByteRequest(0))
        if got is None:
            raise DamagedShard(shard, "its object is missing", missing=True)
        return got

    async def _raw_span(self, layout: RawShards, span: Span) -> np.ndarray | None:
        from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest

        shard, first, end, _ = span
        store, key, size = self.array.store, _shard_key(self.array, shard), index_size(layout)
        held = min(layout.shard_rows, int(self.array.shape[0]) - shard * layout.shard_rows)
        whole = 2 * (end - first) >= held
        got = await store.get(key, self.proto, OffsetByteRequest(0) if whole else SuffixByteRequest(size))
        if got is None:
            raise DamagedShard(shard, "its object is missing", missing=True)
        blob = got.as_numpy_array().view(np.uint8)
        if len(blob) < size:
            raise DamagedShard(shard, f"the object is cut short ({len(blob)} bytes)")
        table = row_table(blob[-size:], layout, span)
        if table is None:
            return None
        begin, length = int(table[0, 0]), (end - first) * layout.stride
        if whole:
            body = blob[begin : begin + length]
        else:
            part = await store.get(key, self.proto, RangeByteRequest(begin, begin + length))
            body = part.as_numpy_array().view(np.uint8) if part is not None else np.zeros(0, np.uint8)
        if len(body) != length:
            raise DamagedShard(shard, "the object is cut short")
        return body

    def finish(self, fetched: list[Any]) -> np.ndarray | None:
        """The rows from what `fetch` returned, every checksum checked (raises DamagedShard)."""
        if self.raw is not None:
            if any(body is None for body in fetched):
                return None
            layout = self.raw
            for (shard, first, end, target), body in zip(self.spans, fetched, strict=True):
                chunks = body.reshape(end - first, layout.stride)
                rows = target.reshape(end - first, layout.row_bytes)
                rows[:] = chunks[:, : layout.row_bytes]
                if layout.checksum:
                    check_rows(rows, np.ascontiguousarray(chunks[:, layout.row_bytes :]), shard, first)
            return self.out
        if self.packed is None:
            keys = [_shard_key(self.array, shard) for shard in self.shards]
            return _decode_with_zarr(self.array, self.start, self.stop, keys, fetched)
        out = np.empty((self.stop - self.start, *self.packed.item_shape), self.packed.dtype)
        for shard, blob in zip(self.shards, fetched, strict=True):
            a = max(self.start, shard * self.rows)
            b = min(self.stop, (shard + 1) * self.rows)
            part = out[a - self.start : b - self.start]
            decode_shard(
                blob.as_numpy_array().view(np.uint8), self.packed, shard, a - shard * self.rows, part
            )
        return out if out.dtype.isnative else out.astype(out.dtype.newbyteorder("="))


def _decode_with_zarr(
    array: zarr.Array, start: int, stop: int, keys: list[str], objects: list[Any]
) -> np.ndarray:
    """The fetched objects decoded by zarr-python from an in-memory copy of the array (other layouts)."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import MemoryStore

    memory: dict[str, Any] = dict(array.metadata.to_buffer_dict(default_buffer_prototype()))
    prefix = f"{array.path}/" if array.path else ""
    for key, blob in zip(keys, objects, strict=True):
        memory[key.removeprefix(prefix)] = blob
    local = zarr.open_array(MemoryStore(memory), mode="r")
    return np.asarray(local[start:stop])
