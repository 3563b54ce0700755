"""`maxa evaluate`: a trained adapter on the held-out split -> a metrics JSON for DVC.

Every task reports all its metrics under `scores`, its headline metric under `primary`, and the same
metrics for the constant baseline: the best input-independent output fit on the training targets
(recorded in the checkpoint), scored through the very same decoding and metric code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from maxa.core.records import run_key, write_metrics
from maxa.evaluate.metrics import BinaryMetrics, BoxAP, ConfusionMatrix, DepthMetrics, InstanceARI
from maxa.extract.device import resolve_device
from maxa.extract.errors import MaxaError
from maxa.extract.sample import IGNORE_INDEX
from maxa.probe.centernet import boxes_from_instances
from maxa.probe.checkpoint import check_join, file_fingerprint, load_checkpoint
from maxa.probe.data import open_pair
from maxa.probe.loader import sequential_blocks
from maxa.probe.tasks import Task, get_task

__all__ = ["EVALUATORS", "PRIMARY", "evaluate", "write_metrics"]

PRIMARY: dict[str, tuple[str, bool]] = {
    "semantic": ("miou", True),
    "depth": ("rmse", False),
    "boundary": ("iou", True),
    "instance": ("ari", True),
    "centers": ("ap_large", True),
}
"""Headline metric of each task and whether higher is better."""


class Evaluator(Protocol):
    def update(self, output: torch.Tensor, raw: np.ndarray) -> None: ...

    def compute(self) -> dict[str, float]: ...


class SemanticEvaluator:
    def __init__(self, task: Task, meta: dict[str, Any]) -> None:
        self.task = task
        self.cm = ConfusionMatrix(int(meta["num_classes"]))
        self.ce_sum, self.ce_count = 0.0, 0
        self.class_names: list[str] = list(meta.get("class_names") or [])

    def update(self, output: torch.Tensor, raw: np.ndarray) -> None:
        target = torch.from_numpy(np.asarray(raw)).long().to(output.device)
        self.ce_sum += float(
            F.cross_entropy(output.float(), target, ignore_index=IGNORE_INDEX, reduction="sum")
        )
        self.ce_count += int((target != IGNORE_INDEX).sum())
        self.cm.update(self.task.predict(output).cpu(), target.cpu())

    def compute(self) -> dict[str, float]:
        return {
            "miou": self.cm.miou(),
            "pixel_accuracy": self.cm.pixel_accuracy(),
            "ce": self.ce_sum / self.ce_count if self.ce_count else math.nan,
        }

    def per_class_iou(self) -> dict[str, float | None]:
        names = self.class_names or [str(i) for i in range(self.cm.num_classes)]
        return {names[i]: (None if math.isnan(v) else float(v)) for i, v in enumerate(self.cm.iou())}


class DepthEvaluator:
    """Depth errors in the valid range; NYU-Depth v2 is scored inside the Eigen crop, as the paper does."""

    def __init__(self, task: Task, meta: dict[str, Any]) -> None:
        self.task = task
        self.metrics = DepthMetrics(task.min_depth, task.max_depth)
        self.region: torch.Tensor | None = None
        if meta.get("dataset") == "nyu":
            from maxa.extract.datasets.nyu import eigen_crop_mask

            self.region = torch.from_numpy(eigen_crop_mask(tuple(meta["output_size"])))

    def update(self, output: torch.Tensor, raw: np.ndarray) -> None:
        target = torch.from_numpy(np.asarray(raw, np.float32))
        self.metrics.update(self.task.predict(output).cpu(), target, self.region)

    def compute(self) -> dict[str, float]:
        return self.metrics.compute()


class BoundaryEvaluator:
    def __init__(self, task: Task, meta: dict[str, Any]) -> None:
        self.task = task
        self.metrics = BinaryMetrics(threshold=0.5)
        self.bce_sum, self.count = 0.0, 0

    def update(self, output: torch.Tensor, raw: np.ndarray) -> None:
        target = torch.from_numpy(np.asarray(raw)).float()
        logits = output[:, 0].float().cpu()
        self.bce_sum += float(F.binary_cross_entropy_with_logits(logits, target, reduction="sum"))
        self.count += target.numel()
        self.metrics.update(self.task.predict(output).cpu(), target)

    def compute(self) -> dict[str, float]:
        return {**self.metrics.compute(), "bce": self.bce_sum / self.count if self.count else math.nan}


class InstanceEvaluator:
    """Clusters at most `cluster_size` pixels a side (the paper: 112): predictions resized bilinearly,
    ground truth by nearest neighbour."""

    def __init__(self, task: Task, meta: dict[str, Any]) -> None:
        self.task = task
        self.metrics = InstanceARI(seed=int(meta["config"].get("seed", 0)))
        self.size = task.cluster_size

    def update(self, output: torch.Tensor, raw: np.ndarray) -> None:
        embeddings, instances = self.task.predict(output), torch.from_numpy(np.asarray(raw).astype(np.int64))
        h, w = instances.shape[-2:]
        if max(h, w) > self.size:
            size = (max(1, round(h * self.size / max(h, w))), max(1, round(w * self.size / max(h, w))))
            embeddings = F.interpolate(embeddings, size=size, mode="bilinear", align_corners=False)
            instances = F.interpolate(instances[:, None].float(), size=size, mode="nearest")[:, 0].long()
        self.metrics.update(embeddings, instances.numpy())

    def compute(self) -> dict[str, float]:
        return self.metrics.compute()


class CentersEvaluator:
    def __init__(self, task: Task, meta: dict[str, Any]) -> None:
        self.task = task
        self.metrics = BoxAP(tuple(meta["output_size"]))

    def update(self, output: torch.Tensor, raw: np.ndarray) -> None:
        for (boxes, scores), instances in zip(self.task.predict(output), np.asarray(raw), strict=True):
            gt_boxes, gt_areas = boxes_from_instances(instances)
            self.metrics.update_image(gt_boxes, boxes.numpy(), scores.numpy(), gt_areas)

    def compute(self) -> dict[str, float]:
        return self.metrics.compute()


EVALUATORS: dict[str, Callable[[Task, dict[str, Any]], Evaluator]] = {
    "semantic": SemanticEvaluator,
    "depth": DepthEvaluator,
    "boundary": BoundaryEvaluator,
    "instance": InstanceEvaluator,
    "centers": CentersEvaluator,
}


def _stats(meta: dict[str, Any]) -> dict[str, Any]:
    """Training statistics (format-1 checkpoints only recorded the class prior)."""
    return meta.get("stats") or {"class_prior": meta.get("class_prior")}


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
    config = meta["config"]
    task = get_task(config["task"], **meta.get("task_options", {}))
    if task.name not in EVALUATORS:
        raise MaxaError(f"no evaluation is defined for task {task.name!r} (checkpoint {checkpoint})")
    pair = open_pair(features_url, targets_url, meta.get("layers") or meta["layer"], task.target)
    check_join(meta, checkpoint, pair.features, pair.targets, pair.layers)
    if pair.feature_shape[2] != meta["in_channels"]:
        raise MaxaError(
            f"features in {features_url} have {pair.feature_shape[2]} channels; "
            f"checkpoint {checkpoint} was trained on {meta['in_channels']}"
        )
    stats = _stats(meta)
    meta = {**meta, "dataset": pair.targets.provenance["dataset"]}
    scores, baseline = EVALUATORS[task.name](task, meta), EVALUATORS[task.name](task, meta)
    size = pair.label_size
    bar = tqdm(total=len(pair), desc=f"evaluate {task.name}", unit="img", disable=not progress)
    for feats, raw in sequential_blocks(pair):
        assert feats is not None
        for start in range(0, len(raw), batch_size):
            x = torch.from_numpy(feats[start : start + batch_size]).to(dev)
            y = raw[start : start + batch_size]
            scores.update(model(x, output_size=size).float(), y)
            baseline.update(task.constant_output(stats, len(y), size).to(dev), y)
            bar.update(len(y))
    bar.close()
    values, constant = scores.compute(), baseline.compute()
    name, higher = PRIMARY.get(task.name, (next(iter(values)), True))
    fprov, tprov = pair.features.provenance, pair.targets.provenance
    result: dict[str, Any] = {
        "run_id": meta.get("run_id") or run_key({**meta, "task": task.name, "adapter": config["adapter"]}),
        "backbone": meta["backbone"],
        "model": fprov["model"],
        "weights": fprov["weights"],
        "task": task.name,
        "adapter": config["adapter"],
        "dataset": tprov["dataset"],
        "split": tprov["split"],
        "stores": {
            "features": {"url": features_url, "fingerprint": pair.features.fingerprint},
            "targets": {"url": targets_url, "fingerprint": pair.targets.fingerprint},
        },
        "checkpoint": {"path": checkpoint, "fingerprint": file_fingerprint(checkpoint)},
        "scores": values,
        "primary": {"name": name, "value": values[name], "higher_is_better": higher},
        "constant_baseline": constant,
        "adapter_params": meta["adapter_params"],
        "backbone_params": meta["backbone_params"],
        "adapter_pct_of_backbone": meta["adapter_pct_of_backbone"],
        "protocol": {
            "input_size": fprov["input_size"],
            "feature_grid": meta["feature_shape"][:2],
            "layer": ",".join(pair.layers),
            "label_size": tprov["label_size"],
            "iterations": config["iterations"],
            "batch_size": config["batch_size"],
            "train_samples": meta["train_samples"],
            "eval_samples": len(pair),
            "task_options": meta.get("task_options", {}),
        },
    }
    if isinstance(scores, DepthEvaluator):
        result["protocol"]["eigen_crop"] = scores.region is not None
    if isinstance(scores, SemanticEvaluator):
        result.update({k: values[k] for k in ("miou", "pixel_accuracy", "ce")})
        result["per_class_iou"] = scores.per_class_iou()
    return result
