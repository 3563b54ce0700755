"""A sweep of K adapters in one pass vs the same K trained one after another, from the same store.

K = len(lrs) x len(seeds) (default 4 x 2 = 8), same iterations, batch size and data order. The wall
time of each path is measured in one run and printed as a ratio (the machine may be shared: only the
ratio of one run means something). The issue's goal: >= 3x on CPU at the demo's settings (synthetic
256 images, a random-init ViT-Ti at 128 px: 8x8x192 features, query grid 8, batch 32, 100 iterations
per member as in params.yaml), >= 6x on a GPU with a ViT-B/14-sized store.

It also measures, in the same run, the work a sweep does once instead of K times (open the stores,
target statistics, load the store, gather every batch) and prints the largest speed-up sharing it can
give (Amdahl: the rest is each member's own forward, backward and update), and the start of a Python
process with maxa imported, which K separate `maxa probe` runs (K DVC stages) pay K times.

Measured on the shared 2-core CPU (2026-12-02, defaults): one after another 17.9 s; one pass loop 1.04x,
parallel 1.15x, vmap 0.79x; shared work 5% of a run, so sharing can give at most 1.04x; as 8 processes
1.84x. Streaming a 28x28x192 store (`--input-size 448 --loader stream --iterations 50`): shared 10%,
bound 1.10x, loop 1.11x, parallel 1.30x. A member's own forward, backward and update dominate on CPU.

    python benchmarks/sweep.py                                        # demo settings, CPU
    python benchmarks/sweep.py --sweep-modes parallel --iterations 50  # quicker
    python benchmarks/sweep.py --device cuda --model vit_base_patch14_dinov2 --input-size 448 \\
        --images 1024 --iterations 300 --query-grid 28 --sweep-modes loop,vmap   # GPU, ViT-B/14 store
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from maxa.extract.config import ExtractConfig
from maxa.extract.features import extract
from maxa.extract.targets import PrepareConfig, prepare
from maxa.probe.config import ProbeConfig
from maxa.probe.inputs import loader_for, setup_run
from maxa.probe.tasks import get_task
from maxa.probe.train import train


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def shared_work(config: ProbeConfig, features: str, targets: str) -> float:
    """Seconds of the part of one run a sweep does once: stores, statistics, store load, every batch."""
    started = time.perf_counter()
    task = get_task(config.task, **config.task_options())
    run = setup_run(config, features, targets, task, config.layers())
    batches = loader_for(config, run.pair, task, run.device, run.holdout, progress=False).batches(0)
    try:
        for _ in range(config.iterations):
            next(batches)
    finally:
        batches.close()
    _sync(config.device)
    return time.perf_counter() - started


def process_start() -> float:
    """Seconds to start a Python process that imports maxa's training code (what each CLI run pays)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import maxa.pipelines.cli, maxa.probe.train"], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--model", default="vit_tiny_patch16_224")
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--label-size", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--query-grid", type=int, default=8)
    parser.add_argument("--task", default="semantic")
    parser.add_argument("--lrs", default="3e-4,1e-3,3e-3,1e-2")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument(
        "--sweep-modes",
        default="loop,parallel,vmap",
        help="comma-separated sweep modes to time (auto | loop | parallel | vmap)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--loader", default="memory", help="memory | stream (re-read the store every epoch)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        targets, features = str(root / "targets.zarr"), str(root / "features.zarr")
        options = {"num_images": args.images, "image_size": args.input_size, "num_classes": 4}
        prepare(
            PrepareConfig(label_size=args.label_size, shard_size=64, options=options), targets, progress=False
        )
        backbone = ExtractConfig(model=args.model, input_size=args.input_size, layers=[-1], batch_size=32)
        backbone.device = args.device
        extract(backbone, targets, features, progress=False)

        common = {
            "task": args.task,
            "iterations": args.iterations,
            "batch_size": args.batch_size,
            "query_grid": args.query_grid,
            "checkpoint_every": 0,
            "loader": args.loader,
            "device": args.device,
            "threads": args.threads,
            "data_seed": 0,
        }
        modes = [m.strip() for m in args.sweep_modes.split(",") if m.strip()]
        grid = {"sweep_lrs": args.lrs, "sweep_seeds": args.seeds, "val_fraction": 0.1}
        members = ProbeConfig(**common, **grid).members()
        print(f"K = {len(members)} members, {args.iterations} iterations each, device {args.device}")

        # Warm-up (lazy imports, kernel selection) so the first timed path is not charged for it.
        for mode in modes:
            warm = ProbeConfig(**{**common, "iterations": 3}, **grid, sweep_mode=mode)
            train(warm, features, targets, str(root / f"warm_{mode}.pt"), progress=False)

        one_pass = {}
        for mode in modes:
            sweep = ProbeConfig(**common, **grid, sweep_mode=mode)
            _sync(args.device)
            started = time.perf_counter()
            train(sweep, features, targets, str(root / f"sweep_{mode}.pt"), progress=False)
            _sync(args.device)
            one_pass[mode] = time.perf_counter() - started

        started = time.perf_counter()
        for i, member in enumerate(members):
            train(member, features, targets, str(root / f"member{i}.pt"), progress=False)
        _sync(args.device)
        sequential = time.perf_counter() - started
        shared = shared_work(members[0], features, targets)
        start = process_start()

    k = len(members)
    print(f"one after another: {sequential:.1f} s")
    for mode, seconds in one_pass.items():
        print(f"one pass, --sweep-mode {mode}: {seconds:.1f} s -> speed-up {sequential / seconds:.2f}x")
    bound = sequential / max(sequential - (k - 1) * shared, 1e-9)
    share = 100 * shared * k / sequential
    print(
        f"shared work per run: {shared:.2f} s of {sequential / k:.2f} s ({share:.0f}%)"
        f" -> sharing it {k} ways can give at most {bound:.2f}x; the rest is per-member compute"
    )
    best = min(one_pass.values(), default=float("nan"))
    separate = sequential + k * start
    print(
        f"as {k} separate processes (one `maxa probe` each, +{start:.1f} s start): {separate:.1f} s"
        f" vs one process {best + start:.1f} s -> {separate / (best + start):.2f}x"
    )
    print("goal: >= 3x on CPU at the demo's settings, >= 6x on a GPU with a ViT-B/14-sized store")


if __name__ == "__main__":
    main()
