"""Extraction settings, kept free of heavy imports so the CLI starts fast."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from maxa.core.choices import check_choice
from maxa.core.errors import MaxaError
from maxa.core.paths import expand_path
from maxa.core.provenance import NATIVE
from maxa.extract.reader_specs import READERS, splits_help

RANDOM_INIT = "random-init"
PRETRAINED = "pretrained"
AUTO = "auto"
"""Weights default: a preset's (or a tagged timm name's) pretrained weights, else random-init."""
CONTROL_NOISE = "control:noise"
CONTROL_POSITION = "control:position"
"""Control stores of the model's shape: iid noise / only each patch's position (extract/controls.py)."""
WEIGHT_KEYWORDS = (AUTO, PRETRAINED, RANDOM_INIT, CONTROL_NOISE, CONTROL_POSITION)
"""`--weights` values that name no file (anything else is a weights file path)."""

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
"""Forward precision: `auto` is bf16 autocast on a GPU (fp16 where bf16 is unsupported), fp32 on CPU."""


@dataclass
class PrepareConfig:
    """What `maxa prepare` writes: one split of one dataset reader at one label resolution.

    A `datasets.<name>` entry of params.yaml resolves to two of these (its train and test split).
    `label_size` is a square side, or "native": the images' own resolution (DAVIS 480p, NYU 480x640),
    where benchmarks score (DAVIS J&F at 480x854, NYU depth at 480x640)."""

    dataset: str = field(
        default="synthetic",
        metadata={"help": "Dataset reader (`maxa plugins` lists them).", "choices": READERS.names()},
    )
    split: str = field(default="train", metadata={"help": splits_help()})
    label_size: str | int = field(
        default=64,
        metadata={
            "help": "Square label resolution of the stored targets, or 'native': the images' own size "
            "(one size per split)."
        },
    )
    shard_size: int = field(default=64, metadata={"help": "Images per Zarr shard."})
    root: str | None = field(default=None, metadata={"help": "Dataset folder (not needed for synthetic)."})
    options: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "Reader options, e.g. num_images (reader-specific)."}
    )

    def __post_init__(self) -> None:
        check_choice(self.dataset, tuple(READERS.names()), "--dataset")
        if isinstance(self.label_size, str) and self.label_size.strip().isdigit():
            self.label_size = int(self.label_size)
        if isinstance(self.label_size, str):
            if self.label_size != NATIVE:
                raise MaxaError(
                    f"--label-size must be a side in pixels or {NATIVE!r}, got {self.label_size!r}"
                )
        elif self.label_size < 8:
            raise MaxaError(f"--label-size must be >= 8, got {self.label_size}")
        if self.shard_size < 1:
            raise MaxaError(f"--shard-size must be >= 1, got {self.shard_size}")
        if not isinstance(self.options, dict):
            raise MaxaError(f"reader options must be a mapping, got {self.options!r}")
        if self.root is not None:
            self.root = expand_path(str(self.root))


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
    weights: str = AUTO  # "auto", "random-init", "pretrained" (timm's loader), "control:*" or a file path
    input_size: InputSize | None = None  # side or (height, width) in pixels; None = the model's own
    layers: tuple[int, ...] = (-1,)
    norm: bool = False
    store_prefix: bool = False  # also return the prefix (cls/register) tokens of each layer


@dataclass
class ExtractConfig:
    """What `maxa extract` runs: a `backbones.<name>` entry of params.yaml over its `extract` section."""

    model: str = field(metadata={"help": "Preset (see `maxa backbones`) or any timm model name."})
    name: str | None = field(default=None, metadata={"help": "Label in reports; defaults to --model."})
    weights: str = field(
        default=AUTO,
        metadata={
            "help": "auto | pretrained | random-init | control:noise | control:position | FILE "
            "(.safetensors/.pth). auto = pretrained for a preset or a timm name with a .tag, random-init for "
            "a bare timm name; control:* = a store of the model's shape holding iid noise or only each "
            "patch's position (extract/controls.py)."
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
        metadata={
            "help": "Comma-separated feature levels: blocks of a ViT, stages of a CNN, counted from 0 as "
            "timm counts them; negative counts from the end (-1 = last). Stored as layer_<i>, i >= 0."
        },
    )
    norm: bool = field(default=False, metadata={"help": "Apply the model's final norm to the features."})
    store_prefix: bool = field(
        default=False,
        metadata={"help": "Also store each layer's prefix (cls/register) tokens as prefix_layer_<i>."},
    )
    keep_nonfinite: bool = field(
        default=False,
        metadata={
            "help": "Store NaN/inf features instead of refusing the shard (recorded as provenance "
            "nonfinite: keep; for inspecting a broken backbone: probe and evaluate still refuse them)."
        },
    )
    batch_size: int = field(default=32, metadata={"help": "Images per forward pass."})
    shard_size: int = field(default=32, metadata={"help": "Images per Zarr shard of the feature store."})
    num_workers: int | None = field(
        default=None,
        metadata={
            "help": "DataLoader processes decoding images; default: 0 on CPU, cores - 2 (<= 16) with a GPU."
        },
    )
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N."})
    precision: str = field(
        default="auto",
        metadata={
            "help": "Forward precision (auto: bf16 autocast on GPU, fp32 on CPU).",
            "choices": PRECISIONS,
        },
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
        check_choice(self.precision, PRECISIONS, "--precision")
        if not self.weights:
            raise MaxaError("--weights must be auto, pretrained, random-init or a weights file path")
        if self.weights not in WEIGHT_KEYWORDS:
            self.weights = expand_path(self.weights)

    @property
    def spec(self) -> BackboneSpec:
        size = parse_input_size(self.input_size)
        return BackboneSpec(self.model, self.weights, size, tuple(self.layers), self.norm, self.store_prefix)


def check_spec(
    spec: BackboneSpec, levels: int, num_prefix: int, patch: int | None, size: InputSize
) -> list[int]:
    """Validate layers, prefix tokens and input size against a model's facts; the layer indices.

    Pure (no torch): extraction checks a built model's facts, `maxa params` a preset's stored ones."""
    layers = []
    for index in spec.layers:
        resolved_index = levels + index if index < 0 else index
        if not 0 <= resolved_index < levels:
            raise MaxaError(
                f"layer {index} is out of range for {spec.model!r}, which has {levels} feature levels"
            )
        layers.append(resolved_index)
    if spec.store_prefix and not num_prefix:
        raise MaxaError(f"--store-prefix: {spec.model!r} has no prefix (cls/register) tokens to store")
    for side in dict.fromkeys(input_hw(size)):
        if patch and side % patch:
            lower, upper = side // patch * patch, (side // patch + 1) * patch
            hint = f"{lower} or {upper}" if lower else str(upper)
            raise MaxaError(
                f"--input-size {side} is not a multiple of {spec.model}'s patch size {patch}; use e.g. {hint}"
            )
    return layers
