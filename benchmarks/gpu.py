"""The GPU figures of one run: extraction vs the bare forward, stage two in GPU memory vs streamed.

On a CUDA machine (the default setting):
  1. extraction: DINOv2 ViT-B/14 at 518 px (random init) over synthetic images, bare forward vs the
     full `extract()` (decoding, transfers, float16 copies, raw shard writes): img/s and the ratio
     (goal >= 0.9 of bare), peak GPU memory;
  2. stage two: MAXA training samples/s on a ViT-B/14-sized feature store (37x37x768 float16, what
     518 px gives) held in GPU memory (`--loader memory`) vs streamed from the store, peak GPU memory.
`--smoke` runs the same code small on CPU (a tiny ViT, a few images, a 4x4 store) in seconds, so CI
keeps the script working; its numbers mean nothing. Ratios are within one run.

    python benchmarks/gpu.py                 # CUDA; a few minutes on one GPU
    python benchmarks/gpu.py --smoke         # CPU, seconds
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from maxa.core.device import resolve_device
from maxa.extract.config import ExtractConfig
from maxa.extract.features import extract
from maxa.extract.targets import PrepareConfig, prepare

HERE = Path(__file__).resolve().parent


def _sibling(name: str) -> ModuleType:
    """Load benchmarks/<name>.py (benchmarks is not a package; its helpers are reused, not copied)."""
    spec = importlib.util.spec_from_file_location(f"maxa_benchmark_{name}", HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Setting:
    model: str
    input_size: int
    images: int
    batch_size: int
    grid: int  # stage-two store: grid x grid x channels float16
    channels: int
    store_images: int
    train_steps: int
    train_batch: int
    query_grid: int
    label_size: int


GPU = Setting("vit_base_patch14_dinov2", 518, 1024, 64, 37, 768, 1024, 50, 32, 56, 112)
SMOKE = Setting("vit_tiny_patch16_224", 32, 8, 4, 4, 192, 16, 2, 4, 4, 16)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def extraction(s: Setting, root: Path, device: torch.device, repeats: int) -> dict[str, Any]:
    bench = _sibling("extract")
    targets = str(root / "images.zarr")
    options = {"num_images": s.images, "image_size": 256 if device.type == "cuda" else s.input_size}
    images = PrepareConfig(split="val", label_size=16, shard_size=256, options=options)
    prepare(images, targets, progress=False)
    config = ExtractConfig(
        model=s.model,
        weights="random-init",
        input_size=s.input_size,
        layers=[-1],
        batch_size=s.batch_size,
        shard_size=32 if device.type == "cuda" else s.batch_size,
        device=str(device),
    )
    bare, full, peak = [], [], 0.0
    for repeat in range(repeats):  # alternate, so a busy spell hits both
        seconds, _, _ = bench.bare_forward(config, targets, device)
        bare.append(seconds)
        out = root / f"features-{repeat}.zarr"
        _reset_peak(device)
        start = time.perf_counter()
        extract(config, targets, str(out), progress=False)
        _sync(device)
        full.append(time.perf_counter() - start)
        peak = max(peak, _peak_gib(device) or 0.0)
        shutil.rmtree(out)
    b, f = min(bare), min(full)
    return {
        "model": s.model,
        "input_size": s.input_size,
        "images": s.images,
        "bare_img_s": s.images / b,
        "extract_img_s": s.images / f,
        "ratio": b / f,
        "goal": ">= 0.9",
        "runs_s": {"bare": bare, "extract": full},
        "peak_gpu_gib": peak if device.type == "cuda" else None,
    }


def stage_two(s: Setting, root: Path, device: torch.device) -> dict[str, Any]:
    from maxa.probe.train import ProbeConfig, train

    probe = _sibling("probe_throughput")
    targets = str(root / "labels.zarr")
    options = {"num_images": s.store_images, "image_size": 64, "num_classes": 4}
    prepare(PrepareConfig(label_size=s.label_size, shard_size=32, options=options), targets, progress=False)
    features = probe._fake_features(targets, str(root / "vitb14.zarr"), s.grid, s.channels, 32)
    out: dict[str, Any] = {
        "store": f"{s.store_images} x {s.grid}x{s.grid}x{s.channels} float16",
        "store_gib": s.store_images * s.grid * s.grid * s.channels * 2 / 2**30,
        "query_grid": s.query_grid,
    }
    for loader in ("memory", "stream"):
        config = ProbeConfig(
            iterations=s.train_steps,
            batch_size=s.train_batch,
            query_grid=s.query_grid,
            checkpoint_every=0,
            loader=loader,
            device=str(device),
        )
        _reset_peak(device)
        start = time.perf_counter()
        meta = train(config, features, targets, str(root / f"{loader}.pt"), progress=False)
        _sync(device)
        wall = time.perf_counter() - start
        # the trainer's own rate (training steps only); the whole call's if its record lacks one
        rate = meta.samples_per_second
        out[loader] = {
            "samples_s": rate or s.train_steps * s.train_batch / wall,
            "wall_s": wall,
            "peak_gpu_gib": _peak_gib(device),
        }
    out["ratio_memory_over_stream"] = out["memory"]["samples_s"] / out["stream"]["samples_s"]
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny CPU version (CI)")
    parser.add_argument("--repeats", type=int, default=None, help="extraction runs, best of (3; smoke 1)")
    parser.add_argument("--images", type=int, default=None, help="images extracted")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    device = torch.device("cpu") if args.smoke else resolve_device("auto")
    if device.type != "cuda" and not args.smoke:
        raise SystemExit("no CUDA device: run with --smoke for the CPU version")
    setting = SMOKE if args.smoke else GPU
    if args.images:
        setting = Setting(**{**setting.__dict__, "images": args.images})
    repeats = args.repeats or (1 if args.smoke else 3)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    root = Path(tempfile.mkdtemp(prefix="maxa-gpu-"))
    try:
        result: dict[str, Any] = {
            "device": name,
            "torch": torch.__version__,
            "extraction": extraction(setting, root, device, repeats),
            "stage_two": stage_two(setting, root, device),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    e, t = result["extraction"], result["stage_two"]
    print(f"{name}, torch {torch.__version__}")
    print(
        f"extraction {e['model']} at {e['input_size']} px, {e['images']} images: "
        f"bare {e['bare_img_s']:.1f} img/s, "
        f"extract {e['extract_img_s']:.1f} img/s, ratio {e['ratio']:.3f} (goal {e['goal']}), "
        f"peak GPU {_fmt(e['peak_gpu_gib'])}"
    )
    print(
        f"stage two on {t['store']} ({t['store_gib']:.2f} GiB), query grid {t['query_grid']}: "
        f"in GPU memory {t['memory']['samples_s']:.1f} samples/s (peak {_fmt(t['memory']['peak_gpu_gib'])}), "
        f"streamed {t['stream']['samples_s']:.1f} samples/s (peak {_fmt(t['stream']['peak_gpu_gib'])}), "
        f"ratio {t['ratio_memory_over_stream']:.2f}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


def _fmt(gib: float | None) -> str:
    return f"{gib:.2f} GiB" if gib is not None else "n/a (CPU)"


if __name__ == "__main__":
    main(sys.argv[1:])
