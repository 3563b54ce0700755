"""Object-store reads of compressed arrays (core/store/fetch.py): whole shards decoded by maxa itself equal
zarr-python's reads bit for bit, every checksum is checked, and layouts it does not know go through zarr."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, GzipCodec, TransposeCodec, ZstdCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from maxa.core.errors import MaxaError
from maxa.core.store import ArraySpec, open_store, read_rows_together
from maxa.core.store import fetch as sf
from maxa.core.store import raw as sw
from maxa.core.store import read as st_read
from tests.kit.stores import empty_store, fill

N, SHARD = 11, 4  # three shards, the last one partial


def _url() -> str:
    return f"memory://fetch-{uuid.uuid4().hex[:8]}"


def _values(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal((N, *shape)).astype(dtype)
    return rng.integers(0, 200, (N, *shape)).astype(dtype)


def _array(codecs: list, dtype: str = "int32", shape: tuple[int, ...] = (5, 3), **kw: object) -> zarr.Array:
    """A sharded array written by zarr-python with the given inner codecs, in an fsspec memory store."""
    array = zarr.create_array(
        _url(),
        shape=(N, *shape),
        dtype=dtype,
        chunks=(1, *shape),
        shards=(SHARD, *shape),
        serializer=codecs[0],
        compressors=codecs[1:],
        **kw,  # type: ignore[arg-type]
    )
    array[:] = _values(dtype, shape)
    return array


RANGES = [(0, N), (0, 4), (1, 3), (3, 9), (8, 11), (10, 11)]


@pytest.mark.parametrize(
    "dtype, codec",
    [
        ("uint8", "blosc-lz4"),  # labels and ids: what maxa writes
        ("int32", "blosc-lz4"),  # instance ids
        ("float32", "blosc-lz4"),  # depth
        ("float16", "blosc-zstd"),
        ("float16", "zstd"),
        ("uint8", "blosc-lz4-bitshuffle"),
    ],
)
def test_maxa_stores_decode_like_zarr_python(dtype: str, codec: str) -> None:
    url = _url()
    store = empty_store(url, {"a": ArraySpec((6, 5), dtype, ("image", "y", "x"), codec=codec)}, N, SHARD)
    data = _values(dtype, (6, 5))
    fill(store, {"a": data})
    array = zarr.open_group(url, mode="r")["a"]
    assert sf.packed_shards(array) is not None  # decoded here, not by zarr
    for start, stop in RANGES:
        got = sf.read_rows_fetched(array, start, stop)
        assert got.dtype == data.dtype and got.dtype.isnative
        np.testing.assert_array_equal(got, array[start:stop])
        np.testing.assert_array_equal(got, data[start:stop])


@pytest.mark.parametrize(
    "codecs",
    [
        [BytesCodec(endian="big"), GzipCodec(), Crc32cCodec()],  # big-endian bytes, gzip
        [BytesCodec(endian="little"), ZstdCodec(level=1, checksum=True)],  # no crc32c (older stores)
        [BytesCodec(endian="little"), BloscCodec(cname="zstd", typesize=4), ZstdCodec(), Crc32cCodec()],
        [BytesCodec(endian="little"), Crc32cCodec()],  # uncompressed int32
    ],
)
def test_codec_chains_written_by_zarr_decode_equal(codecs: list) -> None:
    array = _array(codecs)
    assert sf.packed_shards(array) is not None
    for start, stop in RANGES:
        np.testing.assert_array_equal(sf.read_rows_fetched(array, start, stop), array[start:stop])


def test_unknown_layouts_go_through_zarr_and_still_equal() -> None:
    transposed = _array(
        [BytesCodec(endian="little"), Crc32cCodec()], filters=[TransposeCodec(order=(0, 2, 1))]
    )
    unsharded = zarr.create_array(_url(), shape=(N, 5, 3), dtype="int32", chunks=(2, 5, 3))
    unsharded[:] = _values("int32", (5, 3))
    for array in (transposed, unsharded):
        assert sf.packed_shards(array) is None
        for start, stop in RANGES:
            np.testing.assert_array_equal(sf.read_rows_fetched(array, start, stop), array[start:stop])


def test_chunks_the_shard_does_not_hold_read_as_the_fill_value() -> None:
    array = _array(
        [BytesCodec(endian="little"), BloscCodec(cname="lz4", typesize=4), Crc32cCodec()], fill_value=7
    )
    array[5] = 7  # an all-fill chunk zarr-python does not store (write_empty_chunks is off)
    key = sw._shard_key(array, 1)
    table = sw.shard_index_table(_get(array, key), SHARD, 1)
    assert int(table[1, 0]) == 2**64 - 1  # absent from the index
    np.testing.assert_array_equal(sf.read_rows_fetched(array, 4, 8), array[4:8])
    assert (sf.read_rows_fetched(array, 5, 6) == 7).all()


def _get(array: zarr.Array, key: str) -> np.ndarray:
    return sync(array.store.get(key, default_buffer_prototype())).as_numpy_array().view(np.uint8).copy()


def _put(array: zarr.Array, key: str, blob: np.ndarray | bytes) -> None:
    data = blob.tobytes() if isinstance(blob, np.ndarray) else blob
    sync(array.store.set(key, default_buffer_prototype().buffer.from_bytes(data)))  # a writable handle


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda b: b[:-100], "index fails its CRC32C"),  # cut short: the end is no index
        (lambda b: b[:50], "cut short"),
        (lambda b: _flip(b, len(b) - 10), "index fails its CRC32C"),
        (lambda b: _flip(b, 3), "row 0 of the shard fails its CRC32C"),
    ],
)
def test_damaged_shard_objects_are_refused_by_shard_and_row(damage: object, reason: str) -> None:
    array = _array([BytesCodec(endian="little"), BloscCodec(cname="lz4", typesize=4), Crc32cCodec()])
    key = sw._shard_key(array, 1)
    _put(array, key, damage(_get(array, key)))  # type: ignore[operator]
    np.testing.assert_array_equal(sf.read_rows_fetched(array, 0, 4), array[0:4])  # shard 0 intact
    with pytest.raises(sw.DamagedShard, match=reason) as refused:
        sf.read_rows_fetched(array, 2, 6)
    assert refused.value.shard == 1 and not refused.value.missing


def test_undecodable_chunk_without_a_checksum_is_refused() -> None:
    array = _array([BytesCodec(endian="little"), ZstdCodec(level=1)])
    key = sw._shard_key(array, 2)
    blob = _get(array, key)
    blob[0:8] = 0  # the zstd frame's magic number: no CRC32C to catch it, the decoder does
    _put(array, key, blob)
    with pytest.raises(sw.DamagedShard, match="row 0 of the shard cannot be decoded"):
        sf.read_rows_fetched(array, 8, 11)


def test_missing_object_is_reported_as_missing() -> None:
    array = _array([BytesCodec(endian="little"), BloscCodec(cname="lz4", typesize=4), Crc32cCodec()])
    sync(array.store.delete(sw._shard_key(array, 2)))
    with pytest.raises(sw.DamagedShard, match="its object is missing") as refused:
        sf.read_rows_fetched(array, 0, N)
    assert refused.value.shard == 2 and refused.value.missing


def _flip(blob: np.ndarray, at: int) -> np.ndarray:
    blob = blob.copy()
    blob[at] ^= 0x40
    return blob


def test_reads_together_equal_reads_one_by_one_and_name_damage(tmp_path: Path) -> None:
    """read_rows_together: object-store reads in one round trip, local ones as read_rows; same rows, same
    refusals (a damaged shard named by store, array and shard)."""
    specs = {
        "f": ArraySpec((3, 2), "float16", ("image", "y", "x")),  # raw shards
        "lz4": ArraySpec((4, 4), "uint8", ("image", "y", "x")),  # compressed
    }
    data = {"f": _values("float16", (3, 2)), "lz4": _values("uint8", (4, 4), seed=1)}
    local = fill(empty_store(str(tmp_path / "s.zarr"), specs, N, SHARD), data)
    remote = fill(empty_store(_url(), specs, N, SHARD), data)
    local, remote = open_store(local.url), open_store(remote.url)
    reads = [
        (store, name, rows)
        for store in (local, remote)
        for name in specs
        for rows in (slice(2, 9), np.arange(4, 8), np.array([9, 1, 2]), slice(0, 0))
    ]
    calls: list[int] = []
    fetch_rows = st_read.fetch_rows
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(st_read, "fetch_rows", lambda plans: calls.append(len(plans)) or fetch_rows(plans))
        together = read_rows_together(reads)
    # the four contiguous object-store reads at once; [9, 1, 2] by run (f) or by shard (lz4), as read_rows
    assert calls == [4, 1, 1, 1, 1]
    for (store, name, rows), got in zip(reads, together, strict=True):
        np.testing.assert_array_equal(got, store.read_rows(name, rows))
        np.testing.assert_array_equal(got, data[name][rows])
    for name in specs:
        writable = zarr.open_group(remote.url, mode="r+")[name]
        key = sw._shard_key(writable, 1)
        _put(writable, key, _flip(_get(writable, key), 3))
        with pytest.raises(
            MaxaError, match=rf"store {remote.url}: {name} shard 1 \(images 4-7\) is marked done"
        ):
            read_rows_together([(local, name, slice(0, N)), (remote, name, slice(3, 6))])
