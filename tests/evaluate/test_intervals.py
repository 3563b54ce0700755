"""Interval math against scipy/numpy computed independently here, and bootstrap states that add up."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from maxa.evaluate.intervals import (
    SEEDS_AND_IMAGES,
    GroupedMeans,
    ImageStates,
    bootstrap,
    clipped_bootstrap,
    half_width,
    seed_bootstrap,
    t_interval,
    within_range,
)
from maxa.evaluate.metric_specs import METRICS
from maxa.evaluate.metrics import BoxAP
from maxa.evaluate.run import evaluator_class
from maxa.probe.tasks import get_task
from tests.kit.records import checkpoint_meta


def test_t_interval_matches_scipy() -> None:
    values = [0.61, 0.64, 0.58, 0.66]
    record = t_interval(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert record["low"] == pytest.approx(low, rel=1e-12)
    assert record["high"] == pytest.approx(high, rel=1e-12)
    assert record["std"] == pytest.approx(np.std(values, ddof=1))
    assert record["n"] == 4 and record["method"] == "seeds"
    assert half_width(record) == pytest.approx((high - low) / 2)
    single = t_interval([0.5])
    assert single["low"] is None and single["mean"] == 0.5


def _semantic_batch(n: int, classes: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, (n, 6, 6))
    noisy = np.where(
        rng.random((n, 6, 6)) < 0.3 + 0.5 * rng.random((n, 1, 1)), rng.integers(0, classes, (n, 6, 6)), truth
    )
    logits = torch.nn.functional.one_hot(torch.from_numpy(noisy), classes).permute(0, 3, 1, 2).float()
    return logits, truth


def _numpy_miou(cms: np.ndarray, counts: np.ndarray) -> float:
    cm = np.tensordot(counts, cms, axes=1).astype(np.float64)
    inter = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / union
    return float(np.nanmean(iou))


def test_semantic_states_recompute_miou_from_resampled_confusion_matrices() -> None:
    classes, n = 3, 20
    task = get_task("semantic")
    logits, truth = _semantic_batch(n, classes, 0)
    states = ImageStates(
        lambda: evaluator_class("semantic")(
            task, checkpoint_meta("vit", "semantic", num_classes=classes), None
        )
    )
    states.add(logits, truth)
    whole = evaluator_class("semantic")(task, checkpoint_meta("vit", "semantic", num_classes=classes), None)
    whole.update(logits, truth)
    # independent per-image confusion matrices
    pred = logits.argmax(1).numpy()
    cms = np.stack(
        [
            np.bincount(t.ravel() * classes + p.ravel(), minlength=classes**2).reshape(classes, classes)
            for t, p in zip(truth, pred, strict=True)
        ]
    )
    states.prepare()
    assert states.compute(np.ones(n, np.int64))["miou"] == pytest.approx(whole.compute()["miou"], abs=1e-12)
    counts = np.random.default_rng(1).multinomial(n, np.full(n, 1 / n))
    assert states.compute(counts)["miou"] == pytest.approx(_numpy_miou(cms, counts), abs=1e-12)
    record = bootstrap(states, resamples=300, seed=4)["miou"]
    draws = np.random.default_rng(4).multinomial(n, np.full(n, 1 / n), size=300)
    expected = np.quantile([_numpy_miou(cms, c) for c in draws], [0.025, 0.975])
    assert (record["low"], record["high"]) == pytest.approx(tuple(expected), abs=1e-12)
    assert record["low"] <= record["mean"] <= record["high"] and record["high"] > record["low"]


def test_per_image_mean_metric_bootstrap_agrees_with_scipy() -> None:
    """ARI is a mean over images: its percentile interval must match scipy.stats.bootstrap's."""
    task = get_task("instance")
    states = ImageStates(
        lambda: evaluator_class("instance")(
            task, checkpoint_meta("vit", "instance", config={"seed": 0}), None
        )
    )
    rng = np.random.default_rng(0)
    values = rng.random(40)
    for value in values:  # a stand-in state: one per-image score each
        states.images.append({("metrics", "scores"): [float(value)]})
    record = bootstrap(states, resamples=4000, seed=0)["ari"]
    reference = stats.bootstrap((values,), np.mean, n_resamples=4000, method="percentile", rng=1)
    assert record["mean"] == pytest.approx(values.mean())
    ci = reference.confidence_interval
    assert record["low"] == pytest.approx(ci.low, abs=0.01)
    assert record["high"] == pytest.approx(ci.high, abs=0.01)


