"""The `probe` settings (params.yaml section and `maxa probe` options), free of heavy imports.

Every field becomes a CLI option (pipelines/options.py) and is recorded in the checkpoint, so evaluation
rebuilds the same task (e.g. the valid depth range) and the report can show the full protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from maxa.extract.errors import MaxaError

LOADERS = ("auto", "memory", "stream")

# Fields that change how fast or where a run happens, never its result: a resumed run may differ in these.
RUNTIME_FIELDS = frozenset(
    {
        "device",
        "resume",
        "checkpoint_every",
        "memory_budget_gb",
        "loader",
        "prefetch",
        "read_threads",
        "threads",
    }
)


@dataclass
class ProbeConfig:
    """The `probe` section of params.yaml (one field per `maxa probe` option)."""

    task: str = "semantic"
    adapter: str = "maxa"
    layer: str = "-1"
    iterations: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    query_grid: int = 28
    width: int = 16
    heads: int = 8
    seed: int = 0
    device: str = "auto"
    schedule: str = field(
        default="constant",
        metadata={"help": "LR schedule: constant (the paper's released loop) | cosine (decay to 0)."},
    )
    # --- task options
    min_depth: float = field(default=1e-3, metadata={"help": "depth: valid ground truth is > this (metres)."})
    max_depth: float = field(default=10.0, metadata={"help": "depth: valid ground truth is < this (metres)."})
    instance_dim: int = field(
        default=16,
        metadata={
            "help": "instance: embedding width per pixel (a head maps it to one class per training instance)."
        },
    )
    instance_subsample: float = field(
        default=1.0,
        metadata={"help": "instance: fraction of a batch's pixels in the loss (the paper's code: 1 = all)."},
    )
    cluster_size: int = field(
        default=112, metadata={"help": "instance: k-means runs on a cluster_size² resize (paper: 112)."}
    )
    max_detections: int = field(
        default=100, metadata={"help": "centers: boxes kept per image (top-K peaks)."}
    )
    # --- k-NN baseline
    knn_k: int = field(default=10, metadata={"help": "knn: neighbours per query patch."})
    knn_bank: int = field(
        default=50_000, metadata={"help": "knn: at most this many training patches in the memory bank."}
    )
    # --- data loading, checkpoints
    memory_budget_gb: float = field(
        default=8.0,
        metadata={
            "help": "Load the store into (GPU) memory when it fits in this many GB, else stream shards."
        },
    )
    loader: str = field(default="auto", metadata={"help": "auto | memory | stream."})
    shuffle_shards: int = field(
        default=8, metadata={"help": "Shards shuffled together (same order in memory and when streaming)."}
    )
    prefetch: int = field(default=2, metadata={"help": "Shard windows read ahead when streaming."})
    read_threads: int = field(default=4, metadata={"help": "Threads reading shards when streaming."})
    threads: int = field(
        default=0,
        metadata={"help": "CPU threads for training (0: torch's default; 1 is best for tiny heads)."},
    )
    checkpoint_every: int = field(
        default=200, metadata={"help": "Save a resumable state every N steps (0: only on interrupt)."}
    )
    resume: bool = field(
        default=False, metadata={"help": "Continue from the state saved next to --out by an earlier run."}
    )

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.batch_size < 1:
            raise MaxaError("--iterations and --batch-size must be >= 1")
        if self.lr <= 0:
            raise MaxaError(f"--lr must be positive, got {self.lr}")
        if not 0 <= self.min_depth < self.max_depth:
            raise MaxaError(f"need 0 <= --min-depth < --max-depth, got {self.min_depth} and {self.max_depth}")
        for name in (
            "instance_dim",
            "max_detections",
            "cluster_size",
            "knn_k",
            "knn_bank",
            "shuffle_shards",
            "prefetch",
        ):
            if getattr(self, name) < 1:
                raise MaxaError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.read_threads < 1 or min(self.checkpoint_every, self.memory_budget_gb, self.threads) < 0:
            raise MaxaError(
                "--read-threads must be >= 1; --checkpoint-every, --memory-budget-gb, --threads >= 0"
            )
        from maxa.probe.schedule import SCHEDULES

        if self.schedule not in SCHEDULES:
            raise MaxaError(f"--schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not 0 < self.instance_subsample <= 1:
            raise MaxaError(f"--instance-subsample must be in (0, 1], got {self.instance_subsample}")
        if self.loader not in LOADERS:
            raise MaxaError(f"--loader must be one of {', '.join(LOADERS)}, got {self.loader!r}")
        self.layer = str(self.layer)
        self.layers()
        from maxa.probe.tasks import get_task  # the registry imports torch: only when a config is built

        get_task(self.task)

    def layers(self) -> list[str]:
        """`--layer` as a list: '-1', '11', 'layer_11' or several comma-separated (concatenated on C)."""
        parts = [p.strip() for p in self.layer.split(",") if p.strip()]
        if not parts:
            raise MaxaError(f"--layer needs at least one layer, got {self.layer!r}")
        return parts

    def adapter_options(self) -> dict[str, Any]:
        return {"query_grid": self.query_grid, "width": self.width, "heads": self.heads, "knn_k": self.knn_k}

    def task_options(self) -> dict[str, Any]:
        return {
            "min_depth": self.min_depth,
            "max_depth": self.max_depth,
            "instance_dim": self.instance_dim,
            "instance_subsample": self.instance_subsample,
            "max_detections": self.max_detections,
            "cluster_size": self.cluster_size,
        }

    def result_fields(self) -> dict[str, Any]:
        """The fields that determine the trained weights (a resumed run must match these)."""
        from dataclasses import asdict

        return {k: v for k, v in asdict(self).items() if k not in RUNTIME_FIELDS}
