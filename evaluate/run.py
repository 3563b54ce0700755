"""`maxa evaluate`: a trained adapter on the held-out split -> a metrics JSON for DVC."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from maxa.evaluate.metrics import ConfusionMatrix
from maxa.extract.device import resolve_device
from maxa.extract.errors import MaxaError
from maxa.extract.sample import IGNORE_INDEX
from maxa.probe.data import load_pair
from maxa.probe.tasks import get_task
from maxa.probe.train import load_checkpoint


def _constant_baseline(prior: list[float], target: torch.Tensor, num_classes: int) -> dict[str, float]:
    """Scores of predicting the training class frequencies everywhere (the floor a probe must beat)."""
    probs = torch.tensor(prior, dtype=torch.float64).clamp(min=1e-8)
    valid = target != IGNORE_INDEX
    ce = float(-probs.log()[target[valid].long()].mean()) if valid.any() else math.nan
    cm = ConfusionMatrix(num_classes)
    cm.update(torch.full_like(target, int(probs.argmax())), target)
    return {"miou": cm.miou(), "pixel_accuracy": cm.pixel_accuracy(), "ce": ce}


@torch.inference_mode()
def evaluate(
    checkpoint: str,
    features_url: str,
    targets_url: str,
    *,
    batch_size: int = 32,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    dev = resolve_device(device)
    model, meta = load_checkpoint(checkpoint, dev)
    task = get_task(meta["config"]["task"])
    data = load_pair(features_url, targets_url, meta["config"]["layer"], task.target)
    if data.features.shape[-1] != meta["in_channels"]:
        raise MaxaError(
            f"features in {features_url} have {data.features.shape[-1]} channels; "
            f"checkpoint {checkpoint} was trained on {meta['in_channels']}"
        )
    num_classes = meta["num_classes"]
    cm = ConfusionMatrix(num_classes)
    ce_sum, ce_count = 0.0, 0
    output_size = tuple(data.targets.shape[1:])
    for start in tqdm(range(0, len(data), batch_size), desc="evaluate", disable=not progress):
        x = data.features[start : start + batch_size].to(dev)
        y = data.targets[start : start + batch_size].to(dev).long()
        logits = model(x, output_size=output_size).float()
        valid = y != IGNORE_INDEX
        ce_sum += float(F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum"))
        ce_count += int(valid.sum())
        cm.update(task.predict(logits), y)
    names = meta["class_names"]
    iou = cm.iou()
    fprov = data.feature_store.provenance
    return {
        "backbone": meta["backbone"],
        "model": fprov["model"],
        "weights": fprov["weights"],
        "task": meta["config"]["task"],
        "adapter": meta["config"]["adapter"],
        "dataset": data.target_store.provenance["dataset"],
        "split": data.target_store.provenance["split"],
        "miou": cm.miou(),
        "pixel_accuracy": cm.pixel_accuracy(),
        "ce": ce_sum / max(ce_count, 1),
        "per_class_iou": {names[i]: (None if math.isnan(v) else float(v)) for i, v in enumerate(iou)},
        "constant_baseline": _constant_baseline(meta["class_prior"], data.targets, num_classes),
        "adapter_params": meta["adapter_params"],
        "backbone_params": meta["backbone_params"],
        "adapter_pct_of_backbone": meta["adapter_pct_of_backbone"],
        "protocol": {
            "input_size": fprov["input_size"],
            "feature_grid": meta["feature_shape"][:2],
            "layer": data.layer,
            "label_size": data.target_store.provenance["label_size"],
            "iterations": meta["config"]["iterations"],
            "batch_size": meta["config"]["batch_size"],
            "train_samples": meta["train_samples"],
            "eval_samples": len(data),
        },
    }


def write_metrics(metrics: dict[str, Any], out: str) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(metrics, indent=2) + "\n")
