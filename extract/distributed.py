"""Scale-out extraction on dask.distributed: shard-aligned ranges, one store, many writers.

The client creates (or resumes) the store once, arrays and attributes included; then each task
opens it and runs `extract(..., shards=its_range)`, writing only its own shards. Zarr is safe for
concurrent writers only at shard granularity, so ranges that split a shard are refused. Workers run
torch with one thread each (a cluster of N one-thread workers, not N workers fighting over cores).

On a machine with GPUs, `--workers N` gives each local worker process its own GPU the way the dask
ecosystem does it (dask-cuda's LocalCUDACluster): the worker's nanny starts it with
CUDA_VISIBLE_DEVICES naming one device, so inside the worker that GPU is `cuda:0` and nothing else
is visible. The devices are the ones this process may use (its own CUDA_VISIBLE_DEVICES, else every
GPU), handed out in turn; more workers than GPUs share them round robin (said on stderr). Each GPU
worker decodes with its share of the machine's cores.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from tqdm import tqdm

from maxa.core import store as st
from maxa.core.errors import MaxaError
from maxa.extract.config import ExtractConfig

if TYPE_CHECKING:
    from dask.distributed import Client, SpecCluster


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


def visible_gpus(environ: Mapping[str, str], device_count: int) -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (indices or UUIDs)."""
    setting = environ.get("CUDA_VISIBLE_DEVICES")
    if setting is None:
        return [str(i) for i in range(device_count)]
    return [d.strip() for d in setting.split(",") if d.strip()]


def gpu_assignment(workers: int, gpus: Sequence[str]) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES of each of `workers` local workers: one GPU each, in turn (None: no GPU)."""
    if not gpus:
        return [None] * workers
    return [gpus[i % len(gpus)] for i in range(workers)]


def decode_workers_per_gpu_worker(workers: int, cpus: int) -> int:
    """DataLoader processes for each of `workers` GPU workers: the cores, less two each for the main
    loop and the writers, split evenly (at least one)."""
    return max(1, cpus // max(1, workers) - 2)


def _run_shards(
    config: ExtractConfig, targets_url: str, out: str, shards: list[int], torch_threads: int
) -> int:
    """One task on a worker: extract exactly these shards into the existing store."""
    import torch

    from maxa.extract.features import extract

    torch.set_num_threads(torch_threads)
    extract(config, targets_url, out, shards=shards, progress=False)
    return len(shards)


def _local_gpus(config: ExtractConfig) -> list[str]:
    """GPUs to spread local workers over: only when the device is left to maxa (auto/cuda)."""
    if config.device not in ("auto", "cuda"):
        return []
    import torch

    return visible_gpus(os.environ, torch.cuda.device_count())


@contextlib.contextmanager
def _client(workers: int | None, scheduler: str | None, gpus: Sequence[str] = ()) -> Iterator[Client]:
    from dask.distributed import Client, LocalCluster

    if scheduler:
        with connect(scheduler) as client:
            yield client
        return
    if gpus:
        with pinned_cluster(gpu_assignment(workers or 1, gpus)) as cluster, Client(cluster) as client:
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


def connect(scheduler: str, timeout: float | None = None) -> Client:
    """A client of the scheduler at `scheduler`; one line naming the address when it cannot be reached
    within `timeout` seconds (default: dask's `distributed.comm.timeouts.connect`)."""
    import dask.config
    from dask.distributed import Client
    from dask.utils import parse_timedelta

    if timeout is None:
        timeout = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"), default="s")
    try:
        return Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise MaxaError(
            f"cannot reach the dask scheduler at {scheduler} within {timeout:g} s ({reason}); "
            "start it with `dask scheduler` or check the address"
        ) from exc


def pinned_cluster(
    devices: Sequence[str | None], *, nthreads: int = 1, resources: Mapping[str, float] | None = None
) -> SpecCluster:
    """A local cluster whose worker i runs with CUDA_VISIBLE_DEVICES=devices[i] (None: left as is),
    `nthreads` task threads and the dask `resources` each worker offers."""
    from dask.distributed import Nanny, Scheduler, SpecCluster

    specs = {
        i: {
            "cls": Nanny,
            "options": {
                "nthreads": nthreads,
                "env": {"CUDA_VISIBLE_DEVICES": device} if device is not None else {},
                "resources": dict(resources or {}),
                "silence_logs": logging.ERROR,
            },
        }
        for i, device in enumerate(devices)
    }
    scheduler = {"cls": Scheduler, "options": {"dashboard_address": None}}
    return SpecCluster(workers=specs, scheduler=scheduler, silence_logs=logging.ERROR)


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
    gpus = _local_gpus(config) if scheduler is None else []
    if gpus:
        if (workers or 1) > len(gpus):
            tqdm.write(
                f"maxa extract: {workers} workers share {len(gpus)} GPUs ({', '.join(gpus)}) in turn",
                file=sys.stderr,
            )
        if config.num_workers is None:
            share = decode_workers_per_gpu_worker(workers or 1, os.cpu_count() or 1)
            config = dataclasses.replace(config, num_workers=share)
    with _client(workers, scheduler, gpus) as client:
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