def test_constant_fields_are_not_summed() -> None:
    """Depth keeps its thresholds; only the error sums and pixel count add up over images."""
    task = get_task("depth")
    states = ImageStates(
        lambda: evaluator_class("depth")(task, checkpoint_meta("vit", "depth", output_size=[4, 4]), None)
    )
    rng = np.random.default_rng(2)
    target = rng.uniform(0.5, 5.0, (6, 4, 4)).astype(np.float32)
    pred = torch.from_numpy(target * rng.uniform(0.8, 1.2, target.shape).astype(np.float32))
    output = torch.log(pred)[:, None]  # the depth task predicts log-metres
    states.add(output, target)
    whole = evaluator_class("depth")(task, checkpoint_meta("vit", "depth", output_size=[4, 4]), None)
    whole.update(output, target)
    states.prepare()
    got = states.compute(np.ones(6, np.int64))
    for name, value in whole.compute().items():
        assert got[name] == pytest.approx(value, rel=1e-9), name
    doubled = states.compute(np.full(6, 2))
    assert doubled["rmse"] == pytest.approx(got["rmse"], rel=1e-9)


def test_box_ap_bootstrap_percentiles_of_fresh_pycocotools_evaluations() -> None:
    """Box AP resamples itself; its interval is the percentiles of pycocotools run on each drawn set."""
    rng = np.random.default_rng(5)
    images = []
    for _ in range(16):
        corner = rng.uniform(0, 30, (3, 2))
        gt = np.concatenate([corner, corner + rng.uniform(4, 30, (3, 2))], 1)
        boxes = np.concatenate([gt + rng.normal(0, 3, gt.shape), gt[:1] + 15])
        images.append((gt, np.sort(boxes.reshape(-1, 2, 2), axis=1).reshape(-1, 4), rng.random(4)))
    whole = BoxAP()
    for image in images:
        whole.update_image(*image)
    record = bootstrap(whole.resampler(), resamples=40, seed=2)
    draws = np.random.default_rng(2).multinomial(16, np.full(16, 1 / 16), size=40)
    fresh = []
    for counts in draws:
        drawn = BoxAP()
        for i in np.repeat(np.arange(16), counts):
            drawn.update_image(*images[i])
        fresh.append(drawn.compute()["ap"])
    ap = record["ap"]
    assert ap["method"] == "bootstrap" and ap["n"] == 16 and ap["mean"] == whole.compute()["ap"]
    assert (ap["low"], ap["high"]) == pytest.approx(tuple(np.quantile(fresh, [0.025, 0.975])), abs=1e-12)
    assert ap["low"] < ap["mean"] < ap["high"]


class _MeanOfImages:
    """A Resampler whose metric `m` is the count-weighted mean of fixed per-image values."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def prepare(self) -> None:
        pass

    def compute(self, counts: np.ndarray) -> dict[str, float]:
        return {"miou": float(np.dot(counts, self.values) / counts.sum())}


def test_seed_bootstrap_draws_seeds_and_images() -> None:
    """The definition, written out: each resample draws the images (shared by the seeds) and the seeds
    with replacement; the statistic is the mean over drawn seeds of each seed's metric on those images."""
    rng = np.random.default_rng(3)
    per_seed = [rng.uniform(0.2, 0.9, 30), rng.uniform(0.3, 1.0, 30)]
    got = seed_bootstrap([_MeanOfImages(v) for v in per_seed], resamples=300, seed=5)["miou"]
    draw = np.random.default_rng(5)
    stats_ = []
    for _ in range(300):
        counts = draw.multinomial(30, np.full(30, 1 / 30))
        seeds = draw.integers(2, size=2)
        stats_.append(np.mean([np.dot(counts, per_seed[s]) / 30 for s in seeds]))
    low, high = np.quantile(stats_, [0.025, 0.975])
    assert got["mean"] == pytest.approx(np.mean([v.mean() for v in per_seed]))
    assert (got["low"], got["high"]) == pytest.approx((low, high))
    assert got["method"] == SEEDS_AND_IMAGES and got["seeds"] == 2 and got["n"] == 30
    # informative where the t-interval over two seeds is not: it lies inside [0, 1] and is narrower
    t = t_interval([v.mean() for v in per_seed])
    assert 0 <= got["low"] < got["high"] <= 1 and got["high"] - got["low"] < t["high"] - t["low"]


