"""Training batches from stores: all in (GPU) memory when the store fits, else streamed shard by shard.

Both loaders follow one `BatchOrder`: every epoch shuffles the feature store's shards, groups them into
windows of a few shards and shuffles the samples within each window; batches are consecutive slices of
that endless sample stream. The in-memory loader gathers those rows from memory, the streaming loader
reads each window's shards (whole shards, several threads, a few windows ahead) and slices the same rows,
so for a seed both yield the same batches. A batch's place in the stream depends only on its step, which
is what lets a resumed run continue exactly where it stopped.

Rows held out for validation (`holdout_rows`, chosen by a fraction and a seed) are dropped from every
window, so model selection never sees a sample the adapter was trained on.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from maxa.core.errors import MaxaError
from maxa.probe.data import StorePair
from maxa.probe.tasks import Task

Batch = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class Window:
    """A few shards read together and the order in which their samples are used."""

    shards: tuple[int, ...]
    rows: np.ndarray  # feature-store rows in training order
    local: np.ndarray  # the same samples as positions in the window's concatenated shards


class BatchOrder:
    """The endless, seeded sample stream shared by both loaders."""

    def __init__(
        self,
        shard_ranges: list[tuple[int, int]],
        window_shards: int,
        seed: int,
        exclude: np.ndarray | None = None,
    ) -> None:
        total = sum(b - a for a, b in shard_ranges)
        self.exclude = np.unique(np.asarray(exclude if exclude is not None else [], np.int64))
        if not shard_ranges or total - len(self.exclude) <= 0:
            raise ValueError("cannot draw batches from an empty store")
        self.shard_ranges = shard_ranges
        self.window_shards = max(1, window_shards)
        self.seed = seed
        self.num_items = total - len(self.exclude)

    def epoch(self, epoch: int) -> list[Window]:
        rng = np.random.default_rng([self.seed, epoch])
        shards = rng.permutation(len(self.shard_ranges))
        windows = []
        for first in range(0, len(shards), self.window_shards):
            group = tuple(int(s) for s in shards[first : first + self.window_shards])
            rows = np.concatenate([np.arange(*self.shard_ranges[s]) for s in group])
            local = rng.permutation(len(rows))
            if len(self.exclude):
                local = local[~np.isin(rows[local], self.exclude)]
            windows.append(Window(group, rows[local], local))
        return windows

    def windows_from(self, offset: int) -> Iterator[tuple[Window, int]]:
        """(window, samples of it to skip) from sample `offset` of the stream onwards, endlessly."""
        epoch, skip = divmod(offset, self.num_items)
        while True:
            for window in self.epoch(epoch):
                if skip >= len(window.rows):
                    skip -= len(window.rows)
                    continue
                yield window, skip
                skip = 0
            epoch += 1

    def rows(self, step: int, batch_size: int) -> np.ndarray:
        """The rows of batch `step` (what both loaders must yield for that step)."""
        out: list[np.ndarray] = []
        need = batch_size
        for window, skip in self.windows_from(step * batch_size):
            take = window.rows[skip : skip + need]
            out.append(take)
            need -= len(take)
            if need == 0:
                return np.concatenate(out)
        raise AssertionError("unreachable: the stream is endless")


def _tensor(array: np.ndarray, device: torch.device) -> Tensor:
    t = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


class InMemoryLoader:
    """Reads the store once (whole shards) and indexes batches in RAM, or in GPU memory on a GPU."""

    kind = "memory"

    def __init__(
        self,
        pair: StorePair,
        task: Task,
        order: BatchOrder,
        batch_size: int,
        device: torch.device,
        *,
        progress: bool = True,
    ) -> None:
        self.order, self.batch_size, self.device = order, batch_size, device
        h, w, c = pair.feature_shape
        features = np.empty((len(pair), h, w, c), np.float16)
        targets: list[np.ndarray] = []
        blocks = zip(pair.shard_ranges(), sequential_blocks(pair), strict=True)
        for (start, stop), (block, raw) in tqdm(
            blocks,
            total=len(pair.shard_ranges()),
            desc="load store",
            unit="shard",
            leave=False,
            disable=not progress,
        ):
            features[start:stop] = block
            targets.append(task.encode(raw, start))
        # On a CPU, batches are gathered with numpy (~30x torch's fp16 row gather); elsewhere on the device.
        self.features_np, self.targets_np = features, np.concatenate(targets)
        self.features = self.targets = torch.empty(0)
        if device.type != "cpu":
            self.features = torch.from_numpy(self.features_np).to(device)
            self.targets = torch.from_numpy(self.targets_np).to(device)
            del features  # free the host copy (a view would keep it alive)
            self.features_np = np.empty((0, h, w, c), np.float16)
            self.targets_np = np.empty((0, *self.targets_np.shape[1:]), self.targets_np.dtype)

    def batches(self, start_step: int = 0) -> Iterator[Batch]:
        """Batches of steps start_step, start_step + 1, ... (endless)."""
        pending: list[np.ndarray] = []
        have = 0
        for window, skip in self.order.windows_from(start_step * self.batch_size):
            left = window.rows[skip:]
            while len(left):
                take = left[: self.batch_size - have]
                pending.append(take)
                have += len(take)
                left = left[len(take) :]
                if have == self.batch_size:
                    rows = np.concatenate(pending)
                    if self.device.type == "cpu":
                        yield (
                            torch.from_numpy(self.features_np[rows]),
                            torch.from_numpy(self.targets_np[rows]),
                        )
                    else:
                        index = torch.from_numpy(rows).to(self.device)
                        yield self.features[index], self.targets[index]
                    pending, have = [], 0


class StreamingLoader:
    """Streams windows of whole shards from the store with background reads a few windows ahead."""

    kind = "stream"

    def __init__(
        self,
        pair: StorePair,
        task: Task,
        order: BatchOrder,
        batch_size: int,
        device: torch.device,
        *,
        prefetch: int = 2,
        threads: int = 4,
    ) -> None:
        self.pair, self.task, self.order = pair, task, order
        self.batch_size, self.device = batch_size, device
        self.prefetch, self.threads = max(1, prefetch), max(1, threads)

    def _read_shards(self, shards: tuple[int, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Features and encoded targets of the shards (from an object store: all in one round trip)."""
        ranges = [self.order.shard_ranges[shard] for shard in shards]
        blocks = self.pair.read_blocks(ranges)
        return [(x, self.task.encode(y, start)) for (x, y), (start, _) in zip(blocks, ranges, strict=True)]

    def _produce(self, start_step: int, out: queue.Queue, stop: threading.Event) -> None:
        """Reads the shards of the next windows while the current one is assembled, so an object store always
        has requests in flight (a window at a time left the connection idle between windows); reading ahead
        stops while the queue is full, so memory holds no more windows than before."""
        try:
            with ThreadPoolExecutor(self.threads, thread_name_prefix="maxa-read") as pool:
                pending: deque[tuple[Window, int, list[Future]]] = deque()
                windows = self.order.windows_from(start_step * self.batch_size)
                while not stop.is_set():
                    # windows held (queued + being read) stay at most prefetch + 1, as when reads were serial
                    while len(pending) + out.qsize() <= self.prefetch:
                        window, skip = next(windows)
                        # local disk: a shard per thread; an object store: the window's requests together
                        groups = [window.shards] if self.pair.remote else [(s,) for s in window.shards]
                        reads = [pool.submit(self._read_shards, group) for group in groups]
                        pending.append((window, skip, reads))
                    window, skip, reads = pending.popleft()
                    parts = [part for read in reads for part in read.result()]
                    features = np.concatenate([p[0] for p in parts])[window.local[skip:]]
                    targets = np.concatenate([p[1] for p in parts])[window.local[skip:]]
                    while not stop.is_set():
                        try:
                            out.put((features, targets), timeout=0.1)
                            break
                        except queue.Full:
                            continue
                for _, _, reads in pending:
                    for read in reads:
                        read.cancel()
        except BaseException as exc:  # handed to the consumer, which re-raises it
            out.put(exc)

    def batches(self, start_step: int = 0) -> Iterator[Batch]:
        """Batches of steps start_step, start_step + 1, ... (endless); stops its reader when closed."""
        windows: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        reader = threading.Thread(target=self._produce, args=(start_step, windows, stop), daemon=True)
        reader.start()
        carry_x: list[np.ndarray] = []
        carry_y: list[np.ndarray] = []
        have = 0
        try:
            while True:
                item = windows.get()
                if isinstance(item, BaseException):
                    raise item
                features, targets = item
                at = 0
                while at < len(features):
                    take = min(self.batch_size - have, len(features) - at)
                    carry_x.append(features[at : at + take])
                    carry_y.append(targets[at : at + take])
                    have, at = have + take, at + take
                    if have == self.batch_size:
                        x = carry_x[0] if len(carry_x) == 1 else np.concatenate(carry_x)
                        y = carry_y[0] if len(carry_y) == 1 else np.concatenate(carry_y)
                        carry_x, carry_y, have = [], [], 0
                        yield _tensor(x, self.device), _tensor(y, self.device)
        finally:
            stop.set()
            reader.join(timeout=10)


