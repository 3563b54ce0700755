"""Dense-task metrics, accumulated batch by batch over a split.

Semantic segmentation (confusion matrix: IoU, mIoU, accuracy), depth (RMSE, AbsRel, log10, delta
thresholds), binary maps (IoU/F-score at 0.5, MSE), instance discrimination (k-means + adjusted Rand index)
and class-agnostic box AP (pycocotools COCOeval). Each is checked against an independent computation in
tests/evaluate/test_metrics.py.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from maxa.core.errors import MaxaError
from maxa.core.sample import IGNORE_INDEX


class ConfusionMatrix:
    """Accumulates (true, predicted) pixel counts; ignore-labelled pixels never count."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        valid = (target != IGNORE_INDEX) & (target >= 0) & (target < self.num_classes)
        t, p = target[valid].long(), pred[valid].long().clamp(0, self.num_classes - 1)
        self.matrix += (
            torch.bincount(t * self.num_classes + p, minlength=self.num_classes**2)
            .view(self.num_classes, self.num_classes)
            .cpu()
        )

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for classes absent from both ground truth and prediction."""
        m = self.matrix.double()
        inter = m.diag()
        union = m.sum(0) + m.sum(1) - inter
        iou = torch.where(union > 0, inter / union.clamp(min=1), torch.full_like(inter, float("nan")))
        return iou.numpy()

    def miou(self) -> float:
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        total = int(self.matrix.sum())
        return float(self.matrix.diag().sum()) / total if total else float("nan")


class DepthMetrics:
    """Standard monocular-depth errors pooled over every valid pixel of the split (metres).

    Valid pixels have ground truth strictly inside (min_depth, max_depth), as the MAXA paper's code
    counts them (deap/tasks/depth_estimation.py, line 46); predictions are used as given, unclamped, as
    there. Pooling over pixels, not averaging per image, is that code's RMSE (lines 59-62). The log and
    ratio metrics need positive predictions: a non-positive one is an error, not a silent NaN.
    """

    NAMES = ("rmse", "abs_rel", "sq_rel", "rmse_log", "log10", "delta1", "delta2", "delta3")

    def __init__(self, min_depth: float = 1e-3, max_depth: float = 10.0) -> None:
        self.min_depth, self.max_depth = min_depth, max_depth
        self.sums = dict.fromkeys(("sq", "abs_rel", "sq_rel", "sq_log", "log10", "d1", "d2", "d3"), 0.0)
        self.count = 0

    def update(self, pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor | None = None) -> None:
        """`region`: an optional (H, W) mask of the pixels a protocol scores (e.g. NYU's Eigen crop)."""
        t = target.double()
        valid = (t > self.min_depth) & (t < self.max_depth)
        if region is not None:
            valid &= region.to(valid.device)
        p, t = pred.double().to(t.device)[valid], t[valid]
        if t.numel() == 0:
            return
        if bool((p <= 0).any()):
            raise MaxaError(
                f"{int((p <= 0).sum())} depth predictions are <= 0 m: log and ratio metrics need > 0"
            )
        ratio = torch.maximum(p / t, t / p)
        log_diff = p.log() - t.log()
        self.sums["sq"] += float(((p - t) ** 2).sum())
        self.sums["abs_rel"] += float(((p - t).abs() / t).sum())
        self.sums["sq_rel"] += float(((p - t) ** 2 / t).sum())
        self.sums["sq_log"] += float((log_diff**2).sum())
        self.sums["log10"] += float((p.log10() - t.log10()).abs().sum())
        for k in (1, 2, 3):
            self.sums[f"d{k}"] += float((ratio < 1.25**k).sum())
        self.count += int(t.numel())

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            return dict.fromkeys(self.NAMES, float("nan"))
        n = self.count
        return {
            "rmse": math.sqrt(self.sums["sq"] / n),
            "abs_rel": self.sums["abs_rel"] / n,
            "sq_rel": self.sums["sq_rel"] / n,
            "rmse_log": math.sqrt(self.sums["sq_log"] / n),
            "log10": self.sums["log10"] / n,
            "delta1": self.sums["d1"] / n,
            "delta2": self.sums["d2"] / n,
            "delta3": self.sums["d3"] / n,
        }


class BinaryMetrics:
    """Binary maps (instance boundaries) pooled over all pixels: IoU, precision, recall, F-score at a
    threshold, and the mean squared error of the probabilities."""

    def __init__(self, threshold: float = 0.5) -> None:
        self.threshold = threshold
        self.tp = self.fp = self.fn = 0
        self.squared_error = 0.0
        self.count = 0

    def update(self, prob: torch.Tensor, target: torch.Tensor) -> None:
        truth = target > 0
        pred = prob > self.threshold
        self.tp += int((pred & truth).sum())
        self.fp += int((pred & ~truth).sum())
        self.fn += int((~pred & truth).sum())
        self.squared_error += float(((prob.double() - truth.double()) ** 2).sum())
        self.count += int(truth.numel())

    def compute(self) -> dict[str, float]:
        def ratio(num: float, den: float) -> float:
            return num / den if den else float("nan")

        precision = ratio(self.tp, self.tp + self.fp)
        recall = ratio(self.tp, self.tp + self.fn)
        return {
            "iou": ratio(self.tp, self.tp + self.fp + self.fn),
            "f1": ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn),
            "precision": precision,
            "recall": recall,
            "mse": ratio(self.squared_error, self.count),
        }


