"""The adapters a probe can train (or fill, for k-NN), declared once each (torch-free): what `--adapter`
accepts, the options it takes (ProbeConfig fields, recorded in the checkpoint as `adapter_options` unless
marked `record: False`), whether `maxa probe` trains it, and the factory that builds it
(`factory(in_channels, out_channels, options) -> nn.Module`, probe/adapters.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from maxa.core.errors import MaxaError
from maxa.core.registry import NoOptions, Registry, Spec


@dataclass(frozen=True, kw_only=True)
class AdapterSpec(Spec):
    implementation: str
    """`module:function` building the module: (in_channels, out_channels, options) -> nn.Module."""
    trainable: bool = True
    """False: built from a memory bank instead of trained (k-NN)."""
    fit: str = "maxa.probe.engine:GradientFit"
    """`module:class` of its strategy (probe/fitting.py): what gives it its weights in `maxa probe`."""


ADAPTERS: Registry[AdapterSpec] = Registry("adapter")


@dataclass(frozen=True)
class MaxaOptions:
    query_grid: int = field(
        default=28, metadata={"help": "side of the learned query grid (output resolution)."}
    )
    width: int = field(default=16, metadata={"help": "channels per attention head."})
    heads: int = field(default=8, metadata={"help": "attention heads."})
    upsampler_width: int = field(
        default=0,
        metadata={
            "help": "upsampler channels (the paper code's dim_interm, 32 for COCO-Stuff); "
            "0: max(width/4, classes/2)."
        },
    )

    def __post_init__(self) -> None:
        if self.upsampler_width < 0:
            raise MaxaError(f"--upsampler-width must be >= 0 (0: default layout), got {self.upsampler_width}")


@dataclass(frozen=True)
class KnnOptions:
    knn_k: int = field(default=10, metadata={"help": "neighbours per query patch."})
    knn_bank: int = field(
        default=50_000,
        metadata={"help": "at most this many training patches in the memory bank.", "record": False},
    )

    def __post_init__(self) -> None:
        for name in ("knn_k", "knn_bank"):
            if getattr(self, name) < 1:
                raise MaxaError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")


_FACTORIES = "maxa.probe.adapters"

ADAPTERS.register(
    AdapterSpec(
        name="maxa",
        help="attentive (the paper's): learned queries cross-attend to the patches, Gaussian locality bias",
        options=MaxaOptions,
        implementation=f"{_FACTORIES}:build_maxa",
    )
)
ADAPTERS.register(
    AdapterSpec(
        name="linear",
        help="a 1x1 convolution on the bilinearly upsampled features",
        options=NoOptions,
        implementation=f"{_FACTORIES}:build_linear",
    )
)
ADAPTERS.register(
    AdapterSpec(
        name="knn",
        help="k-NN label transfer from a memory bank of training patches (no training)",
        options=KnnOptions,
        implementation=f"{_FACTORIES}:build_knn",
        trainable=False,
        fit="maxa.probe.bank_fit:BankFit",
    )
)
