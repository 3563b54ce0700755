"""Every byte checked: each chunk's CRC32C is verified on every read path, a damaged or lost done shard is
refused by name, a resume rewrites exactly the damaged shards, and older stores without checksums still
read (and say so)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import google_crc32c
import numpy as np
import pytest
import zarr

from maxa.core.errors import MaxaError
from maxa.core.store import ArraySpec, Store, open_store
from maxa.core.store import raw as sw
from tests.kit.stores import empty_store

ARRAYS = {
    "f": ArraySpec((3, 2, 5), "float16", ("image", "y", "x", "channel")),  # raw shards (maxa's writer)
    "lz4": ArraySpec((4, 4), "uint8", ("image", "y", "x")),  # compressed: zarr-python / zarrs decode it
}
N, SHARD = 10, 4


def _data(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "f": rng.standard_normal((N, 3, 2, 5)).astype(np.float16),
        "lz4": rng.integers(0, 9, (N, 4, 4)).astype(np.uint8),
    }


def _create(url: str) -> Store:
    return empty_store(url, ARRAYS, N, SHARD, {"test": "integrity"})


def _fill(url: str, seed: int = 0) -> dict[str, np.ndarray]:
    store, data = _create(url), _data(seed)
    for shard in range(store.num_shards):
        a, b = store.shard_range(shard)
        store.write_shard(shard, {name: x[a:b] for name, x in data.items()})
    return data


def _shard_file(url: str, name: str, shard: int) -> Path:
    tail = "/0" * (3 if name == "f" else 2)
    return Path(url) / name / "c" / f"{shard}{tail}"


def _flip(path: Path, at: int) -> None:
    blob = bytearray(path.read_bytes())
    blob[at] ^= 0x40
    path.write_bytes(bytes(blob))


def _chunk_crcs(blob: bytes, shard_rows: int) -> list[bool]:
    """Independent check of the sharding spec + crc32c codec: each indexed chunk = bytes + CRC32C (LE)."""
    table = np.frombuffer(blob[-shard_rows * 16 - 4 : -4], "<u8").reshape(shard_rows, 2)
    ok = []
    for offset, nbytes in table.tolist():
        if offset == 2**64 - 1:
            continue
        chunk = blob[offset : offset + nbytes]
        ok.append(int.from_bytes(chunk[-4:], "little") == google_crc32c.value(chunk[:-4]))
    return ok


@pytest.fixture
def url(tmp_path: Path) -> str:
    return str(tmp_path / "s.zarr")


PATHS: dict[str, Callable[[pytest.MonkeyPatch], None]] = {
    "raw": lambda mp: mp.setenv("MAXA_RAW_READS", "1"),
    "zarrs": lambda mp: (mp.setenv("MAXA_RAW_READS", "0"), mp.setenv("MAXA_ZARRS", "1")),
    "zarr-python": lambda mp: (mp.setenv("MAXA_RAW_READS", "0"), mp.setenv("MAXA_ZARRS", "0")),
}


def test_every_chunk_carries_a_crc32c_that_zarr_itself_checks(url: str) -> None:
    _fill(url)
    for name in ARRAYS:
        for shard in range(3):
            assert all(_chunk_crcs(_shard_file(url, name, shard).read_bytes(), SHARD)), (name, shard)
    _flip(_shard_file(url, "f", 1), 7)
    plain = zarr.open_group(url, mode="r")["f"]  # a reader that knows nothing of maxa
    np.testing.assert_array_equal(plain[:4], _data()["f"][:4])
    with pytest.raises(ValueError, match="checksum"):
        plain[4:8]


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("name", sorted(ARRAYS))
def test_flipped_byte_refused_naming_store_array_shard_and_repair(
    url: str, monkeypatch: pytest.MonkeyPatch, path: str, name: str
) -> None:
    data = _fill(url)
    PATHS[path](monkeypatch)
    _flip(_shard_file(url, name, 1), 3)  # inside the first chunk's bytes (compressed or not)
    store = open_store(url)
    np.testing.assert_array_equal(store.read(name, slice(0, 4)), data[name][:4])  # shard 0 intact
    np.testing.assert_array_equal(store.read(name, slice(8, 10)), data[name][8:])
    for selection in (slice(None), slice(3, 6)):
        with pytest.raises(MaxaError) as refused:
            store.read(name, selection)
        message = str(refused.value)
        assert url in message and f"{name} shard 1 (images 4-7)" in message, message
        assert "`maxa extract`" in message and "\n" not in message


@pytest.mark.parametrize("path", sorted(PATHS))
def test_done_shard_without_its_object_is_refused_not_zero_filled(
    url: str, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    _fill(url)
    PATHS[path](monkeypatch)
    for name in ARRAYS:
        _shard_file(url, name, 2).unlink()  # what a partial copy or an interrupted pull leaves
    store = open_store(url)
    for name in ARRAYS:
        with pytest.raises(MaxaError, match=rf"{name} shard 2 \(images 8-9\) is marked done but its object"):
            store.read(name)
        with pytest.raises(MaxaError, match="object is missing"):
            store.read_rows(name, [1, 9])
    with pytest.raises(MaxaError, match="shard 2"):
        store.dask_array("f").sum().compute()


def test_truncated_shard_refused(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _fill(url)
    shard = _shard_file(url, "f", 0)
    shard.write_bytes(shard.read_bytes()[:100])
    for path in PATHS.values():
        path(monkeypatch)
        with pytest.raises(MaxaError, match=r"f shard 0 .* is marked done but"):
            open_store(url).read("f")


def test_memory_store_reads_whole_shards_and_checks_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Object stores take the remote raw path: one request per shard, every chunk's CRC checked."""
    url = "memory://integrity-test"
    data = _fill(url)
    store = open_store(url)
    node = store.array("f")
    np.testing.assert_array_equal(sw.read_rows_raw(node, 0, N), data["f"])
    np.testing.assert_array_equal(sw.read_rows_raw(node, 5, 6), data["f"][5:6])  # index + range request
    key = sw._shard_key(node, 1)
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    writable = zarr.open_group(url, mode="r+")
    blob = bytearray(sync(writable.store.get(key, default_buffer_prototype())).to_bytes())
    blob[5] ^= 1
    sync(writable.store.set(key, default_buffer_prototype().buffer.from_bytes(bytes(blob))))
    with pytest.raises(sw.DamagedShard, match="row 0 of the shard fails its CRC32C"):
        sw.read_rows_raw(node, 4, 8)
    with pytest.raises(MaxaError, match="f shard 1"):
        open_store(url).read("f")


