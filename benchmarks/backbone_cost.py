"""Device-time and store-size estimates of the paper matrix's backbones, without a GPU or weights.

Forward FLOPs per image are counted by torch.utils.flop_counter on the meta device (the same
forward_intermediates call extraction makes, stopping at the stored level), so even the 7B model
costs no memory. The estimate per backbone over the matrix's images is

    max(images x FLOPs / sustained FLOP/s, images / input pipeline images/s) + overhead

with the assumptions as options (defaults: 100 TFLOP/s sustained bf16, about an A100's measured
ViT inference rate and a third of an H100's; 1000 images/s decoding with 16 workers; 2 minutes of
model builds and weight loads over the four datasets' stages). Store size: float16 grids.

    python benchmarks/backbone_cost.py                        # the new-generation presets
    python benchmarks/backbone_cost.py dinov2_b_reg sam_b --tflops 300

For a whole params file (every backbone x dataset and task run), `maxa estimate PARAMS` applies the same
count to the matrix as configured.
"""

from __future__ import annotations

import argparse

import torch

from maxa.extract import backbones
from maxa.extract.config import ExtractConfig
from maxa.extract.presets import get_preset
from maxa.pipelines.estimate import backbone_cost

MATRIX_IMAGES = 2913 + 25000 + 20500 + 1449  # the pre-deap matrix; `maxa estimate` counts today's
PROTOCOL_SIZES = {"sam2_bplus": 1024, "sam_b": 1024}  # the SAMs at their own resolution; 224 otherwise
NEW_GENERATION = [
    "dinov3_s",
    "dinov3_b",
    "dinov3_l",
    "dinov3_7b",
    "dinov3_convnext_b",
    "siglip2_b",
    "siglip2_so400m",
    "pe_core_b",
    "pe_core_l",
    "pe_spatial_b",
    "pe_spatial_l",
    "aimv2_l",
    "sam2_bplus",
    "radio_v3_b",
    "radio_v3_l",
    "tipsv2_b",
]


def cost(name: str, side: int) -> tuple[float, int, tuple[int, ...]]:
    """(GFLOPs per image, parameters, stored grid shape (h, w, C)) of a preset at `side` px: the count
    `maxa estimate` makes (pipelines/estimate.py), plus the parameter count on the meta device."""
    preset = get_preset(name)
    if preset is None:
        raise SystemExit(f"unknown preset {name!r}")
    config = ExtractConfig(model=name, weights="random-init", input_size=side, layers=list(preset.layers))
    counted = backbone_cost(config)
    with torch.device("meta"):
        model = backbones._timm_create(preset.architecture, num_classes=0)
    return counted.gflops, sum(p.numel() for p in model.parameters()), counted.grid


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("presets", nargs="*", default=NEW_GENERATION)
    parser.add_argument("--images", type=int, default=MATRIX_IMAGES)
    parser.add_argument("--tflops", type=float, default=100.0, help="sustained bf16 TFLOP/s")
    parser.add_argument("--decode", type=float, default=1000.0, help="input pipeline images/s")
    parser.add_argument("--overhead-min", type=float, default=2.0)
    args = parser.parse_args()
    header = ("preset", "px", "GFLOP/img", "params", "grid", "store GB", "minutes")
    print("{:18s} {:>5s} {:>10s} {:>8s} {:>14s} {:>9s} {:>8s}".format(*header))
    total = 0.0
    for name in args.presets:
        side = PROTOCOL_SIZES.get(name, 224)
        gflops, params, (h, w, c) = cost(name, side)
        seconds = max(args.images * gflops / (args.tflops * 1e3), args.images / args.decode)
        minutes = seconds / 60 + args.overhead_min
        total += minutes
        store_gb = args.images * h * w * c * 2 / 1e9
        grid = f"{h}x{w}x{c}"
        size = f"{params / 1e6:.0f}M"
        print(f"{name:18s} {side:5d} {gflops:10.1f} {size:>8s} {grid:>14s} {store_gb:9.1f} {minutes:8.1f}")
    print(f"total {total:.0f} device-minutes for {len(args.presets)} backbones x {args.images} images")


if __name__ == "__main__":
    main()
