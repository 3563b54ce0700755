"""Object-store reads of compressed arrays: whole shard objects fetched in one round trip, then decoded
and checked here, chunk by chunk with numcodecs.

zarr-python reads a compressed shard from an object store as an index request and one request per
chunk; handed the whole object in memory it still decodes each chunk as its own asyncio task (~15 ms for
a 32-image label shard, most of it scheduling). The layout maxa writes (one image per inner chunk, the
codecs `bytes` + Blosc/Zstd/Gzip + `crc32c`, the index last as bytes + crc32c) is simple enough to decode
directly: check the index's CRC32C, then each chunk's, then decompress it straight into its row of the
output. Any other layout goes through zarr-python from memory, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from numcodecs.abc import Codec
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, GzipCodec, ShardingCodec, ZstdCodec
from zarr.codecs.sharding import ShardingCodecIndexLocation

from maxa.core.store.raw import CRC_BYTES, MISSING, DamagedShard, _shard_key, crc, shard_index_table


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


def read_rows_fetched(array: zarr.Array, start: int, stop: int) -> np.ndarray:
    """array[start:stop] of an object-store array whose shards need decoding (compressed): every shard
    the rows touch fetched whole, all at once (one GET each, not an index and a request per chunk), then
    decoded here (`packed_shards` layouts) or by zarr-python from memory, checksums included.
    DamagedShard(missing=True) for an absent object.
    """
    from zarr.abc.store import OffsetByteRequest
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    rows = int(array.shards[0]) if array.shards else int(array.chunks[0])
    shards = range(start // rows, (stop - 1) // rows + 1)
    proto = default_buffer_prototype()
    keys = [_shard_key(array, shard) for shard in shards]

    async def fetch() -> list[Any]:
        import asyncio

        # an open-ended range: the whole object in one GET (s3fs asks for the size first without one)
        whole = OffsetByteRequest(0)
        return list(await asyncio.gather(*(array.store.get(key, proto, whole) for key in keys)))

    objects = sync(fetch())
    for shard, blob in zip(shards, objects, strict=True):
        if blob is None:
            raise DamagedShard(shard, "its object is missing", missing=True)
    layout = packed_shards(array)
    if layout is None:
        return _decode_with_zarr(array, start, stop, keys, objects)
    out = np.empty((stop - start, *layout.item_shape), layout.dtype)
    for shard, blob in zip(shards, objects, strict=True):
        a = max(start, shard * rows)
        b = min(stop, (shard + 1) * rows)
        part = out[a - start : b - start]
        decode_shard(blob.as_numpy_array().view(np.uint8), layout, shard, a - shard * rows, part)
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
