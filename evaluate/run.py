"""`maxa evaluate`: a trained adapter on the held-out split -> a metrics JSON for DVC.

Every task reports all its metrics under `scores`, its headline metric under `primary`, and the same
metrics for the constant baseline: the best input-independent output fit on the training targets
(recorded in the checkpoint), scored through the very same decoding and metric code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from maxa.core.checkpoint_meta import CheckpointMeta
from maxa.core.dataset_facts import NYU_FRAME_SIZE, eigen_crop_mask
from maxa.core.device import resolve_device
from maxa.core.errors import MaxaError
from maxa.core.labels import instance_boxes
from maxa.core.records import run_key
from maxa.core.registry import resolve
from maxa.core.sample import IGNORE_INDEX
from maxa.evaluate.metric_specs import METRICS
from maxa.evaluate.metrics import (
    BinaryMetrics,
    BoxAP,
    BoxAPResampler,
    ConfusionMatrix,
    DepthMetrics,
    InstanceARI,
)
from maxa.probe.checkpoint import check_join, file_fingerprint, load_checkpoint
from maxa.probe.data import StorePair, open_pair
from maxa.probe.loader import sequential_blocks
from maxa.probe.record import NO_BACKBONE
from maxa.probe.task_specs import TASKS
from maxa.probe.tasks import KMEANS_N_INIT, Task, get_task

__all__ = ["evaluate", "evaluator_class"]


class Evaluator(Protocol):
    def update(self, output: torch.Tensor, raw: np.ndarray) -> None: ...

    def compute(self) -> dict[str, float]: ...


def evaluator_class(task_name: str) -> Callable[[Task, CheckpointMeta, StorePair], Evaluator]:
    """The evaluator a task's spec names (probe never imports evaluate, so the spec names it by path)."""
    return resolve(TASKS.get(task_name).evaluator)


def evaluator_for(task: Task, meta: CheckpointMeta, pair: StorePair) -> Evaluator:
    """A fresh evaluator for `task` over `pair`'s rows in store order (`meta`: checkpoint metadata)."""
    return evaluator_class(task.name)(task, meta, pair)


def primary_direction(task: Task) -> bool:
    """Whether a higher headline score is better: the direction of the task's primary metric."""
    if task.primary not in METRICS:
        raise MaxaError(
            f"task {task.name!r}: its primary metric {task.primary!r} is not a registered metric "
            f"(declare a MetricSpec for it beside the task)"
        )
    return METRICS.get(task.primary).higher_is_better


class SemanticEvaluator:
    def __init__(self, task: Task, meta: CheckpointMeta, pair: StorePair) -> None:
        self.task = task
        self.cm = ConfusionMatrix(meta.num_classes)
        self.ce_sum, self.ce_count = 0.0, 0
        self.class_names: list[str] = list(meta.class_names)

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
    """Depth errors as the MAXA paper's code scores NYU (deap/tasks/depth_estimation.py, lines 38-62).

    The prediction, in metres and not clamped, is resized bilinearly to the ground truth's size when
    they differ (lines 38-43); pixels count where 1e-3 < ground truth < 10 (line 46, strict) and, for
    NYU-Depth v2, inside the Eigen crop (rows 45:471, cols 41:601 of the 480x640 frame, lines 55-57);
    errors are pooled over every counted pixel of the split (lines 59-62). Scored at NYU's native 480x640
    when the target store was prepared with `--label-size native`.
    """

    def __init__(self, task: Task, meta: CheckpointMeta, pair: StorePair) -> None:
        self.task = task
        self.metrics = DepthMetrics(task.min_depth, task.max_depth)
        self.nyu = meta.dataset == "nyu"
        self.regions: dict[tuple[int, int], torch.Tensor] = {}
        self.scored_at: tuple[int, int] | None = None

    def region(self, shape: tuple[int, int]) -> torch.Tensor | None:
        if not self.nyu:
            return None
        if shape not in self.regions:
            self.regions[shape] = torch.from_numpy(eigen_crop_mask(shape))
        return self.regions[shape]

    def update(self, output: torch.Tensor, raw: np.ndarray) -> None:
        target = torch.from_numpy(np.asarray(raw, np.float32))
        shape = (int(target.shape[-2]), int(target.shape[-1]))
        # Depth.predict (exp of the log-metre head, unclamped) in float64, so pooled errors do not round.
        metres = output[:, :1].detach().double().cpu().exp()
        if tuple(metres.shape[-2:]) != shape:
            metres = F.interpolate(metres, size=shape, mode="bilinear", align_corners=False)
        self.scored_at = shape
        self.metrics.update(metres[:, 0], target, self.region(shape))

    def compute(self) -> dict[str, float]:
        return self.metrics.compute()

    def protocol(self) -> dict[str, Any]:
        """How the numbers were scored (recorded in the metrics JSON)."""
        return {
            "eigen_crop": self.nyu,
            "depth_scored_at": list(self.scored_at) if self.scored_at else None,
            "depth_native_resolution": self.nyu and self.scored_at == NYU_FRAME_SIZE,
            "depth_valid": f"{self.task.min_depth} < d < {self.task.max_depth} m (ground truth)",
            "depth_clamped": False,
        }


