"""The shared batch order, and the in-memory and streaming loaders that must follow it exactly."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch

from maxa.core import store as st
from maxa.core.store import read as st_read
from maxa.probe.data import StorePair, open_pair
from maxa.probe.loader import (
    BatchOrder,
    InMemoryLoader,
    StreamingLoader,
    blocks_of_rows,
    make_loader,
    sequential_blocks,
)
from maxa.probe.tasks import Task, fit_stats, get_task

CPU = torch.device("cpu")
RANGES = [(0, 16), (16, 32), (32, 48), (48, 64), (64, 80), (80, 90)]  # last shard short


def test_every_epoch_is_a_permutation_made_of_windows() -> None:
    order = BatchOrder(RANGES, window_shards=2, seed=3)
    first, second = order.epoch(0), order.epoch(1)
    for windows in (first, second):
        rows = np.concatenate([w.rows for w in windows])
        assert sorted(rows.tolist()) == list(range(90))
        for window in windows:
            assert len(window.shards) <= 2
            allowed = np.concatenate([np.arange(*RANGES[s]) for s in window.shards])
            assert set(window.rows.tolist()) == set(allowed.tolist())
            # `local` indexes the window's shards concatenated in order: the streaming loader's view.
            assert np.array_equal(allowed[window.local], window.rows)
    assert not np.array_equal(
        np.concatenate([w.rows for w in first]), np.concatenate([w.rows for w in second])
    )
    again = BatchOrder(RANGES, window_shards=2, seed=3).epoch(0)
    assert all(np.array_equal(a.rows, b.rows) for a, b in zip(first, again, strict=True))
    other = BatchOrder(RANGES, window_shards=2, seed=4).epoch(0)
    assert not all(np.array_equal(a.rows, b.rows) for a, b in zip(first, other, strict=False))


def test_rows_of_a_step_follow_the_stream_across_epochs() -> None:
    order = BatchOrder(RANGES, window_shards=3, seed=0)
    stream = np.concatenate([w.rows for e in range(3) for w in order.epoch(e)])
    for step in (0, 1, 7, 8, 13):  # 7 * 12 = 84: step 7 straddles the first epoch boundary
        assert np.array_equal(order.rows(step, 12), stream[step * 12 : (step + 1) * 12])
    windows = list(itertools.islice(order.windows_from(100), 2))
    assert windows[0][1] == 100 - 90 and windows[1][1] == 0


def _fitted(pair: StorePair) -> Task:
    """The instance task numbers instances across the training set: it needs its statistics first."""
    task = get_task("instance")
    fit_stats(task, (raw for _, raw in sequential_blocks(pair, features=False)), pair.num_classes)
    return task


def _pair(stores: dict[str, str], task: str = "instance", layers: str = "layer_0,layer_1") -> StorePair:
    return open_pair(stores["features_train"], stores["targets_train"], layers, get_task(task).target)


def _take(
    loader: InMemoryLoader | StreamingLoader, start: int, count: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    batches = loader.batches(start)
    try:
        return list(itertools.islice(batches, count))
    finally:
        batches.close()


@pytest.mark.parametrize(("batch_size", "window", "start"), [(12, 2, 0), (16, 1, 5), (40, 3, 2)])
def test_streaming_and_in_memory_batches_are_identical(
    stores: dict[str, str], batch_size: int, window: int, start: int
) -> None:
    pair = _pair(stores)
    task = _fitted(pair)
    order = BatchOrder(pair.shard_ranges(), window, seed=7)
    memory = _take(InMemoryLoader(pair, task, order, batch_size, CPU), start, 12)
    stream = _take(StreamingLoader(pair, task, order, batch_size, CPU, prefetch=1, threads=2), start, 12)
    features = np.concatenate([pair.read_features(a, b) for a, b in pair.shard_ranges()])
    for step, ((mx, my), (sx, sy)) in enumerate(zip(memory, stream, strict=True), start=start):
        assert mx.shape == (batch_size, 8, 8, 96) and mx.dtype == torch.float16
        assert torch.equal(mx, sx) and torch.equal(my, sy)
        assert np.array_equal(mx.numpy(), features[order.rows(step, batch_size)])


def test_targets_follow_sample_ids_when_stores_are_ordered_differently(
    stores: dict[str, str], feature_factory: object
) -> None:
    permuted = feature_factory("permuted.zarr", permute_ids=True, shard_size=8)  # type: ignore[operator]
    pair = open_pair(permuted, stores["targets_train"], "-1", "semantic")
    assert not np.array_equal(pair.target_rows, np.arange(len(pair)))
    task = get_task("semantic")
    order = BatchOrder(pair.shard_ranges(), 2, seed=0)
    (_, y), *_ = _take(StreamingLoader(pair, task, order, 16, CPU), 0, 1)
    targets = st.open_store(stores["targets_train"])
    ids, fids = targets.ids(), st.open_store(permuted).ids()
    for row, label in zip(order.rows(0, 16), y, strict=True):
        assert np.array_equal(label.numpy(), targets.read("semantic", ids.index(fids[row])))


def test_auto_mode_loads_when_the_store_fits_and_streams_otherwise(stores: dict[str, str]) -> None:
    pair = _pair(stores)
    task = _fitted(pair)
    common = {"batch_size": 8, "seed": 0, "device": CPU}
    assert make_loader(pair, task, memory_budget_gb=1.0, **common).kind == "memory"
    assert make_loader(pair, task, memory_budget_gb=1e-6, **common).kind == "stream"
    assert make_loader(pair, task, mode="stream", memory_budget_gb=1.0, **common).kind == "stream"


def test_reads_of_later_windows_overlap_the_current_one(stores: dict[str, str]) -> None:
    """An object store is slow per request: the reader keeps every thread busy across window boundaries
    (a window of 1 shard with 3 threads reads 3 shards at once), and the batches stay the same."""
    pair = _pair(stores)
    task = _fitted(pair)
    order = BatchOrder(pair.shard_ranges(), 1, seed=3)
    lock, state = threading.Lock(), {"now": 0, "most": 0}

    class Slow(StreamingLoader):
        def _read_shards(self, shards: tuple[int, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
            with lock:
                state["now"] += 1
                state["most"] = max(state["most"], state["now"])
            time.sleep(0.05)
            with lock:
                state["now"] -= 1
            return super()._read_shards(shards)

    slow = _take(Slow(pair, task, order, 8, CPU, prefetch=2, threads=3), 0, 10)
    plain = _take(InMemoryLoader(pair, task, order, 8, CPU), 0, 10)
    assert state["most"] == 3
    for (sx, sy), (mx, my) in zip(slow, plain, strict=True):
        assert torch.equal(sx, mx) and torch.equal(sy, my)


def _in_memory(url: str) -> str:
    """A byte-for-byte copy of a local store in fsspec's memory filesystem: an object store, no server."""
    fs = fsspec.filesystem("memory")
    folder = f"/loader-{uuid.uuid4().hex[:8]}/{Path(url).name}"
    for path in Path(url).rglob("*"):
        if path.is_file():
            fs.pipe(f"{folder}/{path.relative_to(url)}", path.read_bytes())
    return f"memory://{folder}"


