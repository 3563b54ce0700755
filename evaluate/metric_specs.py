"""The metrics maxa reports, declared once each (torch-free): how the leaderboard prints the name, which
direction is better (a task's headline direction is its primary metric's), and the values it can take (an
interval is clipped to them). A task's evaluator may report a metric of its own: register a MetricSpec
from the plugin module that declares the task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from maxa.core.registry import Registry, Spec

UNIT = (0.0, 1.0)
NON_NEGATIVE = (0.0, math.inf)
UNBOUNDED = (-math.inf, math.inf)


@dataclass(frozen=True, kw_only=True)
class MetricSpec(Spec):
    label: str = ""
    """How reports print it ("" : the name itself)."""
    higher_is_better: bool = True
    low: float = -math.inf
    high: float = math.inf
    """The values the metric can take (an interval is clipped to them)."""

    def display(self) -> str:
        return self.label or self.name


METRICS: Registry[MetricSpec] = Registry("metric")


def _add(
    name: str, help: str, label: str = "", *, lower: bool = False, values: tuple[float, float] = UNBOUNDED
) -> None:
    METRICS.register(
        MetricSpec(
            name=name, help=help, label=label, higher_is_better=not lower, low=values[0], high=values[1]
        )
    )


_add(
    "miou",
    "mean intersection over union of the classes (confusion matrix over the split)",
    "mIoU",
    values=UNIT,
)
_add("pixel_accuracy", "fraction of labelled pixels classified right", "pixel acc", values=UNIT)
_add("ce", "cross-entropy of the logits per labelled pixel", "CE", lower=True, values=NON_NEGATIVE)
_add(
    "rmse",
    "root mean squared depth error (metres), pooled over valid pixels",
    "RMSE",
    lower=True,
    values=NON_NEGATIVE,
)
_add("abs_rel", "mean |d - d*| / d*", "AbsRel", lower=True, values=NON_NEGATIVE)
_add("sq_rel", "mean (d - d*)² / d*", lower=True, values=NON_NEGATIVE)
_add("rmse_log", "root mean squared log-depth error", lower=True, values=NON_NEGATIVE)
_add("log10", "mean |log10 d - log10 d*|", lower=True, values=NON_NEGATIVE)
_add("delta1", "fraction of pixels with max(d/d*, d*/d) < 1.25", "δ1", values=UNIT)
_add("delta2", "fraction of pixels with max(d/d*, d*/d) < 1.25²", values=UNIT)
_add("delta3", "fraction of pixels with max(d/d*, d*/d) < 1.25³", values=UNIT)
_add("siloss", "scale-invariant log loss", "SI-log", lower=True)
_add("iou", "intersection over union of the positive pixels at probability 0.5", "IoU", values=UNIT)
_add("boundary_iou", "boundary IoU", "BD-IoU", values=UNIT)
_add("f1", "F-score of the positive pixels at probability 0.5", values=UNIT)
_add("precision", "precision of the positive pixels at probability 0.5", values=UNIT)
_add("recall", "recall of the positive pixels at probability 0.5", values=UNIT)
_add("mse", "mean squared error of the probabilities", "MSE", lower=True, values=NON_NEGATIVE)
_add("bce", "binary cross-entropy per pixel", "BCE", lower=True, values=NON_NEGATIVE)
_add("ari", "adjusted Rand index of k-means clusters of the embeddings (deap's)", "ARI", values=(-1.0, 1.0))
_add("ari_fg", "adjusted Rand index on foreground pixels only", values=(-1.0, 1.0))
_add("pair_auc", "same-instance pair AUC at matched pixel distance", values=UNIT)
_add("ap", "class-agnostic box AP over IoU 0.5:0.95 (COCOeval)", "AP", values=UNIT)
_add("ap50", "box AP at IoU 0.5", values=UNIT)
_add("ap75", "box AP at IoU 0.75", values=UNIT)
_add("ap_small", "box AP of small objects (COCO areas)", values=UNIT)
_add("ap_medium", "box AP of medium objects (COCO areas)", values=UNIT)
_add("ap_large", "box AP of large objects (COCO areas)", "AP_large", values=UNIT)
_add("accuracy", "fraction of patches labelled right (k-NN patch labelling)", "acc", values=UNIT)
_add("jf", "mean of region similarity J and contour accuracy F (DAVIS)", "J&F", values=UNIT)
_add("map", "mean average precision of the retrieval rankings", values=UNIT)
_add(
    "mean_first_rank",
    "mean rank of the first relevant gallery item (retrieval)",
    lower=True,
    values=(1.0, math.inf),
)
_add("J-Mean", "DAVIS region similarity J, mean over objects", values=UNIT)
_add("F-Mean", "DAVIS contour accuracy F, mean over objects", values=UNIT)
_add("J&F-Mean", "mean of J-Mean and F-Mean (DAVIS's headline)", "J&F", values=UNIT)
