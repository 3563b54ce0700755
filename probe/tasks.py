"""Dense tasks: the target a task reads, its head size, target encoding, loss and prediction decoding.

A task also knows its training-set statistics (summed block by block, so a store never has to fit in
memory): they initialise the adapter's output bias (the output starts at the best constant, so short
probes measure features rather than the time a bias needs to drift) and define the constant baseline
that evaluation compares against.

What a task is (its target array, headline metric, label, options, evaluator) is declared once by its
spec in probe/task_specs.py, which names the `Task` subclass here that implements it; `get_task` builds
it from the spec. Scoring lives in maxa.evaluate (probe never imports evaluate), named by the spec.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from maxa.core.errors import MaxaError
from maxa.core.registry import resolve
from maxa.core.sample import IGNORE_INDEX
from maxa.probe import centernet
from maxa.probe.patch_labels import patch_labels  # the one patch-labelling rule (local k-NN test too)
from maxa.probe.task_specs import TASKS, TaskSpec

Stats = dict[str, Any]
Sums = dict[str, Any]  # additive statistics: numbers or arrays
SIGLOSS_LAMBDA = 0.15  # DINOv2's (and the MAXA paper's) weight of the squared mean log error


class Task:
    """Base class of a task's training code; its spec (probe/task_specs.py) declares what it is.

    Subclasses implement the methods that raise; each option of the spec becomes an attribute."""

    knn_link: ClassVar[str | None] = None
    """How the k-NN baseline maps averaged patch values to outputs ('log'); None: k-NN unsupported."""
    validates: ClassVar[bool] = True
    """Whether the training loss means something on held-out training images (sweep model selection)."""
    validates_why: ClassVar[str] = ""

    def __init__(self, spec: TaskSpec, **options: Any) -> None:
        self.spec = spec
        self.settings = spec.build_options(options, f"task {spec.name!r}")
        for key in spec.defaults():
            setattr(self, key, getattr(self.settings, key))

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def target(self) -> str:
        """The target-store array the task reads."""
        return self.spec.target

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def primary(self) -> str:
        return self.spec.primary

    def options(self) -> dict[str, Any]:
        """The task's option values (recorded with every result)."""
        return {key: getattr(self, key) for key in self.spec.defaults()}

    def out_channels(self, num_classes: int) -> int:
        raise NotImplementedError

    def output_groups(self) -> tuple[int, ...]:
        """Channel counts of outputs that each get a decoder of their own (the paper's code builds one full
        decoder per named output); () = one decoder for all channels."""
        return ()

    def loss_size(self, label_size: tuple[int, int], native_size: tuple[int, int] | None) -> tuple[int, int]:
        """The size the adapter's output has when the training loss sees it: the label size, or the
        adapter's own output size (`native_size`, None for adapters without one) where the task says so."""
        return label_size

    def encode(self, raw: np.ndarray, start: int = 0) -> np.ndarray:
        """Stored target block (n, H, W) -> the training target block the loss compares against.

        `start` is the block's first row in the training store (tasks whose classes span images use it).
        """
        return raw

    def build_head(self, stats: Stats) -> nn.Module | None:
        """Training-only parameters the loss applies to the adapter's output (None: the loss needs none).

        They are optimized with the adapter but are not part of it: evaluation reads the adapter's output.
        """
        return None

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
            supported = ", ".join(n for n in task_names() if task_class(n).knn_link)
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
            if isinstance(value, list):  # per-image lists are concatenated in store order
                sums[key] = sums.get(key, []) + value
            else:
                sums[key] = sums[key] + value if key in sums else np.asarray(value, np.float64)
    return task.finish_stats(sums, num_classes)


def _pool(values: Tensor, grid: tuple[int, int]) -> Tensor:
    """(n, V, H, W) -> (n, V, h, w) means over each patch's pixels (any H/h ratio)."""
    return F.adaptive_avg_pool2d(values, grid)


def task_class(name: str) -> type[Task]:
    """The Task subclass that implements task `name` (imported from where its spec names it)."""
    cls = resolve(TASKS.get(name).implementation)
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise MaxaError(f"task {name!r}: {TASKS.get(name).implementation} is not a maxa Task subclass")
    return cls


def task_names() -> list[str]:
    return TASKS.names()


