"""Extraction overhead: `maxa extract` wall time against the bare forward pass over the same images.

The bare forward is the model alone (the same forward_intermediates call, precision and batch
size) on images that were decoded, resized, normalized and, on a GPU, moved to the device
before the clock starts; one warm-up batch is not timed. The extraction is the full `extract()`
call on a synthetic target store: model build, decoding and resizing, normalization, the forward,
the device-to-host copies and the compressed, sharded Zarr writes. Its time is reported in full
(`total`) and without the model build and input probe (`loop`), which a bare loop never pays.

Goals: on CPU, extraction / bare <= 1.10; on a GPU, DINOv2 ViT-B/14 at 518 px extracts at >= 90%
of its bare forward's images/s. Numbers are one run's ratios on a possibly shared machine.

    python benchmarks/extract.py                                   # CPU: ViT-S/16 at 224, 200 images
    python benchmarks/extract.py --gpu                             # GPU: DINOv2 ViT-B/14 at 518 px
    python benchmarks/extract.py --model convnext_tiny --input-size 224 --num-images 100
    python benchmarks/extract.py --layers=-4,-3,-2,-1                # several stored layers
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from maxa.core import store as st
from maxa.core.device import resolve_device
from maxa.extract.backbones import load_backbone
from maxa.extract.config import ExtractConfig
from maxa.extract.datasets.base import read_image
from maxa.extract.features import autocast_dtype, extract
from maxa.extract.targets import PrepareConfig, dataset_from_targets, prepare
from maxa.extract.transforms import resize_image


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_forward(config: ExtractConfig, targets: str, device: torch.device) -> tuple[float, float, float]:
    """Seconds of the forward passes alone, to build the model, and to decode+resize the images."""
    start = time.perf_counter()
    backbone = load_backbone(config.spec, device)
    if device.type == "cuda":
        backbone.use_channels_last()
        torch.backends.cudnn.benchmark = True
    sync(device)
    build = time.perf_counter() - start
    dataset = dataset_from_targets(st.open_store(targets, "targets"))
    start = time.perf_counter()
    size = backbone.input_size
    images = np.stack([resize_image(read_image(dataset, i), size) for i in range(len(dataset))])
    decode = time.perf_counter() - start
    batches = [
        backbone.prepare(torch.from_numpy(images[i : i + config.batch_size]).to(device))
        for i in range(0, len(images), config.batch_size)
    ]
    dtype = autocast_dtype(config.precision, device)
    autocast = torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)
    with autocast:
        backbone.features(batches[0])  # warm-up, not timed
        sync(device)
        start = time.perf_counter()
        for x in batches:
            backbone.features(x)
        sync(device)
    return time.perf_counter() - start, build, decode


def report(
    args: argparse.Namespace,
    config: ExtractConfig,
    device: torch.device,
    bare: list[float],
    total: list[float],
    build: float,
    decode: float,
) -> None:
    n = args.num_images
    best_bare, best_total = min(bare), min(total)
    best_loop = best_total - build
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"{args.model} at {args.input_size} px, {n} synthetic {args.image_size} px images, "
        f"batch {args.batch_size}, layers {args.layers}, {name}, precision {config.precision}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(
        f"runs (s): bare {', '.join(f'{t:.2f}' for t in bare)}; "
        f"extract {', '.join(f'{t:.2f}' for t in total)}"
    )
    print(f"bare forward       {best_bare:8.2f} s  {n / best_bare:8.1f} img/s")
    print(
        f"decode + resize    {decode:8.2f} s  {n / decode:8.1f} img/s per process "
        f"(work a CPU-bound machine cannot hide: {decode / best_bare:.1%} of the bare forward)"
    )
    print(f"extract (total)    {best_total:8.2f} s  {n / best_total:8.1f} img/s  (model build {build:.2f} s)")
    print(f"extract (loop)     {best_loop:8.2f} s  {n / best_loop:8.1f} img/s  (total minus model build)")
    print(
        f"ratio extract/bare (best of {len(bare)}): total {best_total / best_bare:.3f}, "
        f"loop {best_loop / best_bare:.3f}  (CPU goal <= 1.10)"
    )
    print(
        f"throughput extract/bare: total {best_bare / best_total:.1%}, loop {best_bare / best_loop:.1%}  "
        f"(GPU goal >= 90%)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--gpu", action="store_true", help="the GPU goal's setting: DINOv2 ViT-B/14 at 518 px"
    )
    parser.add_argument("--model", default=None)
    parser.add_argument("--input-size", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None, help="synthetic image side before resizing")
    parser.add_argument("--num-images", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--num-workers", type=int, default=None, help="default: maxa's (0 on CPU)")
    parser.add_argument("--layers", default="-1", help="stored layers, e.g. -4,-3,-2,-1")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3, help="alternate bare/extract runs; best of each")
    args = parser.parse_args()
    if args.gpu:
        defaults = {
            "model": "vit_base_patch14_dinov2",
            "input_size": 518,
            "image_size": 256,
            "num_images": 1536,
            "batch_size": 64,
        }
    else:
        defaults = {
            "model": "vit_small_patch16_224",
            "input_size": 224,
            "image_size": 256,
            "num_images": 200,
            "batch_size": 32,
        }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    device = resolve_device(args.device)
    config = ExtractConfig(
        model=args.model,
        weights="random-init",
        input_size=args.input_size,
        layers=[int(v) for v in args.layers.split(",")],
        batch_size=args.batch_size,
        shard_size=args.batch_size,
        num_workers=args.num_workers,
        device=args.device,
        precision=args.precision,
    )
    root = Path(tempfile.mkdtemp(prefix="maxa-bench-"))
    try:
        targets = str(root / "targets.zarr")
        prepare(
            PrepareConfig(
                split="val",
                label_size=16,
                shard_size=256,
                options={"num_images": args.num_images, "image_size": args.image_size},
            ),
            targets,
            progress=False,
        )
        bare, total, build, decode = [], [], 0.0, 0.0
        for repeat in range(args.repeats):  # alternate, so a busy spell of a shared machine hits both
            seconds, build, decode = bare_forward(config, targets, device)
            bare.append(seconds)
            out = root / f"features-{repeat}.zarr"
            start = time.perf_counter()
            extract(config, targets, str(out), progress=False)
            sync(device)
            total.append(time.perf_counter() - start)
            shutil.rmtree(out)
        report(args, config, device, bare, total, build, decode)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
