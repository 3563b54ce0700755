"""Dense tasks: the target a task reads, its head size, target encoding, loss and prediction decoding.

A task also knows its training-set statistics (summed block by block, so a store never has to fit in
memory): they initialise the adapter's output bias (the output starts at the best constant, so short
probes measure features rather than the time a bias needs to drift) and define the constant baseline
that evaluation compares against. Adding a task means one `Task` subclass registered with `@register_task`.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from maxa.extract.errors import MaxaError
from maxa.extract.sample import IGNORE_INDEX
from maxa.probe import centernet

Stats = dict[str, Any]
Sums = dict[str, Any]  # additive statistics: numbers or arrays
SIGLOSS_LAMBDA = 0.15  # DINOv2's (and the MAXA paper's) weight of the squared mean log error
INSTANCE_IGNORE = -1


class Task:
    """Base class. Subclasses set `name` and `target` (the target-store array they read)."""

    name: str = ""
    target: str = ""
    knn_link: str | None = None
    """How the k-NN baseline maps averaged patch values to outputs ('log'); None: k-NN unsupported."""

    def __init__(
        self,
        *,
        min_depth: float = 1e-3,
        max_depth: float = 10.0,
        max_instances: int = 16,
        max_detections: int = 100,
        cluster_size: int = 112,
    ) -> None:
        self.cluster_size = int(cluster_size)  # evaluation only: the resolution instance clustering runs at
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.max_instances, self.max_detections = int(max_instances), int(max_detections)

    def out_channels(self, num_classes: int) -> int:
        raise NotImplementedError

    def encode(self, raw: np.ndarray) -> np.ndarray:
        """Stored target block (n, H, W) -> the training target block the loss compares against."""
        return raw

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def predict(self, output: Tensor) -> Any:
        """Outputs (B, K, H, W) -> the task's prediction (labels, metres, probabilities, boxes...)."""
        raise NotImplementedError

    def block_stats(self, raw: np.ndarray) -> Sums:
        """Additive statistics of one raw target block; summed over the training set by `fit_stats`."""
        return {}

    def finish_stats(self, sums: Sums, num_classes: int) -> Stats:
        return {}

    def output_bias(self, stats: Stats) -> list[float]:
        """Initial per-channel output bias: the best constant output under the training loss."""
        raise NotImplementedError

    def constant_output(self, stats: Stats, batch: int, size: tuple[int, int]) -> Tensor:
        """The constant baseline's output (B, K, H, W): the best input-independent constant."""
        bias = torch.tensor(self.output_bias(stats), dtype=torch.float32)
        return bias.view(1, -1, 1, 1).expand(batch, -1, *size).clone()

    def require_knn(self) -> None:
        """Raise the user error for tasks the k-NN baseline cannot label."""
        if self.knn_link is None:
            supported = ", ".join(n for n in task_names() if getattr(_TASKS[n], "knn_link", None))
            raise MaxaError(
                f"the k-NN baseline does not support task {self.name!r} (it supports {supported})"
            )

    def patch_values(self, raw: np.ndarray, grid: tuple[int, int], num_classes: int) -> tuple[Tensor, Tensor]:
        """k-NN bank labels: raw (n, H, W) -> values (n, h, w, V) per feature patch and a valid mask."""
        self.require_knn()
        raise NotImplementedError


def fit_stats(task: Task, blocks: Iterable[np.ndarray], num_classes: int) -> Stats:
    """Sum `task.block_stats` over raw target blocks and finish them into JSON-able statistics."""
    sums: Sums = {}
    for block in blocks:
        for key, value in task.block_stats(block).items():
            sums[key] = sums[key] + value if key in sums else np.asarray(value, np.float64)
    return task.finish_stats(sums, num_classes)


def _pool(values: Tensor, grid: tuple[int, int]) -> Tensor:
    """(n, V, H, W) -> (n, V, h, w) means over each patch's pixels (any H/h ratio)."""
    return F.adaptive_avg_pool2d(values, grid)