class BoundaryEvaluator:
    def __init__(self, task: Task, meta: CheckpointMeta, pair: StorePair) -> None:
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
    """k-means + ARI at `cluster_size`² (the paper: 112), k counted on the stored (label-size) instances."""

    def __init__(self, task: Task, meta: CheckpointMeta, pair: StorePair) -> None:
        self.task = task
        self.metrics = InstanceARI(
            size=task.cluster_size,
            n_init=KMEANS_N_INIT,
            seed=int(meta.config.get("seed", 0)),
        )

    def update(self, output: torch.Tensor, raw: np.ndarray) -> None:
        self.metrics.update(self.task.predict(output), np.asarray(raw))

    def compute(self) -> dict[str, float]:
        return self.metrics.compute()


def original_sizes(pair: StorePair) -> np.ndarray | None:
    """(N, 2) original (height, width) per row of `pair`, or None for stores prepared before it was kept."""
    if "original_size" not in pair.targets.array_names():
        return None
    return np.asarray(pair.targets.read("original_size"))[pair.target_rows]


class CentersEvaluator:
    """Box AP with areas in original-image pixels (label-map pixels for stores without `original_size`)."""

    def __init__(self, task: Task, meta: CheckpointMeta, pair: StorePair) -> None:
        self.task = task
        self.metrics = BoxAP()
        self.label_size = tuple(pair.label_size)
        self.sizes = original_sizes(pair)
        self.row = 0

    def update(self, output: torch.Tensor, raw: np.ndarray) -> None:
        h, w = self.label_size
        for (boxes, scores), instances in zip(self.task.predict(output), np.asarray(raw), strict=True):
            scale = (1.0, 1.0)
            if self.sizes is not None:
                oh, ow = self.sizes[self.row]
                scale = (float(ow) / w, float(oh) / h)
            self.metrics.update_image(instance_boxes(instances), boxes.numpy(), scores.numpy(), scale)
            self.row += 1

    def compute(self) -> dict[str, float]:
        return self.metrics.compute()

    def undefined(self) -> dict[str, str]:
        """Why a box AP has no value (e.g. no large object on a split of small images)."""
        return self.metrics.undefined("original-image" if self.sizes is not None else "label-map")

    def resampler(self) -> BoxAPResampler:
        """Box AP is no sum of per-image states: the bootstrap resamples COCOeval's per-image matches."""
        return self.metrics.resampler()


def on_training_split(meta: CheckpointMeta, pair: StorePair) -> bool:
    """Whether the pair's target store holds the split the checkpoint was trained on: the same dataset
    and split (checkpoints before `split` was recorded: the very training target store)."""
    ref = pair.tprov.dataset
    if meta.split is not None:
        return meta.split == ref.split and meta.dataset == ref.name
    return (meta.target_store or {}).get("fingerprint") == pair.targets.fingerprint


def open_for_evaluation(
    checkpoint: str,
    features_url: str,
    targets_url: str,
    device: torch.device,
    *,
    allow_training_split: bool = False,
) -> tuple[nn.Module, CheckpointMeta, Task, StorePair]:
    """The checkpoint's adapter, its metadata (with the target store's dataset name), its task and the
    held-out stores, joined and checked field by field: every scorer of a checkpoint starts here.

    Stores of the split the adapter trained on are refused unless `allow_training_split` (a score
    there measures memorisation, and would pass for a result)."""
    model, meta = load_checkpoint(checkpoint, device)
    task = get_task(meta.task, **(meta.task_options or {}))
    pair = open_pair(features_url, targets_url, meta.layers, task.target)
    check_join(meta, checkpoint, pair.features, pair.targets, pair.layers)
    if not allow_training_split and on_training_split(meta, pair):
        split = pair.tprov.dataset.split
        raise MaxaError(
            f"{targets_url} holds split {split!r} of {meta.dataset!r}, the split checkpoint "
            f"{checkpoint} was trained on; score the held-out split, or pass --allow-training-split "
            "(recorded in the metrics)"
        )
    if pair.feature_shape[2] != meta.in_channels:
        raise MaxaError(
            f"features in {features_url} have {pair.feature_shape[2]} channels; "
            f"checkpoint {checkpoint} was trained on {meta.in_channels}"
        )
    return model, replace(meta, dataset=pair.tprov.dataset.name), task, pair


