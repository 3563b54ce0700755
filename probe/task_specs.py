"""The tasks a probe can learn, declared once each (torch-free): what `--task` accepts, the options
`maxa probe` and params.yaml take for it, the target array it reads, its headline metric, and where its
training code (a `maxa.probe.tasks.Task` subclass) and its scoring (an evaluator) live.

`ProbeConfig` gets one field per task option from here; evaluation looks the evaluator up here. A task of
one's own is a `TaskSpec` registered in TASKS from a plugin module (README "Extending maxa").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from maxa.core.choices import check_choice
from maxa.core.errors import MaxaError
from maxa.core.registry import NoOptions, Registry, Spec


@dataclass(frozen=True, kw_only=True)
class TaskSpec(Spec):
    target: str
    """The target-store array the task reads (semantic, depth, boundary, instances, or a reader's own)."""
    label: str
    """Display name (reports, plots)."""
    primary: str
    """Headline metric: a key of the evaluator's scores and a registered metric (its direction)."""
    implementation: str
    """`module:Class` of the Task subclass (torch): encoding, loss, decoding, training statistics."""
    evaluator: str
    """`module:Class` of the evaluator: built with (task, checkpoint meta, store pair), fed (output, raw
    targets) per batch, `compute()` -> scores."""
    objective_version: int = 1
    """Version of what a probe of the task learns (target encoding, loss): bump it when a change can alter a
    trained adapter; `maxa pipeline` writes it to protocols.yaml as `objective.<name>` and `dvc repro`
    re-runs the task's probes (core/protocols.py)."""
    metric_version: int = 1
    """Version of how its predictions are decoded and scored (`metric.<name>`: re-runs its evaluations)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for kind in ("objective", "metric"):
            version = getattr(self, f"{kind}_version")
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise ValueError(
                    f"task {self.name!r}: {kind}_version must be an integer >= 1, got {version!r}"
                )


TASKS: Registry[TaskSpec] = Registry("task")

SEMANTIC_LOSS_SIZES = ("output", "label")
"""Where the semantic loss is computed: at the adapter's own output size with nearest-resized labels (deap
tasks/semseg.py `loss_function`), or at the label size with the output resized bilinearly to it."""

CENTER_DECODERS = ("separate", "shared")
"""Centres: one decoder for the heatmap and one for the sizes (the paper's code), or one for all three."""

INSTANCE_HEADS = ("trained", "frozen")
"""Whether the instance head is optimised with the adapter or stays at its random N(0, 1) draw."""

MAX_DETECTIONS = 100
"""Boxes kept per image (CenterNet's top-K peaks)."""


@dataclass(frozen=True)
class SemanticOptions:
    semantic_loss_size: str = field(
        default="output",
        metadata={
            "help": "compute the loss at the adapter's own output size, labels resized to it "
            "(nearest; the paper's code), or at the label size.",
            "choices": SEMANTIC_LOSS_SIZES,
        },
    )

    def __post_init__(self) -> None:
        check_choice(self.semantic_loss_size, SEMANTIC_LOSS_SIZES, "--semantic-loss-size")


@dataclass(frozen=True)
class DepthOptions:
    min_depth: float = field(default=1e-3, metadata={"help": "valid ground truth is > this (metres)."})
    max_depth: float = field(default=10.0, metadata={"help": "valid ground truth is < this (metres)."})

    def __post_init__(self) -> None:
        if not 0 <= self.min_depth < self.max_depth:
            raise MaxaError(f"need 0 <= --min-depth < --max-depth, got {self.min_depth} and {self.max_depth}")


@dataclass(frozen=True)
class InstanceOptions:
    instance_dim: int = field(
        default=16,
        metadata={"help": "embedding width per pixel (a head maps it to one class per training instance)."},
    )
    instance_subsample: float = field(
        default=1.0,
        metadata={"help": "fraction of a batch's pixels in the loss (the paper's code: 1 = all)."},
    )
    cluster_size: int = field(
        default=112, metadata={"help": "k-means runs on a cluster_size² resize (paper: 112)."}
    )
    instance_head: str = field(
        default="trained",
        metadata={
            "help": "train the per-instance head with the adapter, or keep it frozen at its random draw "
            "(whether the paper trained it is not public).",
            "choices": INSTANCE_HEADS,
        },
    )

    def __post_init__(self) -> None:
        for name in ("instance_dim", "cluster_size"):
            if getattr(self, name) < 1:
                raise MaxaError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.instance_subsample <= 1:
            raise MaxaError(f"--instance-subsample must be in (0, 1], got {self.instance_subsample}")
        check_choice(self.instance_head, INSTANCE_HEADS, "--instance-head")


@dataclass(frozen=True)
class CentersOptions:
    max_detections: int = field(
        default=MAX_DETECTIONS, metadata={"help": "boxes kept per image (top-K peaks)."}
    )
    center_decoders: str = field(
        default="separate",
        metadata={
            "help": "separate (a decoder for the heatmap and one for the sizes, the paper's code) or shared "
            "(one decoder for all three channels).",
            "choices": CENTER_DECODERS,
        },
    )

    def __post_init__(self) -> None:
        if self.max_detections < 1:
            raise MaxaError(f"--max-detections must be >= 1, got {self.max_detections}")
        check_choice(self.center_decoders, CENTER_DECODERS, "--center-decoders")


_BUILT_IN: tuple[tuple[str, str, type, str, str, str, str, tuple[int, int]], ...] = (
    # name, help, options, target array, label, primary metric, Task subclass and evaluator (same stem),
    # (objective, metric) protocol versions
    ("semantic", "semantic segmentation: per-pixel class logits, cross-entropy; scored by mIoU",
     SemanticOptions, "semantic", "semantic segmentation", "miou", "SemanticSegmentation:SemanticEvaluator",
     (1, 1)),
    ("depth", "metric depth: log-metres, DINOv2's scale-invariant log loss; scored by RMSE",
     DepthOptions, "depth", "depth", "rmse", "Depth:DepthEvaluator", (1, 1)),
    ("boundary", "instance boundaries: a per-pixel binary map, binary cross-entropy; scored by IoU",
     NoOptions, "boundary", "instance boundaries", "iou", "Boundary:BoundaryEvaluator", (1, 1)),
    ("instance", "instance discrimination: every training instance its own class; k-means + ARI",
     InstanceOptions, "instances", "instance discrimination", "ari",
     "InstanceDiscrimination:InstanceEvaluator",
     (1, 2)),  # metric 2: the ARI variants ari_fg and pair_auc beside ARI (its value unchanged)
    ("centers", "object centres and sizes (CenterNet-style, class-agnostic); scored by box AP_large",
     CentersOptions, "instances", "object centres (box AP)", "ap_large", "Centers:CentersEvaluator", (1, 1)),
)  # fmt: skip

for _name, _help, _options, _target, _label, _primary, _code, (_objective, _metric) in _BUILT_IN:
    _task, _evaluator = _code.split(":")
    TASKS.register(
        TaskSpec(
            name=_name,
            help=_help,
            options=_options,
            target=_target,
            label=_label,
            primary=_primary,
            implementation=f"maxa.probe.tasks:{_task}",
            evaluator=f"maxa.evaluate.run:{_evaluator}",
            objective_version=_objective,
            metric_version=_metric,
        )
    )