def test_intervals_are_clipped_to_the_metrics_range() -> None:
    record = t_interval([0.252 - 0.05, 0.252 + 0.05])  # two seeds: t(0.975, 1) = 12.7
    assert record["low"] < 0  # what the issue saw drawn below zero
    clipped = within_range("iou", record)
    assert clipped["low"] == 0.0 and clipped["high"] == pytest.approx(record["high"]) and clipped["clipped"]
    assert within_range("rmse", {"low": -0.1, "high": 2.0})["low"] == 0.0
    assert within_range("ari", {"low": -1.5, "high": 0.5})["low"] == -1.0
    assert "clipped" not in within_range("miou", {"low": 0.1, "high": 0.2})
    assert within_range("j_and_f_unknown", {"low": -3.0, "high": 3.0}) == {"low": -3.0, "high": 3.0}


RANGED = [s.name for s in METRICS.specs() if math.isfinite(s.low) or math.isfinite(s.high)]


@pytest.mark.parametrize("name", RANGED)
def test_every_metric_with_a_declared_range_keeps_its_intervals_inside_it(name: str) -> None:
    """An interval reaching past the metric's values on both sides comes back inside them (issue #21)."""
    spec = METRICS.get(name)
    below = spec.low - 1.0 if math.isfinite(spec.low) else -1e9
    above = spec.high + 1.0 if math.isfinite(spec.high) else 1e9
    clipped = within_range(name, {"value": (below + above) / 2, "low": below, "high": above})
    assert spec.low <= clipped["low"] <= clipped["high"] <= spec.high and clipped["clipped"]


def test_the_instance_knn_boundary_and_davis_metrics_declare_their_ranges() -> None:
    for name in ("ari_fg", "pair_auc", "boundary_iou", "accuracy", "jf"):
        spec = METRICS.get(name)
        assert math.isfinite(spec.low) and math.isfinite(spec.high), name


def test_grouped_means_draw_whole_units_against_a_plain_loop() -> None:
    """Independent: for each resample, repeat every drawn unit's items as often as drawn, take the mean;
    percentiles of those means are the interval (same draws: the same generator and seed)."""
    rng = np.random.default_rng(3)
    units = np.array([7, 7, 7, 2, 2, 9, 4, 4, 4, 4])  # any labels; units hold 1 to 4 items
    values = {"map": rng.uniform(0, 1, units.size), "recall@1": (rng.uniform(0, 1, units.size) > 0.5) * 1.0}
    record = clipped_bootstrap(GroupedMeans(values, units), resamples=200, seed=5)
    labels = np.unique(units)
    draws = np.random.default_rng(5).multinomial(len(labels), np.full(len(labels), 1 / len(labels)), size=200)
    for name, v in values.items():
        means = [
            np.concatenate([np.repeat(v[units == u], c) for u, c in zip(labels, d, strict=True)]).mean()
            for d in draws
        ]
        low, high = np.quantile(means, [0.025, 0.975])
        assert record[name]["mean"] == pytest.approx(v.mean())
        assert (record[name]["low"], record[name]["high"]) == pytest.approx((low, high))
        assert 0.0 <= record[name]["low"] <= record[name]["high"] <= 1.0
    one_unit = GroupedMeans({"map": np.array([0.2, 0.4])}, np.array([1, 1]))
    assert (
        clipped_bootstrap(one_unit) == {}
    )  # one video / one source image: no interval, not a zero-width one
