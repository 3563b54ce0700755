"""The checkpoint record: what evaluation, the report and plots need to rebuild and describe an adapter.

`CheckpointMeta` is the one writer (`to_dict`, the `meta` beside the weights in a checkpoint file,
plain JSON-like values so `torch.load(weights_only=True)` reads it) and the one reader (`from_dict`,
which validates and is the only place older checkpoint formats are known). Loading it imports neither
torch nor the trainer. How a run read and trained (loader, timings, resume step, sweep mode...) travels
in `other` unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from maxa.core.errors import MaxaError
from maxa.core.records import require_fields

CHECKPOINT_FORMAT = 3
"""3: run_id, dataset, backbone_fingerprint and the stores' fingerprints are required fields."""

REQUIRED = (
    "format",
    "run_id",
    "config",
    "in_channels",
    "out_channels",
    "output_size",
    "num_classes",
    "class_names",
    "backbone",
    "backbone_fingerprint",
    "dataset",
    "layers",
    "feature_store",
    "target_store",
)
"""Fields a format-3 checkpoint must carry; older formats are read with what they have."""

LEGACY_OPTIONS = {"semantic_loss_size": "label", "center_decoders": "shared", "instance_head": "trained"}
"""What checkpoints written before these task options existed were trained with (read as recorded)."""

_KEYS = (
    *REQUIRED,
    "task_options",
    "split",
    "backbone_fields",
    "adapter_options",
    "stats",
    "class_prior",
    "feature_shape",
    "layer",
    "adapter_params",
    "backbone_params",
    "adapter_pct_of_backbone",
    "train_samples",
    "validation",
    "losses",
    "sweep",
)


