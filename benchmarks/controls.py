"""What every task scores from features that encode the truth, from noise, from position alone, and the
constant: the controls table of issue 20, reproducible.

The feature stores are written by hand through the store contract (docs/store.md), at the patch grid of
the demo's backbones (128-px images, 16-px patches: 8x8):
- truth: per patch, the class fractions, a random 16-d code per object (the mean over the patch's pixels;
  a new code per object, so instance identity is there but not a fixed label), the mean log depth and the
  boundary fraction;
- noise: iid N(0, 1) (extract/controls.py `noise`), 64 channels;
- position: the sin-cos codes of the patch position (extract/controls.py `position_codes`), 64 channels.
Each task is probed with the demo's probe settings (params.yaml: sweep, iterations, query grid) unless
overridden, and scored on the held-out split with `maxa evaluate`'s code. One JSON line per run, then a
Markdown table:

    python benchmarks/controls.py /tmp/controls                                  # the demo's scale
    python benchmarks/controls.py /tmp/controls-fine --label-size 128 --query-grid 16 --iterations 200
    python benchmarks/controls.py /tmp/controls-big --tasks instance --train-images 1024 --iterations 400
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from maxa.core import store as st
from maxa.evaluate.intervals import evaluate_with_uncertainty
from maxa.extract.controls import noise, position_codes
from maxa.extract.handwritten import write_feature_store
from maxa.extract.targets import PrepareConfig, prepare
from maxa.pipelines.params import load_params
from maxa.probe.train import train

GRID = 8
CODE = 16  # channels of an object's random code
CHANNELS = 64  # of the noise and position stores
EXTRAS = {
    "boundary": ("precision", "recall"),
    "instance": ("ari_fg", "pair_auc"),
    "centers": ("ap", "ap50"),
    "depth": ("abs_rel",),
    "semantic": ("pixel_accuracy",),
}


def patches(maps: np.ndarray, grid: int) -> np.ndarray:
    """(n, L, L, ...) -> (n, grid, grid, p*p, ...): the label pixels under each patch."""
    n, size = maps.shape[:2]
    p = size // grid
    rest = maps.shape[3:]
    blocks = maps.reshape(n, grid, p, grid, p, *rest).swapaxes(2, 3)
    return blocks.reshape(n, grid, grid, p * p, *rest)


def truth_features(targets: st.Store, num_classes: int, split_seed: int) -> np.ndarray:
    semantic = np.asarray(targets.array("semantic")[:]).astype(np.int64)
    instances = np.asarray(targets.array("instances")[:]).astype(np.int64)
    depth = np.asarray(targets.array("depth")[:]).astype(np.float64)
    boundary = np.asarray(targets.array("boundary")[:]).astype(np.float64)
    classes = np.eye(num_classes + 1)[np.where(semantic == 255, 0, semantic)]  # (n, L, L, K+1)
    rng = np.random.default_rng(split_seed)
    codes = rng.standard_normal((len(instances), int(instances.max()) + 1, CODE))
    codes[:, 0] = 0.0  # background: no object code
    object_code = codes[np.arange(len(instances))[:, None, None], instances]  # (n, L, L, CODE)
    log_depth = np.log(np.where(depth > 0, depth, 1.0))
    parts = [
        patches(classes, GRID).mean(3) * 3.0,
        patches(object_code, GRID).mean(3),
        patches(log_depth, GRID).mean(3)[..., None],
        patches(boundary, GRID).mean(3)[..., None] * 3.0,
    ]
    return np.concatenate(parts, axis=-1)


def write_store(targets_url: str, out: str, kind: str, num_classes: int, seed: int) -> str:
    targets = st.open_store(targets_url, "targets")
    n = len(targets.ids())
    if kind == "truth":
        values = truth_features(targets, num_classes, seed)
    elif kind == "noise":
        values = np.stack([noise((GRID, GRID, CHANNELS), row, "layer_0", seed) for row in range(n)])
    else:
        values = np.broadcast_to(position_codes((GRID, GRID, CHANNELS)), (n, GRID, GRID, CHANNELS))
    provenance = {
        "model": f"hand-written:{kind}",
        "name": kind,
        "weights": "truth" if kind == "truth" else f"control:{kind}",
        "input_size": [128, 128],
        "patch_size": [128 // GRID, 128 // GRID],
        "backbone_params": 0,
    }
    write_feature_store(targets_url, out, {"layer_0": values}, provenance, shard_size=64)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--tasks", default="semantic,depth,boundary,instance,centers")
    parser.add_argument("--stores", default="truth,noise,position")
    parser.add_argument("--label-size", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--train-images", type=int, default=None)
    parser.add_argument("--test-images", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--query-grid", type=int, default=None)
    args = parser.parse_args()
    params = load_params(Path(args.params))
    entry = params.datasets["synthetic"]
    options = dict(entry.options)
    if args.image_size:
        options["image_size"] = args.image_size
    counts = {"train": args.train_images or entry.train_images, "val": args.test_images or entry.test_images}
    label = args.label_size or int(entry.label_size)
    root = Path(args.root)
    urls: dict[str, dict[str, str]] = {}
    for split in ("train", "val"):
        targets = str(root / f"targets_{split}.zarr")
        if not Path(targets).exists():
            config = PrepareConfig(
                split=split, label_size=label, shard_size=64, options={**options, "num_images": counts[split]}
            )
            prepare(config, targets, progress=False)
        urls[split] = {"targets": targets}
        for kind in args.stores.split(","):
            out = str(root / f"{kind}_{split}.zarr")
            if not Path(out).exists():
                write_store(
                    targets, out, kind, int(options.get("num_classes", 4)), seed=1 if split == "val" else 0
                )
            urls[split][kind] = out
    table: dict[str, dict[str, Any]] = {}
    for task in args.tasks.split(","):
        run = next(r for r in params.tasks.values() if r.config.task == task)
        overrides: dict[str, Any] = {"checkpoint_every": 0}
        if args.iterations:
            overrides["iterations"] = args.iterations
        if args.query_grid:
            overrides["query_grid"] = args.query_grid
        config = dataclasses.replace(run.config, **overrides)
        for kind in args.stores.split(","):
            started = time.perf_counter()
            out = str(root / f"{task}_{kind}.pt")
            meta = train(
                config, urls["train"][kind], urls["train"]["targets"], out, progress=False, overwrite=True
            )
            metrics = evaluate_with_uncertainty(
                out, urls["val"][kind], urls["val"]["targets"], progress=False
            )
            primary = metrics["primary"]["name"]
            selection = metrics["protocol"].get("selection") or {}
            chosen = next(
                (m["val_loss"] for m in (meta.sweep or {}).get("members", []) if m["run_id"] == meta.run_id),
                None,
            )
            row = {
                "task": task,
                "store": kind,
                "metric": primary,
                "value": metrics["scores"].get(primary),
                "constant": metrics["constant_baseline"].get(primary),
                **{k: metrics["scores"].get(k) for k in EXTRAS.get(task, ())},
                "worse_than_constant_on_holdout": selection.get("worse_than_constant"),
                "val_loss": chosen,
                "constant_val_loss": selection.get("constant_val_loss"),
                "seconds": round(time.perf_counter() - started, 1),
            }
            print(json.dumps(row), flush=True)
            table.setdefault(task, {"metric": primary, "constant": row["constant"]})[kind] = row
    print(
        f"\nlabel {label} px, query grid {config.query_grid}, {config.iterations} iterations, "
        f"{counts['train']} train / {counts['val']} test images"
    )
    kinds = args.stores.split(",")
    print("| task | " + " | ".join(kinds) + " | constant | extras |")
    print("|---|" + "---|" * (len(kinds) + 2))
    for task, cells in table.items():

        def fmt(v: Any) -> str:
            return "" if v is None else f"{v:.3f}"

        extras = "; ".join(
            f"{k}: " + " / ".join(fmt(cells[s].get(k)) for s in kinds) for k in EXTRAS.get(task, ())
        )
        print(
            f"| {task} {cells['metric']} | "
            + " | ".join(fmt(cells[s]["value"]) for s in kinds)
            + f" | {fmt(cells['constant'])} | {extras} |"
        )


if __name__ == "__main__":
    main()