@pytest.mark.parametrize("raw_reads", ["1", "0"])
def test_object_store_windows_come_in_one_round_trip_and_equal_local_disk(
    stores: dict[str, str], monkeypatch: pytest.MonkeyPatch, raw_reads: str
) -> None:
    """From an object store a window's shards (every layer and the targets) are one batch of requests;
    the batches are bit-equal to local disk's and to zarr-python's reads (MAXA_RAW_READS=0)."""
    local = _pair(stores)
    task = _fitted(local)
    remote = open_pair(
        _in_memory(stores["features_train"]),
        _in_memory(stores["targets_train"]),
        "layer_0,layer_1",
        task.target,
    )
    assert remote.remote and not local.remote
    batches = []
    calls: list[int] = []
    fetch_rows = st_read.fetch_rows
    monkeypatch.setattr(st_read, "fetch_rows", lambda reads: calls.append(len(reads)) or fetch_rows(reads))
    monkeypatch.setenv("MAXA_RAW_READS", raw_reads)
    for pair in (local, remote):
        order = BatchOrder(pair.shard_ranges(), 2, seed=5)
        batches.append(_take(StreamingLoader(pair, task, order, 12, CPU, prefetch=1, threads=2), 3, 10))
    for (lx, ly), (rx, ry) in zip(*batches, strict=True):
        assert torch.equal(lx, rx) and torch.equal(ly, ry)
    if raw_reads == "1":  # 2 shards x (2 layers + targets) a window
        assert calls and set(calls) <= {6, 3}  # the last window of an epoch may hold one shard
    else:
        assert calls == []


def test_reader_errors_reach_the_training_loop(stores: dict[str, str]) -> None:
    pair = _pair(stores)
    task = _fitted(pair)

    class Broken(StreamingLoader):
        def _read_shards(self, shards: tuple[int, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
            raise OSError(f"shards {shards} unreadable")

    loader = Broken(pair, task, BatchOrder(pair.shard_ranges(), 2, 0), 8, CPU)
    with pytest.raises(OSError, match="unreadable"):
        next(loader.batches(0))


def test_sequential_blocks_cover_the_store_in_order(stores: dict[str, str]) -> None:
    pair = _pair(stores, "semantic", "layer_0")
    blocks = list(sequential_blocks(pair))
    assert [len(raw) for _, raw in blocks] == [b - a for a, b in pair.shard_ranges()]
    stored = st.open_store(stores["features_train"]).read("layer_0")
    assert np.array_equal(np.concatenate([f for f, _ in blocks]), stored)


def test_kept_rows_are_read_alone_and_equal_the_full_read(
    stores: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The validation hold-out reads only its own rows (not whole shards), in store order, and they equal
    the same rows of a full sequential read."""
    pair = open_pair(stores["features_train"], stores["targets_train"], "layer_0", "semantic")
    rows = np.array([70, 3, 40, 5, 95])
    whole = [np.concatenate(parts) for parts in zip(*sequential_blocks(pair), strict=True)]
    asked: list[int] = []
    read = st.Store.read_rows

    def counted(self: st.Store, name: str, which: object, **kw: object) -> np.ndarray:
        picked = np.arange(len(pair))[which] if isinstance(which, slice) else np.asarray(which)
        asked.extend(int(v) for v in picked)
        return read(self, name, which, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(st.Store, "read_rows", counted)
    blocks = list(blocks_of_rows(pair, rows, keep=True))
    feats = np.concatenate([f for f, _ in blocks])
    raw = np.concatenate([r for _, r in blocks])
    order = np.sort(rows)
    assert np.array_equal(feats, whole[0][order]) and np.array_equal(raw, whole[1][order])
    assert len(asked) == 2 * len(rows)  # features and targets of the kept rows only
