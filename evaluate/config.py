"""Settings of `maxa evaluate` and `maxa plots` (the `evaluate` and `plots` sections of params.yaml), kept
free of heavy imports so `maxa --help` starts fast. The stage table (pipelines/stages.py) names them."""

from __future__ import annotations

from dataclasses import dataclass, field

from maxa.core.errors import MaxaError


@dataclass
class EvaluateConfig:
    """The `evaluate` section (and `maxa evaluate` options)."""

    batch_size: int = field(default=32, metadata={"help": "Images per scoring batch."})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N."})
    protocol: str = field(
        default="maxa",
        metadata={
            "help": "Name of the protocol the experiment runs (e.g. deap, equal-grid): recorded as "
            "protocol.name in every metrics record and shown per row by `maxa report`."
        },
    )

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise MaxaError(f"--batch-size must be >= 1, got {self.batch_size}")


@dataclass
class PlotsParams:
    """The `plots` section: how many held-out images the qualitative panels and PCA maps show."""

    count: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.count <= 64:
            raise MaxaError(f"plots.count must be 1..64, got {self.count}")