Observer = Callable[[torch.Tensor, np.ndarray], None]
ObserverFactory = Callable[[Evaluator, Callable[[], Evaluator]], Observer]
"""Given the run's evaluator and a maker of fresh ones, something that also sees every scored batch
(the bootstrap's per-image states are collected this way, in the same pass over the split)."""


@torch.inference_mode()
def evaluate(
    checkpoint: str,
    features_url: str,
    targets_url: str,
    *,
    batch_size: int = 32,
    device: str = "auto",
    progress: bool = True,
    observe: ObserverFactory | None = None,
    allow_training_split: bool = False,
) -> dict[str, Any]:
    """Score a checkpoint on held-out stores: the metrics record (without uncertainty)."""
    dev = resolve_device(device)
    model, meta, task, pair = open_for_evaluation(
        checkpoint, features_url, targets_url, dev, allow_training_split=allow_training_split
    )
    config = meta.config
    stats = meta.stats
    scores, baseline = evaluator_for(task, meta, pair), evaluator_for(task, meta, pair)
    watch = observe(scores, lambda: evaluator_for(task, meta, pair)) if observe is not None else None
    size = pair.label_size
    bar = tqdm(total=len(pair), desc=f"evaluate {task.name}", unit="img", disable=not progress)
    for feats, raw in sequential_blocks(pair):
        assert feats is not None
        for start in range(0, len(raw), batch_size):
            x = torch.from_numpy(feats[start : start + batch_size]).to(dev)
            y = raw[start : start + batch_size]
            output = model(x, output_size=size).float()
            scores.update(output, y)
            if watch is not None:
                watch(output, y)
            baseline.update(task.constant_output(stats, len(y), size).to(dev), y)
            bar.update(len(y))
    bar.close()
    values, constant = scores.compute(), baseline.compute()
    name, higher = task.primary, primary_direction(task)
    fprov, tprov = pair.fprov, pair.tprov
    result: dict[str, Any] = {
        "run_id": meta.run_id
        or run_key({"backbone": meta.backbone, "adapter": meta.adapter, "task": task.name}),
        "backbone": meta.backbone,
        "model": fprov.model,
        "weights": fprov.weights,
        "task": task.name,
        "adapter": config["adapter"],
        "dataset": tprov.dataset.name,
        "split": tprov.dataset.split,
        "stores": {
            "features": {"url": features_url, "fingerprint": pair.features.fingerprint},
            "targets": {"url": targets_url, "fingerprint": pair.targets.fingerprint},
        },
        "checkpoint": {"path": checkpoint, "fingerprint": file_fingerprint(checkpoint)},
        "scores": values,
        "primary": {"name": name, "value": values[name], "higher_is_better": higher},
        "constant_baseline": constant,
        "adapter_params": meta.adapter_params,
        "backbone_params": meta.backbone_params,
        "adapter_pct_of_backbone": meta.adapter_pct_of_backbone,
        "protocol": {
            "input_size": fprov.to_dict()["input_size"],
            "feature_grid": meta.feature_shape[:2],
            "layer": ",".join(pair.layers),
            "norm": fprov.norm,
            "label_size": list(tprov.label_size),
            "iterations": config["iterations"],
            "batch_size": config["batch_size"],
            "train_samples": meta.train_samples,
            "eval_samples": len(pair),
            "eval_start": tprov.dataset.options.get("start", 0),  # the held-out range's first
            "task_options": task.options(),
            "schedule": config.get("schedule", "cosine"),
        },
    }
    if on_training_split(meta, pair):
        result["evaluated_on_training_split"] = True  # allowed by --allow-training-split: not a result
    if isinstance(scores, CentersEvaluator):
        result["protocol"]["box_area_pixels"] = "original" if scores.sizes is not None else "label"
    reasons: dict[str, str] = getattr(scores, "undefined", dict)()
    nulls = {f"scores.{k}": why for k, why in reasons.items() if not math.isfinite(values.get(k, 0.0))}
    if not math.isfinite(values.get(name, 0.0)) and name in reasons:
        nulls["primary.value"] = reasons[name]
    if meta.adapter_pct_of_backbone is None:
        nulls["adapter_pct_of_backbone"] = NO_BACKBONE
    if nulls:
        result["nulls"] = nulls
    if isinstance(scores, DepthEvaluator):
        result["protocol"].update(scores.protocol())
    if isinstance(scores, SemanticEvaluator):
        result.update({k: values[k] for k in ("miou", "pixel_accuracy", "ce")})
        result["per_class_iou"] = scores.per_class_iou()
    return result