Loader = InMemoryLoader | StreamingLoader


def available_memory(device: torch.device) -> float:
    """Bytes free for a loaded store: free GPU memory on a GPU, available RAM otherwise (inf if unknown)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return float(free)
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return float("inf")


def store_bytes(pair: StorePair, task: Task) -> int:
    """Memory the in-memory loader needs: fp16 features plus encoded targets."""
    if len(pair) == 0:
        return 0
    start, _ = pair.shard_ranges()[0]
    encoded = task.encode(pair.read_targets(start, start + 1), start)
    return len(pair) * (pair.feature_bytes_per_item() + encoded.nbytes)


def make_loader(
    pair: StorePair,
    task: Task,
    *,
    batch_size: int,
    seed: int,
    device: torch.device,
    mode: str = "auto",
    memory_budget_gb: float = 8.0,
    shuffle_shards: int = 8,
    prefetch: int = 2,
    threads: int = 4,
    exclude: np.ndarray | None = None,
    progress: bool = True,
) -> Loader:
    """`mode` 'auto' loads the store when it fits in min(budget, 80% of free memory), else streams it.

    `exclude`: feature-store rows never drawn (the validation hold-out).
    """
    order = BatchOrder(pair.shard_ranges(), shuffle_shards, seed, exclude)
    if mode == "auto":
        budget = min(memory_budget_gb * 1e9, 0.8 * available_memory(device))
        mode = "memory" if store_bytes(pair, task) <= budget else "stream"
    if mode == "memory":
        return InMemoryLoader(pair, task, order, batch_size, device, progress=progress)
    return StreamingLoader(pair, task, order, batch_size, device, prefetch=prefetch, threads=threads)


def sequential_blocks(
    pair: StorePair, *, features: bool = True
) -> Iterator[tuple[np.ndarray | None, np.ndarray]]:
    """(features, raw targets) shard by shard in store order, the next shard read while this one is used."""
    ranges = pair.shard_ranges()

    def read(i: int) -> tuple[np.ndarray | None, np.ndarray]:
        start, stop = ranges[i]
        return (pair.read_features(start, stop) if features else None), pair.read_targets(start, stop)

    with ThreadPoolExecutor(1, thread_name_prefix="maxa-read") as pool:
        pending = pool.submit(read, 0) if ranges else None
        for i in range(len(ranges)):
            assert pending is not None
            block = pending.result()
            pending = pool.submit(read, i + 1) if i + 1 < len(ranges) else None
            yield block


def holdout_rows(num_items: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted feature-store rows held out for validation: round(fraction * N) rows drawn with `seed`.

    A function of (N, fraction, seed) only, so every member of a sweep and a member trained alone hold
    out the same rows.
    """
    if not 0.0 <= fraction < 1.0:
        raise MaxaError(f"--val-fraction must be in [0, 1), got {fraction}")
    count = round(fraction * num_items)
    if fraction > 0 and not 0 < count < num_items:
        raise MaxaError(
            f"--val-fraction {fraction} of {num_items} training samples leaves "
            f"{count} for validation and {num_items - count} for training; both need at least one"
        )
    rng = np.random.default_rng([seed, num_items])
    return np.sort(rng.permutation(num_items)[:count]).astype(np.int64)