def test_verify_reads_every_chunk_and_names_damaged_shards(url: str) -> None:
    _fill(url)
    assert open_store(url).problems() == []
    _flip(_shard_file(url, "f", 0), 2)
    _flip(_shard_file(url, "lz4", 2), 1)
    problems = open_store(url).problems()
    assert len(problems) == 2
    assert problems[0].startswith("f: shards 0 (row 0 of the shard fails its CRC32C checksum)")
    assert problems[1].startswith("lz4: shards 2 (it cannot be decoded")
    assert open_store(url).problems(check_values=False) == []  # layout only: no chunk read


def test_resume_rewrites_damaged_and_missing_shards_only(url: str) -> None:
    data = _fill(url)
    _flip(_shard_file(url, "f", 1), 11)
    _shard_file(url, "lz4", 2).unlink()
    intact = _shard_file(url, "f", 0).stat().st_mtime_ns
    resumed = _create(url)  # same inputs
    assert sorted(resumed.repaired) == [1, 2]
    assert resumed.pending_shards() == [1, 2]
    note = resumed.repair_note()
    assert note is not None and "[1, 2]" in note and url in note
    for shard in resumed.pending_shards():
        a, b = resumed.shard_range(shard)
        resumed.write_shard(shard, {name: x[a:b] for name, x in data.items()})
    assert _shard_file(url, "f", 0).stat().st_mtime_ns == intact  # untouched
    store = open_store(url)
    for name, x in data.items():
        np.testing.assert_array_equal(store.read(name), x)
    assert _create(url).repaired == {}  # nothing left to repair


def test_store_without_checksums_still_reads_and_says_unchecked(url: str) -> None:
    """A store written before maxa stored checksums: raw shards without the crc32c codec."""
    data = _fill(url)
    group = zarr.open_group(url, mode="r+")
    old = group.create_array(
        "f", shape=(N, 3, 2, 5), dtype="float16", chunks=(1, 3, 2, 5), shards=(SHARD, 3, 2, 5),
        dimension_names=ARRAYS["f"].dims, compressors=None, fill_value=0, overwrite=True,
    )  # fmt: skip
    old[:] = data["f"]
    layout = sw.raw_shards(old)
    assert layout is not None and not layout.checksum and layout.stride == 3 * 2 * 5 * 2
    store = open_store(url)
    assert store.unchecked_arrays() == ["f"]
    np.testing.assert_array_equal(store.read("f"), data["f"])  # the raw path reads the old layout
    np.testing.assert_array_equal(store.read("f", slice(3, 9)), data["f"][3:9])
    assert store.problems() == []
    resumed = _create(url)  # resuming an old store writes its old layout, still readable
    resumed.unflag([1])
    resumed.write_shard(1, {name: x[4:8] for name, x in data.items()})
    np.testing.assert_array_equal(open_store(url).read("f"), data["f"])
