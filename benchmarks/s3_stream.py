"""Streaming stage-two batches from an object store vs from local disk: the same store, the same loader.

Writes one target store (synthetic, `maxa prepare`) and one feature store (random float16 in the real
format) to local disk, copies both byte for byte into a bucket of moto's S3 server on loopback (started
and stopped here), then times the streaming loader (`probe/loader.py`, whole shards, a few windows read
ahead on --read-threads threads: what `maxa probe --loader stream` uses) over --epochs epochs from:

- local disk with a warm page cache, and cold (every file of both stores evicted with posix_fadvise
  DONTNEED before each epoch, so each epoch reads the disk);
- S3 through s3fs (MAXA_OBJECT_CLIENT=fsspec: aiobotocore + aiohttp on zarr's event loop);
- S3 through obstore (MAXA_OBJECT_CLIENT=obstore: core/store/objects.py, Rust's object_store).

Both S3 rows use maxa's object-store reads (core/store/fetch.py: a window's shards, every layer and the
targets, requested in one round trip, one GET per shard object, checked and decoded in the reader
thread). The rows run interleaved --repeats times; it prints the medians (samples/s, CPU ms per sample of
this process, all threads, and of the moto server), local / S3 within each repeat and their median, the
CPU ratio (reader + server over local: what a box whose cores are all busy approaches), and two ceilings:
every feature shard fetched at once, nothing decoded, by s3fs and by obstore. Loopback moto is a Python
server on the same cores as the reader: its CPU (~0.5 ms per sample here) is charged to S3 where a real
object store's would not be, and its latency is loopback's.

Measured 2026-12-07 on the 2-core VM while other engineers' suites ran, 512 images of 16x16x384 fp16
(6.3 MB shards of 32), batch 32, 4 read threads, prefetch 2, 4 epochs per timing, 3 repeats
(samples/s medians; local / S3 as the median of the per-repeat ratios):

| load         | warm | cold | s3fs | obstore | warm / s3fs | warm / obstore | CPU ratio s3fs; obstore |
|--------------|------|------|------|---------|-------------|----------------|-------------------------|
| 5.4 -> 12.8  |  490 |  597 |  186 |     289 |        2.52 |       **1.82** | 2.32; 1.89              |
| 12.8 -> 12.4 | 1066 |  775 |  217 |     373 |        5.59 |           2.64 | 4.13; 3.14              |
| 12.4 -> 12.6 |  963 |  688 |  226 |     404 |        4.25 |           2.13 | 3.38; 2.81              |

CPU ms per sample in those runs, local; s3fs + server; obstore + server: 0.74; 1.15 + 0.56; 0.84 + 0.55,
then 0.48; 1.32 + 0.65; 0.85 + 0.64, then 0.57; 1.28 + 0.66; 0.94 + 0.67. obstore's reader costs
0.1-0.4 ms per sample more than local disk's (s3fs 0.4-0.8); what stays is moto's own ~0.6 ms per sample
on the same two cores. The ceilings (every feature shard at once): s3fs 80-117 MB/s at 2.0-2.5 ms of
client CPU per MB, obstore 350-406 MB/s at 0.8 ms/MB. The load never fell below 4 in this session, so no
quiet-box run: under load the obstore loader was within 2x of warm local disk in one run of three (and
in a first 2-epoch run at load 5-6: 1.41, s3fs 3.54). Before obstore (2026-12-06, s3fs only, 2 epochs,
best of 2): local / S3 1.31 and 2.61 on a quiet box, 2.2-6.4 under load; one 6.3 MB GET cost s3fs +
aiobotocore + aiohttp ~11 ms of CPU on zarr's single event-loop thread. Reading 8-shard windows
(`read_blocks`, load 4-5), client CPU per shard: s3fs 18-23 ms, obstore 18 ms with glibc's defaults (1930
page faults per shard: its receive buffers) and 6-9 ms once core/store/memory.py keeps freed buffers
(43-105 faults), local disk 3-8 ms; moto 8-13 ms.

    python benchmarks/s3_stream.py                      # ~3-4 min on 2 cores
    python benchmarks/s3_stream.py --images 1024 --repeats 5 --train-steps 64
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.s3server (moto), benchmarks.*

from benchmarks.probe_throughput import _fake_features
from maxa.core.store.objects import CLIENT_ENV
from maxa.extract.targets import PrepareConfig, prepare
from maxa.probe.data import open_pair
from maxa.probe.loader import BatchOrder, StreamingLoader
from maxa.probe.tasks import get_task
from tests.s3server import _free_port, moto

Row = tuple[float, float, float]
"""samples/s, CPU ms per sample of this process, of the server."""


def _rate(features: str, targets: str, args: argparse.Namespace, server: int | None, cold: bool) -> Row:
    """Samples/s of the streaming loader over --epochs epochs, and the CPU milliseconds per sample this
    process (all its threads) and the server process spent meanwhile (user + sys). `cold`: local stores'
    pages are dropped from the page cache before each epoch."""
    task = get_task("semantic")
    pair = open_pair(features, targets, "-1", task.target)
    order = BatchOrder(pair.shard_ranges(), args.shuffle_shards, 0)
    loader = StreamingLoader(
        pair,
        task,
        order,
        args.batch_size,
        torch.device("cpu"),
        prefetch=args.prefetch,
        threads=args.read_threads,
    )
    per_epoch = args.images // args.batch_size
    elapsed = cpu = served = 0.0
    for epoch in range(args.epochs):
        if cold:
            _drop_pages(features, targets)
        batches = loader.batches(epoch)
        started, cpu0, served0 = time.perf_counter(), time.process_time(), _cpu_of(server)
        for _ in zip(range(per_epoch), batches, strict=False):
            pass
        elapsed += time.perf_counter() - started
        cpu += time.process_time() - cpu0
        served += _cpu_of(server) - served0
        batches.close()
    samples = args.epochs * per_epoch * args.batch_size
    return samples / elapsed, 1000 * cpu / samples, 1000 * served / samples


def _drop_pages(*stores: str) -> None:
    """Evict every file of the local stores from the page cache (posix_fadvise DONTNEED after fsync: no
    root needed), so the next read comes from the disk."""
    for store in stores:
        for path in Path(store).rglob("*"):
            if path.is_file():
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)


def _server_pid(port: str) -> int | None:
    """The moto server process listening on `port` (Linux /proc; None elsewhere: its CPU is not shown)."""
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"moto_server" in part for part in command) and port.encode() in command:
            return int(entry.name)
    return None


def _cpu_of(pid: int | None) -> float:
    """CPU seconds (user + sys) of process `pid` so far, 0 when unknown."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _train_rate(features: str, targets: str, out: Path, args: argparse.Namespace) -> float:
    from maxa.probe.train import ProbeConfig, train

    config = ProbeConfig(
        adapter="linear",
        iterations=args.train_steps,
        batch_size=args.batch_size,
        loader="stream",
        prefetch=args.prefetch,
        read_threads=args.read_threads,
        checkpoint_every=0,
        val_fraction=0.0,
    )
    return float(train(config, features, targets, str(out), progress=False)["samples_per_second"])


