"""Extraction's writer threads and shard buffers (extract/shard_writer.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from maxa.core.errors import MaxaError
from maxa.core.store import ArraySpec
from maxa.extract.shard_writer import BufferPool, ShardWriter, write_threads
from tests.kit.stores import empty_store

FEATURES = ArraySpec((3, 2, 5), "float16", ("image", "y", "x", "channel"))


def test_write_threads_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAXA_WRITE_THREADS", raising=False)
    assert write_threads() == 2
    monkeypatch.setenv("MAXA_WRITE_THREADS", "4")
    assert write_threads() == 4
    for bad in ("0", "two"):
        monkeypatch.setenv("MAXA_WRITE_THREADS", bad)
        with pytest.raises(MaxaError, match="MAXA_WRITE_THREADS"):
            write_threads()


def test_writer_error_is_raised_and_stops_later_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = empty_store(str(tmp_path / "s.zarr"), {"f": FEATURES}, 6, 2)
    data = {"f": np.random.default_rng(0).standard_normal((6, 3, 2, 5)).astype(np.float16)}
    real = store.write_shard

    def fail_on_one(shard: int, arrays: dict[str, np.ndarray]) -> None:
        if shard == 1:
            raise OSError("disk gone")
        real(shard, arrays)

    monkeypatch.setattr(store, "write_shard", fail_on_one)
    writer = ShardWriter(store, threads=1)
    writer.put(1, {name: x[2:4] for name, x in data.items()})
    with pytest.raises(OSError, match="disk gone"):
        writer.close()
    assert 1 in store.pending_shards()


def test_buffer_pool_reuses_written_shards_only() -> None:
    pool = BufferPool({"a": (2, 3), "b": (4,)}, rows=5, dtype=np.float16, keep=1)
    first, second = pool.take(5), pool.take(5)
    assert first["a"].shape == (5, 2, 3) and first["b"].shape == (5, 4) and first["a"].dtype == np.float16
    assert first["a"] is not second["a"]  # nothing given back yet: fresh buffers
    pool.give(first)
    again = pool.take(5)
    assert again["a"] is first["a"] and again["b"] is first["b"]  # the written shard's pages, reused
    pool.give(second)
    pool.give(again)  # beyond keep=1: dropped, so memory stays bounded
    assert pool.take(5)["a"] is second["a"]
    assert pool.take(5)["a"] is not again["a"]
    partial = pool.take(2)
    assert partial["a"].shape == (2, 2, 3)
    pool.give(partial)  # partial shards are never kept
    view = {"a": np.zeros((10, 2, 3), np.float16)[:5], "b": np.zeros((5, 4), np.float16)}
    pool.give(view)  # a caller's view: not the pool's to hand out
    assert pool.take(5)["a"] is not view["a"]


def test_writer_releases_each_shard_after_writing(tmp_path: Path) -> None:
    store = empty_store(str(tmp_path / "s.zarr"), {"f": FEATURES}, 6, 2)
    data = {"f": np.random.default_rng(0).standard_normal((6, 3, 2, 5)).astype(np.float16)}
    released: list[tuple[int, bool]] = []

    def release(arrays: dict[str, np.ndarray]) -> None:
        shard = int(arrays["f"][0, 0, 0, 0] == data["f"][2, 0, 0, 0])
        released.append((shard, bool(store.done_shards()[shard])))

    writer = ShardWriter(store, threads=1, release=release)
    for shard in (0, 1):
        a, b = store.shard_range(shard)
        writer.put(shard, {name: x[a:b] for name, x in data.items()})
    writer.close()
    assert released == [(0, True), (1, True)]  # handed back only once written and marked done
