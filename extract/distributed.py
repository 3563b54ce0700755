"""Scale-out extraction on dask.distributed: shard-aligned ranges, one store, many writers.

The client creates (or resumes) the store once, arrays and attributes included; then each task
opens it and runs `extract(..., shards=its_range)`, writing only its own shards. Zarr is safe for
concurrent writers only at shard granularity, so ranges that split a shard are refused. Workers run
torch with one thread each (a cluster of N one-thread workers, not N workers fighting over cores).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from tqdm import tqdm

from maxa.extract import store as st
from maxa.extract.config import ExtractConfig
from maxa.extract.errors import MaxaError

if TYPE_CHECKING:
    from dask.distributed import Client


def split_shards(shards: Sequence[int], parts: int) -> list[list[int]]:
    """Cut a list of shards into at most `parts` contiguous, nearly equal runs."""
    parts = max(1, min(parts, len(shards)))
    size, extra = divmod(len(shards), parts)
    out, start = [], 0
    for i in range(parts):
        stop = start + size + (i < extra)
        out.append(list(shards[start:stop]))
        start = stop
    return [run for run in out if run]


def shards_of_ranges(store: st.Store, ranges: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Image ranges [start, stop) -> the shards they cover; refused unless aligned to shard edges."""
    n, k = store.num_items, store.shard_size
    out = []
    for start, stop in ranges:
        if not 0 <= start < stop <= n:
            raise MaxaError(f"range {start}:{stop} is outside the store's 0:{n} images")
        if start % k or (stop % k and stop != n):
            raise MaxaError(
                f"range {start}:{stop} is not aligned to shards of {k} images in {store.url}; concurrent "
                f"writers are only safe per shard (use multiples of {k}, or {n} as the end)"
            )
        out.append(list(range(start // k, -(-stop // k))))
    flat = [s for run in out for s in run]
    if len(flat) != len(set(flat)):
        raise MaxaError("ranges overlap: two workers would write the same shard")
    return out


def _run_shards(
    config: ExtractConfig, targets_url: str, out: str, shards: list[int], torch_threads: int
) -> int:
    """One task on a worker: extract exactly these shards into the existing store."""
    import torch

    from maxa.extract.features import extract

    torch.set_num_threads(torch_threads)
    extract(config, targets_url, out, shards=shards, progress=False)
    return len(shards)


@contextlib.contextmanager
def _client(workers: int | None, scheduler: str | None) -> Iterator[Client]:
    from dask.distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=workers or 1,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def extract_distributed(
    config: ExtractConfig,
    targets_url: str,
    out: str,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    ranges: Sequence[tuple[int, int]] | None = None,
    tasks_per_worker: int = 1,
    torch_threads: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> st.Store:
    """Fill the feature store `out` on a dask cluster (a LocalCluster of `workers` processes, or the
    scheduler at `scheduler`). `ranges` (image [start, stop) pairs) overrides the automatic split."""
    from dask.distributed import as_completed

    from maxa.extract.features import extract

    if workers is not None and workers < 1:
        raise MaxaError(f"--workers must be >= 1, got {workers}")
    if workers is None and scheduler is None:
        raise MaxaError("distributed extraction needs --workers N or --scheduler ADDRESS")
    if out.startswith("memory://") or targets_url.startswith("memory://"):
        raise MaxaError("memory:// stores live in one process; workers need a shared path or URL")
    # The client creates the store (arrays + attributes) once, before any worker writes.
    store = extract(config, targets_url, out, overwrite=overwrite, shards=[], progress=False)
    pending = store.pending_shards()
    runs = None
    if ranges is not None:  # checked before any worker starts
        runs = [[s for s in run if s in set(pending)] for run in shards_of_ranges(store, ranges)]
    with _client(workers, scheduler) as client:
        if runs is None:
            slots = sum(client.nthreads().values()) if scheduler else (workers or 1)
            runs = split_shards(pending, slots * max(1, tasks_per_worker))
        futures = [
            client.submit(_run_shards, config, targets_url, out, run, torch_threads, pure=False)
            for run in runs
            if run
        ]
        with tqdm(
            total=len(pending), unit="shard", desc=f"extract on {len(futures)} tasks", disable=not progress
        ) as bar:
            for future in as_completed(futures):
                bar.update(future.result())
    return st.open_store(out, "features", require_complete=ranges is None)  # ranges may cover a part
