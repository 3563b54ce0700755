"""A sweep of K adapters in one pass vs the same K trained one after another, from the same store.

K = len(lrs) x len(seeds) (default 4 x 2 = 8), same iterations, batch size and data order. The wall
time of each path is measured in one run and printed as a ratio (the machine may be shared: only the
ratio of one run means something). Goal: >= 3x on CPU at the demo's settings (synthetic 256 images,
a random-init ViT-Ti at 128 px: 8x8x192 features, query grid 8, 400 iterations, batch 32).

Measured on the shared 2-core CPU (--threads 1 --iterations 100): one after another 41.6 s, loop 40.5 s
(1.03x), vmap 82.0 s (0.51x). On CPU the MAXA step is compute-bound (convolutions, bilinear resize and
loss at label resolution: > 90% of a step; the store read and batch gather are < 2%), so sharing the
read cannot give 3x there; vmap's grouped kernels are slower than the loop on CPU (auto picks loop).

    python benchmarks/sweep.py                                    # demo settings, CPU
    python benchmarks/sweep.py --sweep-modes vmap --iterations 100  # quicker, batched members only
    python benchmarks/sweep.py --device cuda --model vit_base_patch14_dinov2 --input-size 448 \\
        --images 1024 --iterations 300 --query-grid 28            # GPU, ViT-B/14-sized store
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from maxa.extract.config import ExtractConfig
from maxa.extract.features import extract
from maxa.extract.targets import PrepareConfig, prepare
from maxa.probe.config import ProbeConfig
from maxa.probe.train import train


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--model", default="vit_tiny_patch16_224")
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--label-size", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=400)
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
            "loader": "memory",
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

    print(f"one after another: {sequential:.1f} s")
    for mode, seconds in one_pass.items():
        print(f"one pass, --sweep-mode {mode}: {seconds:.1f} s -> speed-up {sequential / seconds:.2f}x")
    print("goal: >= 3x on CPU at the demo's settings")


if __name__ == "__main__":
    main()
