"""Settings of the local tests, kept free of heavy imports so `maxa --help` starts fast.

Each dataclass is one `maxa local` subcommand: the CLI options carry the field names (with dashes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from maxa.core.choices import check_choice
from maxa.core.errors import MaxaError

UPSAMPLING = ("bilinear", "nearest")
POOLINGS = ("mean", "gem")
SEQUENCE_SOURCES = ("auto", "ids", "reader")
"""Where sequence and frame order come from: the sample ids, the dataset reader, or ids when they parse."""
DAVIS_PROTOCOLS = ("dino", "any")
"""`--davis-protocol`: refuse DAVIS stores not made DINO's way (dino), or score them anyway (any)."""

BOUND_TH = 0.008
"""DAVIS boundary tolerance as a fraction of the image diagonal (values >= 1 are pixels)."""


@dataclass
class KnnConfig:
    """Settings of `maxa local knn` (the CLI options carry the same names)."""

    shots: int | None = field(
        default=None, metadata={"help": "Labelled training images in the memory bank (default: all)."}
    )
    k: list[int] = field(default_factory=lambda: [1, 20], metadata={"help": "Neighbour counts, e.g. 1,20."})
    layers: list[int] = field(default_factory=list, metadata={"help": "Layer indices (default: all stored)."})
    drop_dims: int = field(default=0, metadata={"help": "Drop the d highest-variance channels first."})
    temperature: float = field(default=0.07, metadata={"help": "Vote weight exp(sim/T) for k > 1."})
    upsample: str = field(
        default="bilinear", metadata={"help": "Patch votes -> label pixels: bilinear|nearest."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the few-shot image choice."})
    query_chunk: int = field(default=4096, metadata={"help": "Query patches per similarity block."})
    bank_chunk: int = field(default=16384, metadata={"help": "Bank patches per similarity block."})
    device: str = "auto"

    def __post_init__(self) -> None:
        self.k = sorted(set(self.k or [1, 20]))
        self.layers = list(self.layers or [])
        if self.k[0] < 1:
            raise MaxaError(f"--k values must be >= 1, got {self.k}")
        if self.shots is not None and self.shots < 1:
            raise MaxaError(f"--shots must be >= 1, got {self.shots}")
        if self.upsample not in UPSAMPLING:
            raise MaxaError(f"--upsample must be one of {', '.join(UPSAMPLING)}, got {self.upsample!r}")
        if self.temperature <= 0:
            raise MaxaError(f"--temperature must be positive, got {self.temperature}")
        if self.query_chunk < 1 or self.bank_chunk < 1:
            raise MaxaError("--query-chunk and --bank-chunk must be >= 1")


@dataclass
class RetrievalConfig:
    """Settings of `maxa local retrieval` (the CLI options carry the same names)."""

    layers: list[int] = field(default_factory=list, metadata={"help": "Layer indices (default: all stored)."})
    pooling: str = field(default="mean", metadata={"help": "Patch pooling: mean|gem."})
    gem_p: float = field(default=3.0, metadata={"help": "GeM exponent (features clamped at 1e-6 first)."})
    tiles: int = field(default=1, metadata={"help": "Split the feature grid into tiles x tiles items."})
    recall_at: list[int] = field(
        default_factory=lambda: [1, 5, 10], metadata={"help": "Cut-offs of recall@k."}
    )
    drop_dims: int = field(default=0, metadata={"help": "Drop the d highest-variance channels first."})
    chunk: int = field(default=256, metadata={"help": "Queries ranked per block (bounds memory)."})
    device: str = "auto"

    def __post_init__(self) -> None:
        self.layers = list(self.layers or [])
        self.recall_at = sorted(set(self.recall_at or [1, 5, 10]))
        if self.pooling not in POOLINGS:
            raise MaxaError(f"--pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.gem_p <= 0:
            raise MaxaError(f"--gem-p must be positive, got {self.gem_p}")
        if self.tiles < 1 or self.chunk < 1 or self.recall_at[0] < 1:
            raise MaxaError("--tiles, --chunk and --recall-at values must be >= 1")


@dataclass
class PropagationConfig:
    """Settings of `maxa local propagate` (DINO's defaults; the CLI options carry the same names)."""

    layer: str = field(default="-1", metadata={"help": "Layer index or name (default: the last stored)."})
    n_last_frames: int = field(default=7, metadata={"help": "Previous frames in the context (plus frame 0)."})
    radius: int = field(default=12, metadata={"help": "Neighbourhood half-size in patches (0: whole frame)."})
    topk: int = field(default=5, metadata={"help": "Context patches each query patch takes labels from."})
    temperature: float = field(default=0.1, metadata={"help": "Affinity exp(cosine / T)."})
    bound_th: float = field(
        default=BOUND_TH, metadata={"help": "F boundary tolerance (fraction of diagonal)."}
    )
    sequences: str = field(default="auto", metadata={"help": "Sequence/frame order from: auto|ids|reader."})
    davis_protocol: str = field(
        default="dino",
        metadata={
            "help": "On DAVIS stores: dino refuses stores not made as DINO evaluates DAVIS (input size by "
            "DINO's frame rule, native labels, --norm) and names the commands that make them; any scores "
            "them anyway (the record lists what differs).",
            "choices": DAVIS_PROTOCOLS,
        },
    )
    masks_dir: str | None = field(
        default=None,
        metadata={
            "help": "Also write the masks as DAVIS-format indexed PNGs, DIR/<sequence>/<frame>.png, for "
            "davis2017-evaluation (`evaluation_method.py --task semi-supervised --results_path DIR`)."
        },
    )
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.sequences not in SEQUENCE_SOURCES:
            raise MaxaError(
                f"--sequences must be one of {', '.join(SEQUENCE_SOURCES)}, got {self.sequences!r}"
            )
        check_choice(self.davis_protocol, DAVIS_PROTOCOLS, "--davis-protocol")
        if self.n_last_frames < 0 or self.radius < 0 or self.topk < 1:
            raise MaxaError("--n-last-frames and --radius must be >= 0 and --topk >= 1")
        if self.temperature <= 0 or self.bound_th <= 0:
            raise MaxaError("--temperature and --bound-th must be positive")
