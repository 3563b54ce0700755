"""Extraction settings, kept free of heavy imports so the CLI starts fast."""

from __future__ import annotations

from dataclasses import dataclass, field

from maxa.extract.errors import MaxaError

RANDOM_INIT = "random-init"
PRETRAINED = "pretrained"


@dataclass(frozen=True)
class BackboneSpec:
    """What to build: a timm model name, where its weights come from, and what to read out."""

    model: str
    weights: str = RANDOM_INIT  # "random-init", "pretrained" (timm's loader) or a local file path
    input_size: int | None = None  # square side in pixels; None = the model's own default
    layers: tuple[int, ...] = (-1,)
    norm: bool = False


@dataclass
class ExtractConfig:
    """One backbone's entry of the `extract` section of params.yaml."""

    model: str
    name: str | None = None  # label in reports; defaults to the model name
    weights: str = RANDOM_INIT
    input_size: int | None = None
    layers: list[int] = field(default_factory=lambda: [-1])
    norm: bool = False
    batch_size: int = 32
    shard_size: int = 32
    num_workers: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.shard_size < 1:
            raise MaxaError("--batch-size and --shard-size must be >= 1")
        if not self.layers:
            raise MaxaError("--layers needs at least one layer index")
        if self.input_size is not None and self.input_size < 16:
            raise MaxaError(f"--input-size must be >= 16 pixels, got {self.input_size}")

    @property
    def spec(self) -> BackboneSpec:
        return BackboneSpec(self.model, self.weights, self.input_size, tuple(self.layers), self.norm)


def layer_name(index: int) -> str:
    """Name of the store array holding feature level `index` (non-negative, as timm counts)."""
    return f"layer_{index}"
