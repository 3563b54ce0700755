"""The record of one fitted adapter (maxa.core.checkpoint_meta.CheckpointMeta) and its checkpoint file."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from torch import nn

from maxa.core.checkpoint_meta import CheckpointMeta
from maxa.core.records import run_id
from maxa.probe.adapters import count_parameters
from maxa.probe.checkpoint import save_checkpoint
from maxa.probe.fitting import Fitted
from maxa.probe.inputs import RunSetup
from maxa.probe.tasks import Task

NO_BACKBONE = "the feature store records no backbone parameters (a control store, or one written by hand)"
"""Why `adapter_pct_of_backbone` is null (the metrics record's `nulls` says so)."""


def adapter_pct(adapter_params: int, backbone_params: int) -> float | None:
    """The adapter's size in % of the backbone's; None when the store names no backbone parameters."""
    return 100.0 * adapter_params / backbone_params if backbone_params > 0 else None


def checkpoint_meta(
    fitted: Fitted, setup: RunSetup, task: Task, info: dict[str, Any], urls: tuple[str, str]
) -> CheckpointMeta:
    """Everything evaluation and the report need to rebuild and describe the adapter."""
    config, model = fitted.config, fitted.model
    features_url, targets_url = urls
    pair = setup.pair.with_layers(config.layers())
    h, w, c = pair.feature_shape
    num_classes = pair.num_classes
    fprov, tprov = pair.fprov, pair.tprov
    adapter_params = count_parameters(model)
    backbone_params = int(fprov.need("backbone_params", f"feature store {features_url}"))
    backbone = fprov.backbone
    held = 0 if setup.holdout is None else len(setup.holdout)
    return CheckpointMeta(
        run_id=run_id(
            backbone,
            config.adapter,
            config.task,
            config.result_fields(),
            pair.features.fingerprint,
            pair.targets.fingerprint,
        ),
        config=asdict(config),
        task_options=config.task_options(),
        adapter_options=fitted.adapter_options,
        in_channels=c,
        out_channels=int(getattr(model, "out_channels", task.out_channels(num_classes))),
        output_size=list(pair.label_size),
        num_classes=num_classes,
        class_names=list(tprov.class_names),
        stats=setup.stats,
        backbone=backbone,
        backbone_fingerprint=fprov.backbone_fingerprint,
        backbone_fields=fprov.backbone_fields,  # what a refused join names when the fingerprint differs
        dataset=tprov.dataset.name,
        split=tprov.dataset.split,  # evaluate refuses this split unless told (--allow-training-split)
        feature_store={"url": features_url, "fingerprint": pair.features.fingerprint},
        target_store={"url": targets_url, "fingerprint": pair.targets.fingerprint},
        feature_shape=[h, w, c],
        layers=list(pair.layers),
        adapter_params=adapter_params,
        backbone_params=backbone_params,
        adapter_pct_of_backbone=adapter_pct(adapter_params, backbone_params),
        train_samples=len(pair) - held,
        validation={
            "fraction": config.val_fraction,
            "seed": config.val_seed,
            "samples": held,
            "data_seed": config.batch_seed(),
            "loss": fitted.val_loss,
        },
        losses=fitted.losses,
        other=info,
    )


def save_model(model: nn.Module, meta: CheckpointMeta, out: str | Path) -> None:
    """The adapter's tensors (on CPU) and its metadata record, written atomically."""
    save_checkpoint(out, {k: v.detach().cpu() for k, v in model.state_dict().items()}, meta)