_TASKS: dict[str, Callable[..., Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    _TASKS[cls.name] = cls
    return cls


def task_names() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str, **options: Any) -> Task:
    if name not in _TASKS:
        close = difflib.get_close_matches(name, task_names(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise MaxaError(f"unknown task {name!r}{hint} (known: {', '.join(task_names())})")
    return _TASKS[name](**options)


@register_task
class SemanticSegmentation(Task):
    """Per-pixel class logits; cross-entropy that skips ignore-labelled pixels."""

    name = "semantic"
    target = "semantic"
    knn_link = "log"

    def out_channels(self, num_classes: int) -> int:
        return num_classes

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output.float(), target.long(), ignore_index=IGNORE_INDEX)

    def predict(self, output: Tensor) -> Tensor:
        return output.argmax(dim=1)

    def block_stats(self, raw: np.ndarray) -> Sums:
        labels = raw[raw != IGNORE_INDEX].astype(np.int64)
        return {"counts": np.bincount(labels, minlength=256)[:256].astype(np.float64)}

    def finish_stats(self, sums: Sums, num_classes: int) -> Stats:
        counts = sums.get("counts", np.zeros(256))[:num_classes]
        return {"class_prior": (counts / max(counts.sum(), 1.0)).tolist()}

    def output_bias(self, stats: Stats) -> list[float]:
        return [math.log(max(p, 1e-6)) for p in stats["class_prior"]]

    def patch_values(self, raw: np.ndarray, grid: tuple[int, int], num_classes: int) -> tuple[Tensor, Tensor]:
        from maxa.probe.knn import patch_labels  # the one patch-labelling rule (local k-NN test too)

        labels = patch_labels(np.asarray(raw), grid, num_classes)
        valid = labels != IGNORE_INDEX
        return F.one_hot(torch.where(valid, labels, 0), num_classes).float(), valid


@register_task
class Depth(Task):
    """Metric depth: the adapter predicts log-metres, trained with DINOv2's scale-invariant log loss.

    Only ground truth inside (min_depth, max_depth) counts, in the loss and in every metric.
    """

    name = "depth"
    target = "depth"
    knn_link = "log"

    def out_channels(self, num_classes: int) -> int:
        return 1

    def encode(self, raw: np.ndarray) -> np.ndarray:
        depth = np.asarray(raw, np.float32)
        return np.where((depth > self.min_depth) & (depth < self.max_depth), depth, 0.0).astype(np.float32)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """sqrt(Var(g) + lambda * mean(g)^2), g = log prediction - log truth over the batch's valid pixels."""
        valid = target > 0
        if not valid.any():
            return output.float().sum() * 0.0
        g = output[:, 0].float()[valid] - target[valid].float().log()
        variance = g.var() if g.numel() > 1 else g.new_zeros(())
        return torch.sqrt(variance + SIGLOSS_LAMBDA * g.mean() ** 2 + 1e-12)

    def predict(self, output: Tensor) -> Tensor:
        """Depth in metres, clamped to the valid range (as depth benchmarks do before scoring)."""
        return output[:, 0].float().exp().clamp(self.min_depth, self.max_depth)

    def block_stats(self, raw: np.ndarray) -> Sums:
        depth = self.encode(raw)
        valid = depth[depth > 0].astype(np.float64)
        return {"log_sum": np.log(valid).sum(), "sum": valid.sum(), "count": np.float64(valid.size)}

    def finish_stats(self, sums: Sums, num_classes: int) -> Stats:
        count = float(sums.get("count", 0.0))
        if count == 0:
            raise MaxaError(
                f"no valid depth in the training targets (valid: {self.min_depth} < d < {self.max_depth} m)"
            )
        return {"mean_log_depth": float(sums["log_sum"]) / count, "mean_depth": float(sums["sum"]) / count}

    def output_bias(self, stats: Stats) -> list[float]:
        return [stats["mean_log_depth"]]

    def constant_output(self, stats: Stats, batch: int, size: tuple[int, int]) -> Tensor:
        # The constant with the least squared error is the mean depth (RMSE is the headline metric).
        return torch.full((batch, 1, *size), math.log(stats["mean_depth"]))

    def patch_values(self, raw: np.ndarray, grid: tuple[int, int], num_classes: int) -> tuple[Tensor, Tensor]:
        depth = torch.from_numpy(self.encode(raw))[:, None]
        valid = (depth > 0).float()
        total, count = _pool(depth, grid), _pool(valid, grid)
        mean = total / count.clamp(min=1e-12)
        return mean.permute(0, 2, 3, 1), count[:, 0] > 0


@register_task
class Boundary(Task):
    """Instance boundaries as a per-pixel binary map, trained with binary cross-entropy."""

    name = "boundary"
    target = "boundary"

    def out_channels(self, num_classes: int) -> int:
        return 1

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(output[:, 0].float(), target.float())

    def predict(self, output: Tensor) -> Tensor:
        """Boundary probability per pixel."""
        return output[:, 0].float().sigmoid()

    def block_stats(self, raw: np.ndarray) -> Sums:
        return {"positive": np.float64((raw > 0).sum()), "count": np.float64(raw.size)}

    def finish_stats(self, sums: Sums, num_classes: int) -> Stats:
        return {"positive_rate": float(sums.get("positive", 0.0)) / max(float(sums.get("count", 0.0)), 1.0)}

    def output_bias(self, stats: Stats) -> list[float]:
        p = min(max(stats["positive_rate"], 1e-6), 1 - 1e-6)
        return [math.log(p / (1 - p))]


def relabel_instances(raw: np.ndarray, max_instances: int) -> np.ndarray:
    """Per image: background -> 0, instance ids in increasing order -> 1..n, ids beyond the cap -> ignore."""
    out = np.zeros(raw.shape, np.int16)
    for i, inst in enumerate(np.asarray(raw)):
        positive = inst > 0
        ids = np.unique(inst[positive])
        dense = np.searchsorted(ids, inst[positive]) + 1
        out[i][positive] = np.where(dense <= max_instances, dense, INSTANCE_IGNORE)
    return out


@register_task
class InstanceDiscrimination(Task):
    """Per-pixel instance-id logits (0 = background, ids 1..max_instances), cross-entropy over ids.

    Ids are renumbered per image in increasing order, so the classes mean "the i-th object of this image";
    at test time the per-pixel class probabilities are clustered with k-means, k = objects in the image.
    """

    name = "instance"
    target = "instances"

    def out_channels(self, num_classes: int) -> int:
        return self.max_instances + 1

    def encode(self, raw: np.ndarray) -> np.ndarray:
        return relabel_instances(raw, self.max_instances)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output.float(), target.long(), ignore_index=INSTANCE_IGNORE)

    def predict(self, output: Tensor) -> Tensor:
        """Per-pixel embeddings for clustering: the softmax over instance ids (B, K+1, H, W)."""
        return output.float().softmax(dim=1)

    def block_stats(self, raw: np.ndarray) -> Sums:
        ids = self.encode(raw)
        counts = np.bincount(ids[ids >= 0].astype(np.int64).ravel(), minlength=self.max_instances + 1)
        return {"counts": counts.astype(np.float64)}

    def finish_stats(self, sums: Sums, num_classes: int) -> Stats:
        counts = sums.get("counts", np.zeros(self.max_instances + 1))
        return {"id_prior": (counts / max(counts.sum(), 1.0)).tolist()}

    def output_bias(self, stats: Stats) -> list[float]:
        return [math.log(max(p, 1e-6)) for p in stats["id_prior"]]


@register_task
class Centers(Task):
    """CenterNet-style: a centre heatmap (focal loss) and box width/height (L1 at centres), class-agnostic.

    Ground-truth boxes come from the instance masks at label resolution.
    """

    name = "centers"
    target = "instances"

    def out_channels(self, num_classes: int) -> int:
        return 3

    def encode(self, raw: np.ndarray) -> np.ndarray:
        return centernet.encode(np.asarray(raw))

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return centernet.loss(output, target)

    def predict(self, output: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per image: (boxes (k, 4) xyxy in label pixels, scores (k,)), from local maxima of the heatmap."""
        return centernet.decode(output, self.max_detections)

    def block_stats(self, raw: np.ndarray) -> Sums:
        encoded = centernet.encode(np.asarray(raw))
        centres = encoded[:, 0] == 1.0
        return {
            "width": np.float64(encoded[:, 1][centres].sum()),
            "height": np.float64(encoded[:, 2][centres].sum()),
            "objects": np.float64(centres.sum()),
            "heat": np.float64(encoded[:, 0].sum()),
            "pixels": np.float64(encoded[:, 0].size),
        }

    def finish_stats(self, sums: Sums, num_classes: int) -> Stats:
        objects = max(float(sums.get("objects", 0.0)), 1.0)
        return {
            "mean_width": float(sums.get("width", 0.0)) / objects,
            "mean_height": float(sums.get("height", 0.0)) / objects,
            "mean_heat": float(sums.get("heat", 0.0)) / max(float(sums.get("pixels", 0.0)), 1.0),
        }

    def output_bias(self, stats: Stats) -> list[float]:
        # CenterNet starts the heatmap at probability 0.1 so the focal loss does not explode early on.
        return [math.log(0.1 / 0.9), stats["mean_width"], stats["mean_height"]]

    def constant_output(self, stats: Stats, batch: int, size: tuple[int, int]) -> Tensor:
        p = min(max(stats["mean_heat"], 1e-6), 1 - 1e-6)
        bias = torch.tensor([math.log(p / (1 - p)), stats["mean_width"], stats["mean_height"]])
        return bias.view(1, 3, 1, 1).expand(batch, -1, *size).clone()