def get_task(name: str, **options: Any) -> Task:
    """Task `name` with its options; options of other tasks (a config carries all of them) are dropped."""
    spec = TASKS.get(name)
    if "max_instances" in options:  # recorded by checkpoints of the retired per-image instance objective
        if name == "instance":
            raise MaxaError(
                "this instance checkpoint was trained with the retired per-image id objective; "
                "retrain it (instances are now classes across the training set, as in the paper's code)"
            )
        options = {k: v for k, v in options.items() if k != "max_instances"}
    known = {key for other in TASKS.specs() for key in other.defaults()}
    unknown = sorted(set(options) - known)
    if unknown:
        raise MaxaError(f"unknown task option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    own = spec.defaults()
    return task_class(name)(spec, **{k: v for k, v in options.items() if k in own})


def resize_labels(labels: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, H, W) class ids -> (B, h, w) by torch's `nearest` (the paper's code resizes its labels so)."""
    resized = F.interpolate(labels[:, None].float(), size=size, mode="nearest")
    return resized[:, 0].to(labels.dtype)


class SemanticSegmentation(Task):
    """Per-pixel class logits; cross-entropy that skips ignore-labelled pixels."""

    knn_link = "log"
    semantic_loss_size: str

    def out_channels(self, num_classes: int) -> int:
        return num_classes

    def loss_size(self, label_size: tuple[int, int], native_size: tuple[int, int] | None) -> tuple[int, int]:
        """deap tasks/semseg.py `loss_function` scores the decoder's own output (labels are resized to it)."""
        if self.semantic_loss_size == "output" and native_size is not None:
            return native_size
        return label_size

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy skipping ignore pixels; labels of another size are resized to the output's
        (nearest, as the paper's code does)."""
        if tuple(target.shape[-2:]) != tuple(output.shape[-2:]):
            target = resize_labels(target, (int(output.shape[-2]), int(output.shape[-1])))
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
        labels = patch_labels(np.asarray(raw), grid, num_classes)
        valid = labels != IGNORE_INDEX
        return F.one_hot(torch.where(valid, labels, 0), num_classes).float(), valid


class Depth(Task):
    """Metric depth: the adapter predicts log-metres, trained with DINOv2's scale-invariant log loss.

    Only ground truth inside (min_depth, max_depth) counts, in the loss and in every metric.
    """

    knn_link = "log"
    min_depth: float
    max_depth: float

    def out_channels(self, num_classes: int) -> int:
        return 1

    def encode(self, raw: np.ndarray, start: int = 0) -> np.ndarray:
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
        """Depth in metres, unclamped: the paper's code scores its predictions as they come (#9.8)."""
        return output[:, 0].float().exp()

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


class Boundary(Task):
    """Instance boundaries as a per-pixel binary map, trained with binary cross-entropy."""

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


KMEANS_N_INIT = 15
"""k-means restarts per image at test time (deap tasks/instance_discrimination.py, `rand_index`)."""


class InstanceHead(nn.Module):
    """The reference's prediction head: one vector per training instance (column of `weight`, drawn from
    N(0, 1), no bias); logits = embedding @ weight. `trainable=False` keeps it at its draw: the paper's
    public loop (deap train.py) optimises only `model.parameters()`, which do not hold the task's
    `pred_head`, so whether its runs trained the head cannot be read from the public code."""

    def __init__(self, dim: int, classes: int, trainable: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(dim, classes), requires_grad=trainable)

    def forward(self, embedding: Tensor) -> Tensor:
        """(P, dim) pixel embeddings -> (P, classes) logits."""
        return embedding @ self.weight


def dense_instance_ids(raw: np.ndarray) -> np.ndarray:
    """Per image: background -> 0, the instance ids present in increasing order -> 1..n (int64)."""
    out = np.zeros(raw.shape, np.int64)
    for i, inst in enumerate(np.asarray(raw)):
        positive = inst > 0
        out[i][positive] = np.searchsorted(np.unique(inst[positive]), inst[positive]) + 1
    return out


class InstanceDiscrimination(Task):
    """Every training instance is its own class (as in the MAXA paper's code, deap
    tasks/instance_discrimination.py): the adapter outputs a `instance_dim`-wide embedding per pixel, a
    training-only head maps it to logits over background + all instances of the training set, and the
    loss is cross-entropy over every pixel. At test time each image's embeddings are clustered with k-means
    (k = its number of objects at full resolution) and scored with the adjusted Rand index.
    """

    validates: ClassVar[bool] = False
    validates_why: ClassVar[str] = "each training instance is its own class; held-out instances have none"
    instance_dim: int
    cluster_size: int
    instance_subsample: float
    instance_head: str

    def __init__(self, spec: TaskSpec, **options: Any) -> None:
        super().__init__(spec, **options)
        self.offsets: np.ndarray | None = None  # first global class of each training image (fit_stats)
        self.head: InstanceHead | None = None

    def out_channels(self, num_classes: int) -> int:
        return self.instance_dim

    def encode(self, raw: np.ndarray, start: int = 0) -> np.ndarray:
        """Global class per pixel: 0 = background, instance j of training image r -> offsets[r] + j."""
        if self.offsets is None:
            raise MaxaError("instance targets are numbered across the training set: fit_stats must run first")
        dense = dense_instance_ids(raw)
        shift = self.offsets[start : start + len(dense)]
        if len(shift) != len(dense):
            raise MaxaError(
                f"rows {start}..{start + len(dense)} lie outside the {len(self.offsets)} training images"
            )
        return np.where(dense > 0, dense + shift[:, None, None], 0)

    def block_stats(self, raw: np.ndarray) -> Sums:
        return {"instances_per_image": [int(dense_instance_ids(r[None]).max()) for r in np.asarray(raw)]}

    def finish_stats(self, sums: Sums, num_classes: int) -> Stats:
        counts = np.asarray(sums.get("instances_per_image", []), np.int64)
        self.offsets = (
            np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if counts.size else counts
        )
        return {"train_instances": int(counts.sum())}

    def build_head(self, stats: Stats) -> nn.Module:
        classes = int(stats["train_instances"]) + 1
        self.head = InstanceHead(self.instance_dim, classes, trainable=self.instance_head == "trained")
        return self.head

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        if self.head is None:
            raise MaxaError("the instance task's head is built by build_head before training")
        pixels = output.float().permute(0, 2, 3, 1).reshape(-1, output.shape[1])
        labels = target.reshape(-1).long()
        if self.instance_subsample < 1:  # the reference's `subsample`: a random fraction of the pixels
            # Seeded by the batch itself, so a resumed run draws the same pixels.
            generator = torch.Generator().manual_seed(int(labels.sum()) * 1_000_003 + labels.numel())
            count = max(1, int(labels.numel() * self.instance_subsample))
            index = torch.randperm(labels.numel(), generator=generator)[:count].to(labels.device)
            pixels, labels = pixels[index], labels[index]
        return F.cross_entropy(self.head(pixels), labels)

    def predict(self, output: Tensor) -> Tensor:
        """The per-pixel embeddings (B, D, H, W) that k-means clusters."""
        return output.float()

    def output_bias(self, stats: Stats) -> list[float]:
        return [0.0] * self.instance_dim


class Centers(Task):
    """Object centres (Gaussian heatmap, focal loss) and box sizes (L1), class-agnostic, as the MAXA
    paper's code does it (probe/centernet.py has the definitions); decoded boxes are scored with box AP."""

    max_detections: int
    center_decoders: str

    def out_channels(self, num_classes: int) -> int:
        return 3

    def output_groups(self) -> tuple[int, ...]:
        """Heatmap and sizes each with its own decoder, as deap experiments.py `centernet_cfg` builds them
        (outputs centers_gauss 1 and centers_size 2, one `SelfAttReadouts` decoder per output)."""
        return (1, 2) if self.center_decoders == "separate" else ()

    def encode(self, raw: np.ndarray, start: int = 0) -> np.ndarray:
        return centernet.encode(np.asarray(raw))

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return centernet.loss(output, target)

    def predict(self, output: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per image: (boxes (k, 4) xyxy in label pixels, scores (k,)), best first, after NMS."""
        return centernet.decode(output, self.max_detections)

    def block_stats(self, raw: np.ndarray) -> Sums:
        encoded = centernet.encode(np.asarray(raw))
        sizes = encoded[:, 1:3]
        return {
            "size_sum": sizes.sum(axis=(0, 2, 3)).astype(np.float64),
            "size_count": (sizes > 0).sum(axis=(0, 2, 3)).astype(np.float64),
            "heat": np.float64(encoded[:, 0].sum()),
            "pixels": np.float64(encoded[:, 0].size),
        }

    def finish_stats(self, sums: Sums, num_classes: int) -> Stats:
        size = np.asarray(sums.get("size_sum", np.zeros(2))) / np.maximum(
            sums.get("size_count", np.ones(2)), 1
        )
        return {
            "mean_width": float(size[0]),
            "mean_height": float(size[1]),
            "mean_heat": float(sums.get("heat", 0.0)) / max(float(sums.get("pixels", 0.0)), 1.0),
        }

    def output_bias(self, stats: Stats) -> list[float]:
        # The heatmap starts at probability 0.1 (CenterNet's prior), the sizes at their training mean.
        return [math.log(0.1 / 0.9), stats["mean_width"], stats["mean_height"]]

    def constant_output(self, stats: Stats, batch: int, size: tuple[int, int]) -> Tensor:
        p = min(max(stats["mean_heat"], 1e-6), 1 - 1e-6)
        bias = torch.tensor([math.log(p / (1 - p)), stats["mean_width"], stats["mean_height"]])
        return bias.view(1, 3, 1, 1).expand(batch, -1, *size).clone()