def cluster_instances(embedding: np.ndarray, k: int, *, n_init: int = 15, seed: int = 0) -> np.ndarray:
    """(D, H, W) per-pixel embedding -> (H, W) k-means cluster ids over all pixels (the MAXA protocol)."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    d, h, w = embedding.shape
    points = embedding.reshape(d, -1).T.astype(np.float64)
    # One image is a small problem: thread start-up costs more than it saves (and far more on a busy CPU).
    with warnings.catch_warnings(), threadpool_limits(1):
        # Constant embeddings (e.g. the baseline) have fewer distinct points than clusters: expected.
        warnings.simplefilter("ignore")
        labels = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(points)
    return labels.reshape(h, w)


class InstanceARI:
    """Instance discrimination as the MAXA paper's code scores it (deap tasks/instance_discrimination.py,
    `rand_index`): per image, k = the number of objects in the full-resolution ground truth; the embedding
    is resized bilinearly to `size` x `size`, the ground truth by nearest neighbour, the background mask
    bilinearly (a pixel is foreground when less than half of it is background); k-means over all pixels;
    adjusted Rand index over the foreground pixels; mean over images. Images without objects do not count.
    """

    def __init__(self, size: int = 112, n_init: int = 15, seed: int = 0) -> None:
        self.size, self.n_init, self.seed = size, n_init, seed
        self.scores: list[float] = []

    def update_image(self, embedding: np.ndarray, instances: np.ndarray) -> None:
        """`embedding` (D, h, w) at any resolution; `instances` (H, W) ids at full resolution, 0 = none."""
        from sklearn.metrics import adjusted_rand_score

        k = len(np.unique(instances[instances > 0]))
        if k == 0:
            return
        size = (self.size, self.size)
        emb = F.interpolate(torch.from_numpy(embedding)[None].float(), size=size, mode="bilinear")[0]
        ids = torch.from_numpy(np.asarray(instances, np.int64))[None, None].float()
        truth = F.interpolate(ids, size=size, mode="nearest")[0, 0].long().numpy()
        # uint8 bilinear rounds, as the reference's byte mask does: foreground = under half background
        background = F.interpolate((ids == 0).to(torch.uint8), size=size, mode="bilinear")[0, 0]
        foreground = (background != 1).numpy()
        if not foreground.any():
            return
        labels = cluster_instances(emb.numpy(), k, n_init=self.n_init, seed=self.seed)
        self.scores.append(float(adjusted_rand_score(truth[foreground], labels[foreground])))

    def update(self, embeddings: torch.Tensor, instances: torch.Tensor | np.ndarray) -> None:
        emb = embeddings.detach().float().cpu().numpy()
        inst = np.asarray(instances)
        for i in range(emb.shape[0]):
            self.update_image(emb[i], inst[i])

    def compute(self) -> dict[str, float]:
        return {"ari": float(np.mean(self.scores)) if self.scores else float("nan")}


class BoxAP:
    """Class-agnostic box AP with pycocotools' COCOeval (max 100 detections, COCO's area ranges).

    Boxes are xyxy in label-map pixels; each image's x and y are scaled by its original width / label
    width and original height / label height, so areas are measured in the original image's pixels and
    COCO's small/medium/large ranges keep their meaning. Ground-truth areas are box areas, as torchmetrics'
    MeanAveragePrecision (the paper's scorer) gives pycocotools for boxes.
    """

    NAMES = ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large")

    def __init__(self) -> None:
        self.gt: list[dict] = []
        self.dt: list[dict] = []
        self.images = 0

    @staticmethod
    def _xywh(box: np.ndarray, scale: tuple[float, float]) -> list[float]:
        x0, x1 = float(box[0]) * scale[0], float(box[2]) * scale[0]
        y0, y1 = float(box[1]) * scale[1], float(box[3]) * scale[1]
        return [x0, y0, x1 - x0, y1 - y0]

    def update_image(
        self,
        gt_boxes: np.ndarray,
        boxes: np.ndarray,
        scores: np.ndarray,
        scale: tuple[float, float] = (1.0, 1.0),
    ) -> None:
        """`scale`: (original width / label width, original height / label height) of this image."""
        image = self.images
        self.images += 1
        for box in np.asarray(gt_boxes, np.float64).reshape(-1, 4):
            xywh = self._xywh(box, scale)
            self.gt.append(
                {
                    "id": len(self.gt) + 1,
                    "image_id": image,
                    "category_id": 1,
                    "bbox": xywh,
                    "area": xywh[2] * xywh[3],
                    "iscrowd": 0,
                }
            )
        for box, score in zip(
            np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores).ravel(), strict=True
        ):
            self.dt.append(
                {"image_id": image, "category_id": 1, "bbox": self._xywh(box, scale), "score": float(score)}
            )

    def compute(self) -> dict[str, float]:
        if not self.gt:
            return dict.fromkeys(self.NAMES, float("nan"))
        if not self.dt:
            return dict.fromkeys(self.NAMES, 0.0)
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            coco = COCO()
            coco.dataset = {
                "images": [{"id": i} for i in range(self.images)],
                "annotations": [dict(a) for a in self.gt],
                "categories": [{"id": 1, "name": "object"}],
            }
            coco.createIndex()
            detections = coco.loadRes([dict(d) for d in self.dt])
            evaluator = COCOeval(coco, detections, iouType="bbox")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        values = [float(v) for v in evaluator.stats[:6]]
        return {name: (v if v >= 0 else float("nan")) for name, v in zip(self.NAMES, values, strict=True)}
