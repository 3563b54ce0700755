"""Extraction settings, kept free of heavy imports so the CLI starts fast."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from maxa.extract.errors import MaxaError

RANDOM_INIT = "random-init"
PRETRAINED = "pretrained"
AUTO = "auto"
"""Weights default: a preset's (or a tagged timm name's) pretrained weights, else random-init."""

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
"""Forward precision: `auto` is bf16 autocast on a GPU (fp16 where bf16 is unsupported), fp32 on CPU."""


InputSize = int | tuple[int, int]
"""A square side in pixels, or (height, width) for non-square inputs (e.g. DAVIS's 480x832)."""


def parse_input_size(value: Any) -> InputSize | None:
    """`224`, `"224"`, `"480x832"`, `"480 832"`, `"480,832"` or `[480, 832]` -> 224 or (480, 832).

    A square size stays an int, so square stores keep exactly the provenance they had.
    """
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str):
        parts = [p for p in re.split(r"[x×,\s]+", value.strip().lower()) if p]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = [value]
    try:
        sides = [int(p) for p in parts]
    except (TypeError, ValueError):
        sides = []
    if len(sides) not in (1, 2):
        raise MaxaError(f"--input-size must be a side or HxW (e.g. 224 or 480x832), got {value!r}")
    if len(sides) == 1 or sides[0] == sides[1]:
        return sides[0]
    return sides[0], sides[1]


def input_hw(size: InputSize) -> tuple[int, int]:
    """(height, width) of an input size."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


@dataclass(frozen=True)
class BackboneSpec:
    """What to build: a preset or timm model name, where its weights come from, and what to read out."""

    model: str
    weights: str = AUTO  # "auto", "random-init", "pretrained" (timm's loader) or a local file path
    input_size: InputSize | None = None  # side or (height, width) in pixels; None = the model's own
    layers: tuple[int, ...] = (-1,)
    norm: bool = False
    store_prefix: bool = False  # also return the prefix (cls/register) tokens of each layer


@dataclass
class ExtractConfig:
    """One backbone's entry of the `extract` section of params.yaml."""

    model: str = field(metadata={"help": "Preset (see `maxa backbones`) or any timm model name."})
    name: str | None = field(default=None, metadata={"help": "Label in reports; defaults to --model."})
    weights: str = field(
        default=AUTO,
        metadata={
            "help": "auto | pretrained | random-init | FILE (.safetensors/.pth). auto = pretrained for a "
            "preset or a timm name with a .tag, random-init for a bare timm name."
        },
    )
    input_size: str | int | tuple[int, int] | None = field(
        default=None,
        metadata={
            "help": "Input side in pixels, or HxW for non-square inputs (e.g. 480x832 for DAVIS as DINO "
            "resizes it); default: the model's own."
        },
    )
    layers: list[int] = field(
        default_factory=lambda: [-1],
        metadata={"help": "Comma-separated feature levels (blocks for ViTs, stages for CNNs); -1 = last."},
    )
    norm: bool = field(default=False, metadata={"help": "Apply the model's final norm to the features."})
    store_prefix: bool = field(
        default=False,
        metadata={"help": "Also store each layer's prefix (cls/register) tokens as prefix_layer_<i>."},
    )
    batch_size: int = 32
    shard_size: int = 32
    num_workers: int | None = field(
        default=None,
        metadata={
            "help": "DataLoader processes decoding images; default: 0 on CPU, cores - 2 (<= 16) with a GPU."
        },
    )
    device: str = "auto"
    precision: str = field(
        default="auto",
        metadata={"help": "auto | fp32 | bf16 | fp16 (auto: bf16 autocast on GPU, fp32 on CPU)."},
    )

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.shard_size < 1:
            raise MaxaError("--batch-size and --shard-size must be >= 1")
        if not self.layers:
            raise MaxaError("--layers needs at least one layer index")
        self.input_size = parse_input_size(self.input_size)
        if self.input_size is not None and min(input_hw(self.input_size)) < 16:
            raise MaxaError(f"--input-size must be >= 16 pixels, got {self.input_size}")
        if self.num_workers is not None and self.num_workers < 0:
            raise MaxaError(f"--num-workers must be >= 0, got {self.num_workers}")
        if self.precision not in PRECISIONS:
            raise MaxaError(f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not self.weights:
            raise MaxaError("--weights must be auto, pretrained, random-init or a weights file path")

    @property
    def spec(self) -> BackboneSpec:
        size = parse_input_size(self.input_size)
        return BackboneSpec(self.model, self.weights, size, tuple(self.layers), self.norm, self.store_prefix)


def layer_name(index: int) -> str:
    """Name of the store array holding feature level `index` (non-negative, as timm counts)."""
    return f"layer_{index}"


def prefix_name(index: int) -> str:
    """Name of the store array holding the prefix (cls/register) tokens of feature level `index`."""
    return f"prefix_{layer_name(index)}"