def blocks_of_rows(
    pair: StorePair, rows: np.ndarray | None, *, keep: bool, features: bool = True
) -> Iterator[tuple[np.ndarray | None, np.ndarray]]:
    """`sequential_blocks` restricted to `rows` (keep=True: only those rows are read, in store order) or
    to every other row (keep=False)."""
    chosen = np.asarray(rows if rows is not None else [], np.int64)
    if keep:
        for _, block, raw in rows_by_shard(pair, np.sort(chosen), features=features):
            yield block, raw
        return
    for (start, stop), (block, raw) in zip(
        pair.shard_ranges(), sequential_blocks(pair, features=features), strict=True
    ):
        mask = ~np.isin(np.arange(start, stop), chosen)
        if not mask.any():
            continue
        yield (None if block is None else block[mask]), raw[mask]


def rows_by_shard(
    pair: StorePair, rows: np.ndarray, *, targets: np.ndarray | None = None, features: bool = True
) -> Iterator[tuple[np.ndarray, np.ndarray | None, np.ndarray]]:
    """Only `rows` (feature-store rows), grouped by feature shard, in the order given within a shard:
    (rows, features, raw targets). `targets`: the raw target maps of `rows`, already read (not re-read)."""
    rows = np.asarray(rows, np.int64)
    shards = rows // pair.features.shard_size
    for shard in np.unique(shards):
        where = np.flatnonzero(shards == shard)
        picked = rows[where]
        feats = pair.read_features_at(picked) if features else None
        raw = targets[where] if targets is not None else pair.read_targets_at(picked)
        yield picked, feats, raw
