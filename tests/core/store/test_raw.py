"""The raw shard path (maxa.core.store.raw): zarr's exact bytes, atomic, concurrent-safe."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import google_crc32c
import numpy as np
import pytest
import zarr

from maxa.core.store import ArraySpec, Store, open_store
from maxa.core.store import raw as sw
from tests.kit.stores import empty_store

FEATURES = ArraySpec((3, 2, 5), "float16", ("image", "y", "x", "channel"))
ARRAYS = {
    "f": FEATURES,  # float16: stored raw, the fast path
    "raw8": ArraySpec((4, 4), "uint8", ("image", "y", "x"), codec="none"),  # raw, one-byte items
    "lz4": ArraySpec((4, 4), "uint8", ("image", "y", "x")),  # Blosc-lz4: through zarr-python
}


def _data(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 9, (n, 4, 4)).astype(np.uint8)
    return {"f": rng.standard_normal((n, 3, 2, 5)).astype(np.float16), "raw8": labels, "lz4": labels}


def _create(url: str, n: int, shard_size: int) -> Store:
    return empty_store(url, ARRAYS, n, shard_size, {"test": "shard writer"})


def _write_all(store: Store, data: dict[str, np.ndarray]) -> None:
    for shard in range(store.num_shards):
        a, b = store.shard_range(shard)
        store.write_shard(shard, {name: x[a:b] for name, x in data.items()})


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("n", "shard_size"), [(8, 4), (10, 4), (7, 3), (3, 8), (1, 1)])
def test_raw_writes_are_byte_identical_to_zarr_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int, shard_size: int
) -> None:
    data = _data(n)
    written = {}
    for raw in ("0", "1"):
        monkeypatch.setenv("MAXA_RAW_WRITES", raw)
        root = tmp_path / f"raw{raw}.zarr"
        _write_all(_create(str(root), n, shard_size), data)
        written[raw] = _files(root)
    assert written["1"].keys() == written["0"].keys()
    assert [k for k in written["0"] if written["0"][k] != written["1"][k]] == []
    # and every Zarr v3 reader sees the data: plain zarr-python and maxa's zarrs reads
    group = zarr.open_group(str(tmp_path / "raw1.zarr"), mode="r")
    for name, x in data.items():
        np.testing.assert_array_equal(group[name][:], x)
        np.testing.assert_array_equal(open_store(str(tmp_path / "raw1.zarr")).read(name), x)


def _decode_shard(blob: bytes, shard_size: int, item: tuple[int, ...], dtype: str) -> list[np.ndarray | None]:
    """Independent reading of the Zarr v3 sharding spec: the index (uint64 LE offset/nbytes per inner
    chunk, C order) sits at the end, followed by its CRC32C; 2**64-1 marks an absent chunk. Each chunk is
    its bytes followed by their CRC32C (the `crc32c` codec, little-endian)."""
    index_size = shard_size * 16
    body, index_bytes, crc = blob[: -index_size - 4], blob[-index_size - 4 : -4], blob[-4:]
    assert int.from_bytes(crc, "little") == google_crc32c.value(index_bytes)
    table = np.frombuffer(index_bytes, "<u8").reshape(shard_size, 2)
    out: list[np.ndarray | None] = []
    for offset, nbytes in table.tolist():
        if offset == nbytes == 2**64 - 1:
            out.append(None)
            continue
        chunk, stored = body[offset : offset + nbytes - 4], body[offset + nbytes - 4 : offset + nbytes]
        assert int.from_bytes(stored, "little") == google_crc32c.value(chunk)
        out.append(np.frombuffer(chunk, np.dtype(dtype).newbyteorder("<")).reshape(item))
    return out


def test_shard_objects_follow_the_sharding_spec(tmp_path: Path) -> None:
    n, shard_size = 7, 3  # the last shard holds one image of three
    data = _data(n)
    store = _create(str(tmp_path / "s.zarr"), n, shard_size)
    _write_all(store, data)
    for shard in range(store.num_shards):
        blob = (tmp_path / "s.zarr" / "f" / "c" / str(shard) / "0" / "0" / "0").read_bytes()
        rows = _decode_shard(blob, shard_size, (3, 2, 5), "float16")
        a, b = store.shard_range(shard)
        assert [r is not None for r in rows] == [i < b - a for i in range(shard_size)]
        for i, row in enumerate(rows[: b - a]):
            np.testing.assert_array_equal(row, data["f"][a + i])


def test_raw_layout_only_where_bytes_are_predictable(tmp_path: Path) -> None:
    store = _create(str(tmp_path / "s.zarr"), 6, 4)
    f = sw.raw_shards(store.array("f"))
    assert f is not None and (f.shard_rows, f.row_bytes) == (4, 3 * 2 * 5 * 2)
    assert sw.raw_shards(store.array("raw8")) is not None
    assert sw.raw_shards(store.array("lz4")) is None  # compressed: zarr-python encodes it
    plain = zarr.create_array(tmp_path / "unsharded.zarr", shape=(4, 3), chunks=(1, 3), dtype="float16")
    assert sw.raw_shards(plain) is None


def test_writes_not_covering_a_whole_shard_go_through_zarr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _create(str(tmp_path / "s.zarr"), 8, 4)
    node = store.array("f")
    calls: list[Path] = []
    real = sw._write_file
    monkeypatch.setattr(sw, "_write_file", lambda path, *a: calls.append(path) or real(path, *a))
    x = _data(8)["f"]
    sw.write_rows(node, 1, x[1:3])  # inside shard 0: zarr-python's read-modify-write
    assert calls == []
    sw.write_rows(node, 4, x[4:8])  # exactly shard 1: raw
    assert len(calls) == 1
    np.testing.assert_array_equal(node[1:3], x[1:3])
    np.testing.assert_array_equal(node[4:8], x[4:8])


def test_failed_write_leaves_neither_shard_nor_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _create(str(tmp_path / "s.zarr"), 4, 2)

    def full_disk(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sw.os, "replace", full_disk)
    data = _data(4)
    with pytest.raises(OSError, match="No space"):
        store.write_shard(0, {name: x[:2] for name, x in data.items()})
    assert store.pending_shards() == [0, 1]  # the done flag comes after the data
    shard_dir = tmp_path / "s.zarr" / "f" / "c" / "0" / "0" / "0"
    assert not shard_dir.exists() or list(shard_dir.iterdir()) == []


def test_rewrite_removes_a_killed_writers_temporary_file(tmp_path: Path) -> None:
    store = _create(str(tmp_path / "s.zarr"), 4, 2)
    shard_dir = tmp_path / "s.zarr" / "f" / "c" / "1" / "0" / "0"
    shard_dir.mkdir(parents=True)
    stale = shard_dir / f"0.{uuid.uuid4().hex}{sw.PARTIAL}"
    stale.write_bytes(b"cut off by kill -9")
    other = shard_dir / "unrelated.txt"  # not one of this shard's temporary files: kept
    other.write_bytes(b"x")
    data = _data(4)
    store.write_shard(1, {name: x[2:] for name, x in data.items()})
    assert sorted(p.name for p in shard_dir.iterdir()) == ["0", "unrelated.txt"]
    np.testing.assert_array_equal(store.array("f")[2:], data["f"][2:])


def test_memory_store_gets_the_same_bytes(tmp_path: Path) -> None:
    n, shard_size = 5, 2
    data = _data(n)
    url = f"memory://maxa-test-{uuid.uuid4().hex}/s.zarr"
    memory = _create(url, n, shard_size)
    _write_all(memory, data)
    local = _create(str(tmp_path / "s.zarr"), n, shard_size)
    _write_all(local, data)
    for shard in range(memory.num_shards):
        key = f"f/c/{shard}/0/0/0"
        blob = zarr.core.sync.sync(memory.group.store.get(key, zarr.core.buffer.default_buffer_prototype()))
        assert blob is not None and blob.to_bytes() == (tmp_path / "s.zarr" / key).read_bytes()
    np.testing.assert_array_equal(open_store(url).read("f"), data["f"])


_WORKER = """
import sys
import numpy as np
from maxa.core.store import open_store
url, first, step, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
store = open_store(url, writable=True, require_complete=False)
rng = np.random.default_rng(0)
x = rng.standard_normal((n, 3, 2, 5)).astype(np.float16)
for shard in range(first, store.num_shards, step):
    a, b = store.shard_range(shard)
    store.write_shard(shard, {"f": x[a:b]})