@dataclass(frozen=True)
class Plan:
    name: str
    features: str
    targets: str
    client: str  # MAXA_OBJECT_CLIENT for the row ("" for local disk)
    cold: bool = False


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--grid", type=int, default=16)
    parser.add_argument("--channels", type=int, default=384)
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shuffle-shards", type=int, default=8)
    parser.add_argument("--prefetch", type=int, default=2)
    parser.add_argument("--read-threads", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timings per row (medians shown)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per timing")
    parser.add_argument(
        "--train-steps", type=int, default=0, help="also time `maxa probe --loader stream` (linear) this long"
    )
    args = parser.parse_args()

    import s3fs

    from maxa.core.store.memory import keep_freed_buffers

    keep_freed_buffers()  # what the obstore rows turn on: on from the start, so every row has it alike

    root = Path(tempfile.mkdtemp(prefix="maxa-s3-stream-"))
    targets, features = str(root / "t.zarr"), str(root / "f.zarr")
    options = {"num_images": args.images, "image_size": 64, "num_classes": 4}
    prepare(
        PrepareConfig(label_size=64, shard_size=args.shard_size, options=options), targets, progress=False
    )
    _fake_features(targets, features, args.grid, args.channels, args.shard_size)
    mb = args.grid * args.grid * args.channels * 2 / 1e6
    print(
        f"{args.images} samples of {args.grid}x{args.grid}x{args.channels} fp16 ({mb:.2f} MB), shards of "
        f"{args.shard_size}, batch {args.batch_size}, {args.read_threads} read threads, prefetch "
        f"{args.prefetch}"
    )
    os.environ.update(
        AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1"
    )
    with moto(_free_port(), root / "moto.log") as endpoint:
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        fs = s3fs.S3FileSystem()
        fs.mkdir("bench")
        fs.put(targets, "bench/t.zarr", recursive=True)
        fs.put(features, "bench/f.zarr", recursive=True)
        server = _server_pid(endpoint.rsplit(":", 1)[1])
        plans = [
            Plan("local disk, warm page cache", features, targets, ""),
            Plan("local disk, cold (pages dropped)", features, targets, "", cold=True),
            Plan("S3 through s3fs", "s3://bench/f.zarr", "s3://bench/t.zarr", "fsspec"),
            Plan("S3 through obstore", "s3://bench/f.zarr", "s3://bench/t.zarr", "obstore"),
        ]
        runs: dict[str, list[Row]] = {plan.name: [] for plan in plans}
        for _ in range(args.repeats):  # interleaved, so a change of the box's load hits every row alike
            for plan in plans:
                os.environ[CLIENT_ENV] = plan.client or "auto"
                runs[plan.name].append(_rate(plan.features, plan.targets, args, server, plan.cold))
        paths = [p for p in fs.find("bench/f.zarr") if "/layer_" in p and "/c/" in p]
        ceilings = {
            "s3fs": _median([_s3fs_ceiling(fs, paths, server) for _ in range(args.repeats)]),
            "obstore": _median([_obstore_ceiling(endpoint, paths, server) for _ in range(args.repeats)]),
        }
        trained: dict[str, float] = {}
        if args.train_steps:
            for plan in (p for p in plans if not p.cold):  # training reads each shard again: warm
                os.environ[CLIENT_ENV] = plan.client or "auto"
                trained[plan.name] = _train_rate(
                    plan.features, plan.targets, root / f"{plan.client}.pt", args
                )
    _report(runs, ceilings, trained, mb, args.repeats)


def _median(rows: list[Row]) -> Row:
    return (
        statistics.median(r[0] for r in rows),
        statistics.median(r[1] for r in rows),
        statistics.median(r[2] for r in rows),
    )


def _report(
    runs: dict[str, list[Row]], ceilings: dict[str, Row], trained: dict[str, float], mb: float, repeats: int
) -> None:
    warm, cold, s3fs, obstore = runs
    print(
        f"\n{'source (median of ' + str(repeats) + ')':34s} {'samples/s':>10s} {'MB/s':>8s} "
        f"{'warm / this':>12s} {'CPU ms/sample':>24s}   (streaming loader)"
    )
    base = _median(runs[warm])[0]
    for name, rows in runs.items():
        rate, cpu, served = _median(rows)
        where = f"{cpu:5.2f} + server {served:4.2f}" if served else f"{cpu:5.2f}"
        print(f"{name:34s} {rate:10.0f} {rate * mb:8.0f} {base / rate:12.2f}    {where}")
    print("\nratios within each repeat (local / S3, samples/s):")
    ratios = []
    for i in range(repeats):
        w, c, f, o = (runs[name][i][0] for name in (warm, cold, s3fs, obstore))
        ratios.append((w / f, w / o, c / o))
        print(
            f"  run {i + 1}: warm / s3fs {w / f:5.2f}   warm / obstore {w / o:5.2f}   "
            f"cold / obstore {c / o:5.2f}"
        )
    mid = [statistics.median(r[k] for r in ratios) for k in range(3)]
    print(
        f"  median: warm / s3fs {mid[0]:5.2f}   warm / obstore {mid[1]:5.2f}   cold / obstore {mid[2]:5.2f}"
    )
    usage = {name: _median(rows) for name, rows in runs.items()}
    print(
        "CPU per sample, reader + server, over local disk warm (the ratio a box whose cores are all busy "
        f"approaches): s3fs {(usage[s3fs][1] + usage[s3fs][2]) / usage[warm][1]:.2f}, obstore "
        f"{(usage[obstore][1] + usage[obstore][2]) / usage[warm][1]:.2f}"
    )
    for name, (mb_s, cpu, served) in ceilings.items():
        print(
            f"ceiling, {name} fetching every feature shard at once (one GET each, nothing decoded): "
            f"{mb_s:.0f} MB/s, CPU {cpu:.1f} ms/MB + server {served:.1f} ms/MB"
        )
    print(f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} CPUs")
    if trained:
        print(
            f"\n{'source':34s} {'samples/s':>10s} {'warm / this':>12s}   (training, linear, --loader stream)"
        )
        for name, rate in trained.items():
            print(f"{name:34s} {rate:10.0f} {trained[warm] / rate:12.2f}")
    print("(goal: local / S3 <= 2)")


def _s3fs_ceiling(fs: object, paths: list[str], server: int | None) -> Row:
    """What s3fs and the server deliver for the feature shards with no reader in the way: MB/s, and CPU
    ms per MB of this process and of the server. Open-ended ranges: one GET per object (s3fs sends a
    HEAD first without one)."""
    started, cpu, served = time.perf_counter(), time.process_time(), _cpu_of(server)
    blobs = fs.cat_ranges(paths, [0] * len(paths), [None] * len(paths))  # type: ignore[attr-defined]
    return _per_mb(sum(len(b) for b in blobs), started, cpu, served, server)


def _obstore_ceiling(endpoint: str, paths: list[str], server: int | None) -> Row:
    """The same through obstore (every GET at once on one event loop)."""
    import obstore
    from obstore.store import S3Store

    store = S3Store("bench", endpoint=endpoint, region="us-east-1", client_options={"allow_http": True})

    async def one(path: str) -> object:
        got = await obstore.get_async(store, path.split("/", 1)[1])
        return await got.bytes_async()

    async def every() -> list[object]:
        return list(await asyncio.gather(*(one(p) for p in paths)))

    loop = asyncio.new_event_loop()  # asyncio.run: ~2 s of CPU per call with obstore, a loop kept is not
    loop.run_until_complete(every())
    started, cpu, served = time.perf_counter(), time.process_time(), _cpu_of(server)
    blobs: list[Any] = loop.run_until_complete(every())
    loop.close()
    return _per_mb(sum(len(b) for b in blobs), started, cpu, served, server)


def _per_mb(size: int, started: float, cpu: float, served: float, server: int | None) -> Row:
    mb = size / 1e6
    elapsed = time.perf_counter() - started
    return mb / elapsed, 1000 * (time.process_time() - cpu) / mb, 1000 * (_cpu_of(server) - served) / mb


if __name__ == "__main__":
    main()
