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
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from maxa.core.errors import MaxaError
from maxa.core.sample import IGNORE_INDEX
from maxa.evaluate.instance_pairs import matched_distance_auc

if TYPE_CHECKING:
    from pycocotools.cocoeval import COCOeval


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


def cluster_points(points: np.ndarray, k: int, *, n_init: int = 15, seed: int = 0) -> np.ndarray:
    """(n, D) points -> (n,) k-means cluster ids."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    # One image is a small problem: thread start-up costs more than it saves (and far more on a busy CPU).
    with warnings.catch_warnings(), threadpool_limits(1):
        # Constant embeddings (e.g. the baseline) have fewer distinct points than clusters: expected.
        warnings.simplefilter("ignore")
        return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(points.astype(np.float64))


def cluster_instances(embedding: np.ndarray, k: int, *, n_init: int = 15, seed: int = 0) -> np.ndarray:
    """(D, H, W) per-pixel embedding -> (H, W) k-means cluster ids over all pixels (the MAXA protocol)."""
    d, h, w = embedding.shape
    return cluster_points(embedding.reshape(d, -1).T, k, n_init=n_init, seed=seed).reshape(h, w)


class InstanceARI:
    """Instance discrimination as the MAXA paper's code scores it (deap tasks/instance_discrimination.py,
    `rand_index`): per image, k = the number of objects in the full-resolution ground truth; the embedding
    is resized bilinearly to `size` x `size`, the ground truth by nearest neighbour, the background mask
    bilinearly (a pixel is foreground when less than half of it is background); k-means over all pixels;
    adjusted Rand index over the foreground pixels; mean over images. Images without objects do not count.

    Beside it, two variants that position alone does not win (docs/protocols.md): `ari_fg`, k-means over
    the foreground pixels only (k from the truth, as above), and `pair_auc`, the same-instance pair AUC at
    matched pixel distance (evaluate/instance_pairs.py; images with fewer than two objects do not count).
    """

    def __init__(self, size: int = 112, n_init: int = 15, seed: int = 0) -> None:
        self.size, self.n_init, self.seed = size, n_init, seed
        self.scores: list[float] = []
        self.fg_scores: list[float] = []
        self.pair_scores: list[float] = []

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
        points = emb.numpy()[:, foreground].T
        if len(points) >= k:
            fg_labels = cluster_points(points, k, n_init=self.n_init, seed=self.seed)
            self.fg_scores.append(float(adjusted_rand_score(truth[foreground], fg_labels)))
        auc = matched_distance_auc(emb.numpy(), truth, foreground, seed=self.seed)
        if auc is not None:
            self.pair_scores.append(auc)

    def update(self, embeddings: torch.Tensor, instances: torch.Tensor | np.ndarray) -> None:
        emb = embeddings.detach().float().cpu().numpy()
        inst = np.asarray(instances)
        for i in range(emb.shape[0]):
            self.update_image(emb[i], inst[i])

    def compute(self) -> dict[str, float]:
        def mean(values: list[float]) -> float:
            return float(np.mean(values)) if values else float("nan")

        return {"ari": mean(self.scores), "ari_fg": mean(self.fg_scores), "pair_auc": mean(self.pair_scores)}


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

    def _evaluated(self) -> COCOeval:
        """COCOeval over every image after its per-image matching (`evaluate()`), output silenced."""
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
        return evaluator

    def compute(self) -> dict[str, float]:
        if not self.gt:
            return dict.fromkeys(self.NAMES, float("nan"))
        if not self.dt:
            return dict.fromkeys(self.NAMES, 0.0)
        evaluator = self._evaluated()
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator.accumulate()
            evaluator.summarize()
        values = [float(v) for v in evaluator.stats[:6]]
        return {name: (v if v >= 0 else float("nan")) for name, v in zip(self.NAMES, values, strict=True)}

    def undefined(self, unit: str = "box") -> dict[str, str]:
        """Why a metric has no value: COCOeval gives -1 (NaN here) where no ground-truth box is counted.

        `unit` names the pixels the areas are in (e.g. "original-image")."""
        if not self.gt:
            return dict.fromkeys(self.NAMES, "no ground-truth boxes on this split")
        from pycocotools.cocoeval import Params

        areas = np.asarray([a["area"] for a in self.gt], np.float64)
        params = Params(iouType="bbox")  # COCOeval counts a box in a range when lo <= area <= hi
        reasons = {}
        for label, (low, high) in zip(params.areaRngLbl, params.areaRng, strict=True):
            if label == "all" or ((areas >= low) & (areas <= high)).any():
                continue
            span = f"{low:.0f} to {high:.0f}" if high < 1e10 else f">= {low:.0f}"
            reasons[f"ap_{label}"] = (
                f"no ground-truth box in COCO's {label} range (area {span} {unit} pixels²)"
            )
        return reasons

    def resampler(self) -> BoxAPResampler:
        """Box AP over multisets of these images, for the bootstrap (see BoxAPResampler)."""
        return BoxAPResampler(self)


def resample_counts(counts: np.ndarray, n: int) -> np.ndarray:
    """Check a resample: `counts[i]` copies of image i, one non-negative integer per image."""
    array = np.asarray(counts)
    if array.shape != (n,) or not np.issubdtype(array.dtype, np.integer) or bool((array < 0).any()):
        raise MaxaError(
            f"resample counts must be {n} non-negative integers (copies of each test image); "
            f"got shape {array.shape}, dtype {array.dtype}"
        )
    return array.astype(np.int64)


class BoxAPResampler:
    """BoxAP.compute() over a multiset of its images (`counts[i]` copies of image i), exactly.

    COCOeval matches detections to ground truth per image (`evaluate()`: one `evalImgs` entry per area
    range and image); only `accumulate()` pools the matches, ranking every detection by score. So the
    matching runs once, and a resample pools the matches of the drawn images, an image drawn c times
    c times, in image order (score ties break as in a fresh evaluation of the drawn images). The pooling
    is `accumulate()`'s arithmetic over numpy arrays: pycocotools' own loop over detections takes 25 ms
    per resample of 64 images with 100 detections each (25 s for 1000 resamples); this, under 2 ms. The
    AP values are read from the precision array as `summarize()` reads them (mean over entries > -1, at
    100 detections). BoxAP.compute()'s shortcuts hold per resample: no ground truth drawn -> NaN, no
    detection drawn -> 0. Checked against a fresh BoxAP of the drawn images in tests/evaluate/test_metrics.py.
    """

    def __init__(self, metrics: BoxAP) -> None:
        self.metrics = metrics
        self.n = metrics.images
        self.prepared = False

    def __len__(self) -> int:
        return self.n

    def prepare(self) -> None:
        """Match every image once and keep its per-detection outcomes as arrays."""
        n = self.n
        self.gts = np.bincount([g["image_id"] for g in self.metrics.gt], minlength=n)
        self.dts = np.bincount([d["image_id"] for d in self.metrics.dt], minlength=n)
        self.prepared = True
        if not self.metrics.gt or not self.metrics.dt:
            return  # every resample takes a shortcut of compute()
        evaluator = self.metrics._evaluated()
        params = evaluator.params
        areas = len(params.areaRng)
        if list(params.imgIds) != list(range(n)) or len(evaluator.evalImgs) != areas * n:
            raise MaxaError(f"COCOeval scored {len(params.imgIds)} images of {n}: BoxAP's image ids changed")
        thresholds = len(params.iouThrs)
        # evalImgs[a * n + i]: area range a, image i (None: no ground truth and no detection there)
        entries = [[evaluator.evalImgs[a * n + i] for i in range(n)] for a in range(areas)]
        self.lengths = np.asarray([0 if e is None else len(e["dtScores"]) for e in entries[0]], np.int64)
        self.starts = np.cumsum(self.lengths) - self.lengths
        self.scores = np.asarray([s for e in entries[0] if e is not None for s in e["dtScores"]], np.float64)

        def stacked(key: str) -> np.ndarray:  # (areas, thresholds, detections): the per-image columns
            empty = np.zeros((thresholds, 0))
            return np.stack(
                [np.concatenate([empty if e is None else e[key] for e in row], axis=1) for row in entries]
            )

        matched, ignored = stacked("dtMatches") != 0, stacked("dtIgnore") != 0
        areas_thresholds = (areas * thresholds, -1)  # row a * thresholds + t
        self.hit = (matched & ~ignored).reshape(areas_thresholds)  # a true positive
        self.counted = (~ignored).reshape(areas_thresholds)  # a true or a false positive
        self.npig = np.asarray(
            [[0 if e is None else int(np.count_nonzero(e["gtIgnore"] == 0)) for e in row] for row in entries],
            np.int64,
        )
        self.rec_thrs = np.asarray(params.recThrs, np.float64)
        area = {label: list(params.areaRngLbl).index(label) for label in ("all", "small", "medium", "large")}
        every = np.arange(thresholds)
        at50, at75 = np.where(params.iouThrs == 0.5)[0], np.where(params.iouThrs == 0.75)[0]
        # summarize()'s first six stats: (IoU threshold rows, area range), all at 100 detections
        self.picks: dict[str, tuple[np.ndarray, int]] = {
            "ap": (every, area["all"]),
            "ap50": (at50, area["all"]),
            "ap75": (at75, area["all"]),
            "ap_small": (every, area["small"]),
            "ap_medium": (every, area["medium"]),
            "ap_large": (every, area["large"]),
        }

    def compute(self, counts: np.ndarray) -> dict[str, float]:
        """The metrics of `counts[i]` copies of image i, as BoxAP.compute() of those images gives them."""
        if not self.prepared:
            self.prepare()
        counts = resample_counts(counts, self.n)
        if int(counts @ self.gts) == 0:
            return dict.fromkeys(BoxAP.NAMES, float("nan"))
        if int(counts @ self.dts) == 0:
            return dict.fromkeys(BoxAP.NAMES, 0.0)
        drawn = np.repeat(np.arange(self.n), counts)
        lengths = self.lengths[drawn]
        rows = np.arange(int(lengths.sum())) + np.repeat(
            self.starts[drawn] - (np.cumsum(lengths) - lengths), lengths
        )
        ranked = rows[np.argsort(-self.scores[rows], kind="mergesort")]  # accumulate()'s stable ranking
        precision = self._precision(ranked, self.npig @ counts)
        out: dict[str, float] = {}
        for name, (at, area) in self.picks.items():
            s = precision[area][at]
            s = s[s > -1]
            out[name] = float(np.mean(s)) if s.size else float("nan")
        return out

    def _precision(self, ranked: np.ndarray, npig: np.ndarray) -> np.ndarray:
        """(areas, thresholds, recall thresholds) interpolated precision; -1 where no ground truth counts.

        accumulate()'s values, read at the true positives only: recall rises only there, and the
        precision envelope (the best precision at this recall or beyond) is a precision at one of them.
        """
        areas, thresholds = npig.size, self.hit.shape[0] // npig.size
        precision = -np.ones((areas, thresholds, self.rec_thrs.size))
        hit = self.hit[:, ranked]
        counted = np.cumsum(self.counted[:, ranked], axis=1, dtype=np.int32)  # true + false positives
        for a in range(areas):
            if npig[a] == 0:
                continue
            for t in range(thresholds):
                row = a * thresholds + t
                at_hits = np.flatnonzero(hit[row])
                hits = np.arange(1, at_hits.size + 1, dtype=np.float64)
                recall = hits / npig[a]
                envelope = np.maximum.accumulate((hits / (counted[row, at_hits] + np.spacing(1)))[::-1])[::-1]
                at = np.searchsorted(recall, self.rec_thrs, side="left")
                reached = at < at_hits.size  # recall thresholds beyond the last hit keep precision 0
                precision[a, t] = 0.0
                precision[a, t, reached] = envelope[at[reached]]
        return precision