"""


def test_concurrent_process_writers_of_interleaved_shards_are_exact(tmp_path: Path) -> None:
    n, shard_size = 23, 2
    url = str(tmp_path / "concurrent.zarr")
    empty_store(url, {"f": FEATURES}, n, shard_size)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, url, str(k), "2", str(n)], env=env) for k in (0, 1)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    expected = np.random.default_rng(0).standard_normal((n, 3, 2, 5)).astype(np.float16)
    store = open_store(url)
    assert store.problems() == []
    np.testing.assert_array_equal(store.read("f"), expected)
    serial = tmp_path / "serial.zarr"
    reference = empty_store(str(serial), {"f": FEATURES}, n, shard_size)
    os.environ["MAXA_RAW_WRITES"] = "0"
    try:
        for shard in range(reference.num_shards):
            a, b = reference.shard_range(shard)
            reference.write_shard(shard, {"f": expected[a:b]})
    finally:
        del os.environ["MAXA_RAW_WRITES"]
    ours, theirs = _files(tmp_path / "concurrent.zarr" / "f"), _files(serial / "f")
    assert ours == theirs


@pytest.mark.parametrize("raw_writes", ["0", "1"])
def test_raw_reads_equal_zarr_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, raw_writes: str) -> None:
    """Bulk reads straight from the shard files give zarr's values for any contiguous rows, whoever wrote
    the shards (zarr-python's own uncompressed shards have the same layout)."""
    monkeypatch.setenv("MAXA_RAW_WRITES", raw_writes)
    n, shard_size = 10, 4
    data = _data(n)
    store = _create(str(tmp_path / "s.zarr"), n, shard_size)
    _write_all(store, data)
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    for name in ("f", "raw8"):
        for start, stop in [(0, n), (3, 9), (4, 8), (5, 6), (n - 1, n), (2, n)]:
            got = sw.read_rows_raw(store.array(name), start, stop)
            assert got is not None, (name, start, stop)
            np.testing.assert_array_equal(got, group[name][start:stop])
            np.testing.assert_array_equal(got, data[name][start:stop])
    assert sw.read_rows_raw(store.array("lz4"), 0, n) is None  # compressed: zarr decodes it
    reader = open_store(str(tmp_path / "s.zarr"))
    for enabled in ("1", "0"):  # Store.read takes the raw path or zarr's, same values
        monkeypatch.setenv("MAXA_RAW_READS", enabled)
        np.testing.assert_array_equal(reader.read("f"), data["f"])
        np.testing.assert_array_equal(reader.read("f", slice(1, 7)), data["f"][1:7])


def test_raw_reads_refuse_damaged_or_missing_shards(tmp_path: Path) -> None:
    """A shard whose index fails its CRC32C, or that is absent, is refused by shard; its neighbours read."""
    n, shard_size = 8, 4
    store = _create(str(tmp_path / "s.zarr"), n, shard_size)
    _write_all(store, _data(n))
    array = store.array("f")
    shard = tmp_path / "s.zarr" / sw._shard_key(array, 1)
    blob = bytearray(shard.read_bytes())
    blob[-1] ^= 0xFF  # the index checksum
    shard.write_bytes(bytes(blob))
    assert sw.read_rows_raw(array, 0, 4) is not None  # shard 0 is intact
    with pytest.raises(sw.DamagedShard, match="index fails its CRC32C") as damaged:
        sw.read_rows_raw(array, 2, 6)
    assert damaged.value.shard == 1 and not damaged.value.missing
    shard.unlink()
    with pytest.raises(sw.DamagedShard, match="missing") as missing:
        sw.read_rows_raw(array, 4, 8)
    assert missing.value.missing
