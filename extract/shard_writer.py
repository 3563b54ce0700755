"""Extraction's write pipeline: finished shards go to background writer threads, buffers are reused.

The bytes of each shard are laid out by the store contract (maxa.core.store: `Store.write_shard`, which
writes raw shards through maxa.core.store.raw); this module only keeps storage busy while the backbone
computes the next shard.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from maxa.core.errors import MaxaError

if TYPE_CHECKING:
    from maxa.core.store import Store


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