@dataclass(frozen=True)
class CheckpointMeta:
    """A trained (or built) adapter's record. `config` holds the probe config's fields as trained."""

    run_id: str
    config: dict[str, Any]
    in_channels: int
    out_channels: int
    output_size: list[int]
    num_classes: int
    class_names: list[str]
    backbone: str
    layers: list[str]
    backbone_fingerprint: str | None = None
    dataset: str | None = None  # the target store's dataset name
    split: str | None = None  # the split trained on (evaluate refuses it unless told); None: not recorded
    backbone_fields: dict[str, Any] | None = None  # what a refused join names (None: not recorded)
    feature_store: dict[str, Any] | None = None  # {url, fingerprint} of the training stores
    target_store: dict[str, Any] | None = None
    task_options: dict[str, Any] | None = None  # None: written before task options were recorded
    adapter_options: dict[str, Any] | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    feature_shape: list[int] = field(default_factory=list)
    adapter_params: int = 0
    backbone_params: int = 0
    adapter_pct_of_backbone: float | None = None  # None: the store records no backbone parameters
    train_samples: int = 0
    validation: dict[str, Any] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    sweep: dict[str, Any] | None = None  # a sweep's grid, members and choice (on the chosen copy)
    other: dict[str, Any] = field(default_factory=dict)
    format: int = CHECKPOINT_FORMAT

    @property
    def task(self) -> str:
        return str(self.config["task"])

    @property
    def adapter(self) -> str:
        return str(self.config["adapter"])

    @property
    def loader(self) -> str:
        """How training read the store (`memory`, `stream`, `sequential`), from the run's info."""
        return str(self.other.get("loader", ""))

    @property
    def samples_per_second(self) -> float | None:
        """The training rate the run measured (None when its record has none)."""
        rate = self.other.get("samples_per_second")
        return None if rate is None else float(rate)

    @property
    def class_prior(self) -> Any:
        return self.stats.get("class_prior")

    def to_dict(self) -> dict[str, Any]:
        out = {
            "format": self.format,
            "run_id": self.run_id,
            "config": dict(self.config),
            "task_options": self.task_options,
            "adapter_options": self.adapter_options,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "output_size": list(self.output_size),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "stats": self.stats,
            "class_prior": self.class_prior,
            "backbone": self.backbone,
            "backbone_fingerprint": self.backbone_fingerprint,
            **({} if self.backbone_fields is None else {"backbone_fields": self.backbone_fields}),
            "dataset": self.dataset,
            **({} if self.split is None else {"split": self.split}),
            "feature_store": self.feature_store,
            "target_store": self.target_store,
            "feature_shape": list(self.feature_shape),
            "layer": ",".join(self.layers),
            "layers": list(self.layers),
            "adapter_params": self.adapter_params,
            "backbone_params": self.backbone_params,
            "adapter_pct_of_backbone": self.adapter_pct_of_backbone,
            "train_samples": self.train_samples,
            "validation": self.validation,
            "losses": list(self.losses),
            **self.other,
        }
        if self.sweep is not None:
            out["sweep"] = self.sweep
        require_fields(out, REQUIRED, "checkpoint metadata")
        return out

    @classmethod
    def from_dict(cls, meta: Mapping[str, Any], where: str) -> CheckpointMeta:
        """Validate a checkpoint's metadata; formats 1 and 2, and task options added since, are migrated
        here and only here."""
        if not isinstance(meta, Mapping):
            raise MaxaError(f"{where} is not a maxa checkpoint (metadata is not a mapping)")
        version = int(meta.get("format", 0) or 0)
        if version > CHECKPOINT_FORMAT:
            raise MaxaError(
                f"{where} has format {version}, this maxa reads up to {CHECKPOINT_FORMAT}; upgrade maxa"
            )
        if version >= 3:
            require_fields(meta, REQUIRED, where)
        else:
            require_fields(meta, ("config", "in_channels", "out_channels"), where)
        config = {**LEGACY_OPTIONS, **meta["config"]}
        given = meta.get("task_options")
        task_options = {**LEGACY_OPTIONS, **given} if isinstance(given, Mapping) else None
        # Format 1 named one layer (`layer`, maybe "a,b"); format 2 on added `layers`.
        layers = meta.get("layers") or str(meta.get("layer") or config.get("layer", "")).split(",")
        # Format 1 recorded only the class prior, not the training statistics.
        stats = meta.get("stats") or {"class_prior": meta.get("class_prior")}
        return cls(
            run_id=str(meta.get("run_id") or ""),
            config=config,
            in_channels=int(meta["in_channels"]),
            out_channels=int(meta["out_channels"]),
            output_size=[int(v) for v in meta.get("output_size") or []],
            num_classes=int(meta.get("num_classes", 0) or 0),
            class_names=[str(n) for n in meta.get("class_names") or []],
            backbone=str(meta.get("backbone", "")),
            layers=[str(n) for n in layers if str(n)],
            backbone_fingerprint=meta.get("backbone_fingerprint"),
            dataset=meta.get("dataset"),
            split=meta.get("split"),
            backbone_fields=meta.get("backbone_fields"),
            feature_store=meta.get("feature_store"),
            target_store=meta.get("target_store"),
            task_options=task_options,
            adapter_options=meta.get("adapter_options"),
            stats=dict(stats),
            feature_shape=[int(v) for v in meta.get("feature_shape") or []],
            adapter_params=int(meta.get("adapter_params", 0) or 0),
            backbone_params=int(meta.get("backbone_params", 0) or 0),
            adapter_pct_of_backbone=_optional_float(meta.get("adapter_pct_of_backbone")),
            train_samples=int(meta.get("train_samples", 0) or 0),
            validation=dict(meta.get("validation") or {}),
            losses=[float(v) for v in meta.get("losses") or []],
            sweep=meta.get("sweep"),
            other={k: v for k, v in meta.items() if k not in _KEYS},
            format=version,
        )


def _optional_float(value: Any) -> float | None:
    """A number that may be null with a reason (e.g. the adapter's share of no backbone)."""
    return None if value is None else float(value)
