"""Task protocol demo: short MAXA probes on a tiny synthetic store, primary metric per task.

Not a speed benchmark: it records what the task protocol changes do to the numbers. Run it once on
this checkout and once on an older one (e.g. `git archive <commit>` unpacked, with a `maxa/` folder of
symlinks to its stage folders first on PYTHONPATH) to get before/after numbers:

    python benchmarks/task_protocols.py /tmp/demo semantic:constant,semantic:cosine,boundary,centers,instance
    python benchmarks/task_protocols.py /tmp/demo --boundary-ratio     # boundary positive-pixel ratio

`task:schedule` picks a schedule where the checkout has the option, `task:field=value` sets a probe option
(e.g. `centers:center_decoders=shared`). Prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch

from maxa.evaluate.run import evaluate
from maxa.extract.config import ExtractConfig
from maxa.extract.datasets import build_dataset
from maxa.extract.features import extract
from maxa.extract.targets import PrepareConfig, prepare
from maxa.extract.transforms import instance_boundaries, resize_nearest
from maxa.probe.config import ProbeConfig
from maxa.probe.train import train


def boundary_ratio(images: int = 32) -> None:
    """Fraction of boundary pixels on synthetic instance maps resized to common label sizes."""
    dataset = build_dataset("synthetic", split="train")
    for size in (64, 224, 448):
        maps = [resize_nearest(dataset[i].targets["instances"], (size, size)) for i in range(images)]
        ratio = float(np.mean([instance_boundaries(m).mean() for m in maps]))
        print(json.dumps({"label_size": size, "boundary_positive_ratio": round(ratio, 4)}))


def probes(root: str, runs: list[str], iterations: int) -> None:
    urls = {}
    for split, count in (("train", 128), ("val", 32)):
        targets, features = f"{root}/targets_{split}.zarr", f"{root}/features_{split}.zarr"
        options = {"num_images": count}
        prepare(
            PrepareConfig(split=split, label_size=64, shard_size=32, options=options), targets, progress=False
        )
        model = ExtractConfig(
            model="vit_tiny_patch16_224", name="vit", input_size=128, layers=[-1], shard_size=32, device="cpu"
        )
        extract(model, targets, features, progress=False)
        urls[split] = (features, targets)
    fields = {f.name for f in dataclasses.fields(ProbeConfig)}
    for run in runs:
        task, _, schedule = run.partition(":")
        settings = {"task": task, "iterations": iterations, "query_grid": 8, "checkpoint_every": 0}
        if "=" in schedule:  # task:field=value sets a ProbeConfig field (e.g. centers:center_decoders=shared)
            key, _, value = schedule.partition("=")
            if key in fields:
                settings[key] = type(getattr(ProbeConfig(), key))(value)
        elif schedule and "schedule" in fields:
            settings["schedule"] = schedule
        started = time.perf_counter()
        checkpoint = f"{root}/{task}_{(schedule or 'default').replace('=', '-')}.pt"
        train(ProbeConfig(**settings), *urls["train"], checkpoint, progress=False)
        metrics = evaluate(checkpoint, *urls["val"], progress=False)
        name = metrics["primary"]["name"]
        row = {"run": run, "scores": metrics["scores"], "baseline": metrics["constant_baseline"].get(name)}
        print(json.dumps({**row, "primary": name, "seconds": round(time.perf_counter() - started)}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", help="folder for the stores and checkpoints")
    parser.add_argument("runs", nargs="?", default="semantic,boundary,centers,instance")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--boundary-ratio", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.boundary_ratio:
        boundary_ratio()
    else:
        probes(args.root, args.runs.split(","), args.iterations)


if __name__ == "__main__":
    main()
