"""Uncertainty on every reported number: a bootstrap over seeds and test images, or over test images.

- Several seeds (a sweep's chosen member trained with each seed): every metric's mean over the seeds,
  with a two-level percentile bootstrap (`method: "bootstrap over seeds and test images"`): each resample
  draws the seeds and the test images with replacement and averages the drawn seeds' metrics on the
  drawn images. A Student-t interval over 2-3 seeds is uninformative (t(0.975, 1) = 12.7: boundary IoU
  0.252 ± 0.656 ran below 0 and tied every entry); the bootstrap keeps the test-set variance the seeds
  cannot show, and stays inside the metric's range. With `resamples=0` the t-interval over seeds is
  kept (`method: "seeds"`), clipped to the metric's range (its MetricSpec).
- One run: a percentile bootstrap over test images. Each image's contribution to an evaluator is
  captured as the evaluator state of that image alone (confusion matrix, depth error sums, boundary
  counts, per-image ARI); a resample sums the states of the drawn images into a fresh evaluator and
  runs its own `compute()`, so a resampled metric is computed exactly like the reported one (pooled
  metrics stay pooled; mIoU is recomputed from the resampled confusion matrix). `method: "bootstrap"`.
  Box AP is not a sum of per-image states (COCOeval ranks the detections of all images together), so
  its evaluator offers its own `resampler()` (metrics.BoxAPResampler): COCOeval's per-image matching
  runs once, and each resample pools the matches of the drawn images as `accumulate()` does.

The record layout is `uncertainty: {metric: {mean, std, low, high, n, method, level}}` (interfaces.md).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from maxa.core.errors import MaxaError
from maxa.evaluate.metric_specs import METRICS
from maxa.evaluate.metrics import resample_counts
from maxa.evaluate.run import Evaluator, evaluate
from maxa.probe.checkpoint import read_meta

LEVEL = 0.95
RESAMPLES = 1000


def _number(value: float) -> float | None:
    """JSON-safe: NaN and inf become None (the record never holds NaN)."""
    return float(value) if math.isfinite(value) else None


def t_interval(values: list[float] | np.ndarray, level: float = LEVEL) -> dict[str, Any]:
    """Mean, sample std (ddof=1) and the Student-t interval of the mean; n < 2 gives no interval."""
    from scipy import stats

    data = np.asarray(values, dtype=np.float64)
    n = int(data.size)
    record: dict[str, Any] = {"mean": None, "std": None, "low": None, "high": None}
    record.update({"n": n, "method": "seeds", "level": level})
    if n == 0 or not np.isfinite(data).all():
        return record
    mean = float(data.mean())
    record["mean"] = mean
    if n < 2:
        return record
    std = float(data.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    record.update({"std": std, "low": mean - half, "high": mean + half})
    return record


def percentile_interval(samples: np.ndarray, point: float, n: int, level: float = LEVEL) -> dict[str, Any]:
    """The bootstrap record of one metric: `mean` is the full-sample estimate, low/high percentiles."""
    finite = samples[np.isfinite(samples)]
    if finite.size == 0 or not math.isfinite(point):
        return {
            "mean": point,
            "std": None,
            "low": None,
            "high": None,
            "n": n,
            "method": "bootstrap",
            "level": level,
        }
    low, high = np.quantile(finite, [0.5 - level / 2, 0.5 + level / 2])
    return {
        "mean": point,
        "std": float(finite.std(ddof=1)) if finite.size > 1 else None,
        "low": float(low),
        "high": float(high),
        "n": n,
        "method": "bootstrap",
        "level": level,
        "resamples": int(samples.size),
    }


def within_range(name: str, record: dict[str, Any]) -> dict[str, Any]:
    """`record` with low/high clipped to the metric's range (`clipped: true` when that changed them)."""
    spec = (
        METRICS.get("recall")
        if name.startswith("recall@")
        else METRICS.get(name)
        if name in METRICS
        else None
    )
    low, high = (spec.low, spec.high) if spec is not None else (-math.inf, math.inf)
    out = dict(record)
    for key in ("low", "high"):
        value = out.get(key)
        if value is not None and not low <= value <= high:
            out[key] = min(max(float(value), low), high)
            out["clipped"] = True
    return out


def half_width(record: dict[str, Any]) -> float | None:
    """Half the interval's width (what the leaderboard prints after ±)."""
    low, high = record.get("low"), record.get("high")
    if low is None or high is None:
        return None
    return (float(high) - float(low)) / 2


# ------------------------------------------------------------------ metrics over resampled images


class Resampler(Protocol):
    """An evaluator's metrics over any multiset of the test images: what the bootstrap resamples."""

    def __len__(self) -> int: ...  # the number of test images

    def prepare(self) -> None: ...  # the work shared by every resample, done once

    def compute(self, counts: np.ndarray) -> dict[str, float]: ...  # counts[i] copies of image i


@runtime_checkable
class ResamplingEvaluator(Protocol):
    """An evaluator whose metrics are no sum of per-image states resamples itself (box AP)."""

    def resampler(self) -> Resampler: ...


Leaf = tuple[tuple[str, ...], Any]


def _leaves(obj: Any, path: tuple[str, ...] = ()) -> list[Leaf]:
    """Every numeric field reachable from an evaluator (nested metric objects and dicts included)."""
    out: list[Leaf] = []
    items = obj.items() if isinstance(obj, dict) else vars(obj).items()
    for key, value in items:
        here = (*path, str(key))
        if isinstance(value, bool | str) or value is None:
            continue
        if isinstance(value, int | float | torch.Tensor | np.ndarray | list):
            out.append((here, value))
        elif (isinstance(value, dict) or hasattr(value, "__dict__")) and not hasattr(value, "loss"):
            out.extend(_leaves(value, here))  # nested metric state (a Task, with `loss`, is configuration)
    return out


def _set(obj: Any, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        obj = obj[key] if isinstance(obj, dict) else getattr(obj, key)
    if isinstance(obj, dict):
        obj[path[-1]] = value
    else:
        setattr(obj, path[-1], value)


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor | np.ndarray):
        return a.shape != b.shape or not bool(np.array_equal(np.asarray(a), np.asarray(b)))
    return bool(a != b)


class ImageStates:
    """Per-image evaluator states and the fresh evaluator they are summed into."""

    def __init__(self, make: Callable[[], Evaluator]) -> None:
        self.make = make
        self.fresh = make()
        self.images: list[dict[tuple[str, ...], Any]] = []

    def __len__(self) -> int:
        return len(self.images)

    def add(self, output: torch.Tensor, raw: np.ndarray) -> None:
        """Score each image of the batch on its own and keep its state."""
        for j in range(len(raw)):
            evaluator = self.make()
            evaluator.update(output[j : j + 1], raw[j : j + 1])
            self.images.append(dict(_leaves(evaluator)))

    def _additive(self) -> list[tuple[str, ...]]:
        base = dict(_leaves(self.fresh))
        return [p for p in base if any(_differs(image.get(p, base[p]), base[p]) for image in self.images)]

    def compute(self, counts: np.ndarray) -> dict[str, float]:
        """The evaluator's metrics over a multiset of images (counts[i] copies of image i)."""
        counts = resample_counts(counts, len(self.images))
        evaluator = copy.deepcopy(self.fresh)
        base = dict(_leaves(self.fresh))
        for path in self._paths:
            start = base[path]
            if isinstance(start, list):  # per-image entries (e.g. ARI), repeated as often as drawn
                flat, lengths = self._lists[path]
                total: Any = list(start) + np.repeat(flat, np.repeat(counts, lengths)).tolist()
            elif isinstance(start, torch.Tensor):
                stacked = self._stacked[path]
                total = start + torch.from_numpy(np.tensordot(counts, stacked, axes=1)).to(start.dtype)
            else:
                total = type(start)(start + float(np.dot(counts, self._stacked[path])))
            _set(evaluator, path, total)
        return evaluator.compute()

    def prepare(self) -> None:
        """Stack every additive field over images once (resamples are then matrix products)."""
        base = dict(_leaves(self.fresh))
        self._paths = self._additive()
        self._stacked: dict[tuple[str, ...], np.ndarray] = {}
        self._lists: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}
        for path in self._paths:
            start = base[path]
            if isinstance(start, torch.Tensor):
                self._stacked[path] = np.stack([(image[path] - start).numpy() for image in self.images])
            elif isinstance(start, list):
                entries = [image.get(path, start)[len(start) :] for image in self.images]
                flat = np.asarray([v for entry in entries for v in entry], np.float64)
                self._lists[path] = (flat, np.asarray([len(e) for e in entries], np.int64))
            else:
                self._stacked[path] = np.asarray([image[path] - start for image in self.images], np.float64)


class GroupedMeans:
    """Metrics that are means over items grouped in resampling units (retrieval: the queries made from
    one source image; propagation: the objects of one video): over a multiset of units, each drawn unit
    brings all its items, and a metric is the mean over the items drawn. Items of one unit are not
    independent (augmented copies of one image, objects of one sequence), so the unit is what is drawn."""

    def __init__(self, values: dict[str, np.ndarray], units: np.ndarray) -> None:
        self.values = {name: np.asarray(v, np.float64) for name, v in values.items()}
        _, self.units = np.unique(np.asarray(units), return_inverse=True)
        if any(v.shape != self.units.shape for v in self.values.values()):
            raise ValueError("every metric needs one value per item")

    def __len__(self) -> int:
        return int(self.units.max()) + 1 if self.units.size else 0

    def prepare(self) -> None:
        n = len(self)
        self.sums = {name: np.bincount(self.units, weights=v, minlength=n) for name, v in self.values.items()}
        self.items = np.bincount(self.units, minlength=n).astype(np.float64)

    def compute(self, counts: np.ndarray) -> dict[str, float]:
        weights = np.asarray(counts, np.float64)
        total = float(weights @ self.items)
        return {name: float(weights @ sums) / total for name, sums in self.sums.items()}


def clipped_bootstrap(
    states: Resampler, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL
) -> dict[str, dict[str, Any]]:
    """bootstrap() with every interval inside its metric's range (its MetricSpec); none from one unit (a
    resample could only repeat it: a zero-width interval would claim certainty)."""
    if len(states) < 2:
        return {}
    return {
        name: within_range(name, record) for name, record in bootstrap(states, resamples, seed, level).items()
    }


SEEDS_AND_IMAGES = "bootstrap over seeds and test images"


def seed_bootstrap(
    runs: list[Resampler], resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL
) -> dict[str, dict[str, Any]]:
    """Percentile intervals of the seed-mean of every metric: each resample draws the seeds and the test
    images (the same images for every seed: they share the split) with replacement."""
    n = len(runs[0])
    if n == 0:
        raise MaxaError("cannot bootstrap over an empty test split")
    for run in runs:
        run.prepare()
    ones = np.ones(n, np.int64)
    each = [run.compute(ones) for run in runs]
    names = [k for k in each[0] if all(k in e for e in each)]
    point = {k: float(np.mean([e[k] for e in each])) for k in names}
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(resamples):
        counts = rng.multinomial(n, np.full(n, 1.0 / n))
        drawn = rng.integers(len(runs), size=len(runs))
        values = {int(s): runs[int(s)].compute(counts) for s in set(drawn.tolist())}
        for name in names:
            samples[name].append(float(np.mean([values[int(s)][name] for s in drawn])))
    out = {}
    for name in names:
        record = percentile_interval(np.asarray(samples[name], np.float64), point[name], n, level)
        out[name] = {**record, "method": SEEDS_AND_IMAGES, "seeds": len(runs)}
    return out


def bootstrap(
    states: Resampler, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL
) -> dict[str, dict[str, Any]]:
    """Percentile intervals of every metric, resampling test images with replacement."""
    n = len(states)
    if n == 0:
        raise MaxaError("cannot bootstrap over an empty test split")
    states.prepare()
    point = states.compute(np.ones(n, np.int64))
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples)
    samples: dict[str, list[float]] = {name: [] for name in point}
    for counts in draws:
        for name, value in states.compute(counts).items():
            samples[name].append(value)
    return {
        name: percentile_interval(np.asarray(samples[name], np.float64), float(point[name]), n, level)
        for name in point
    }


class ImageCollector:
    """What the bootstrap resamples, gathered during evaluate()'s one pass over the split: each image's
    evaluator state, or the run's own evaluator when it resamples itself (box AP)."""

    def __init__(self, whole: Evaluator, make: Callable[[], Evaluator]) -> None:
        self.whole = whole
        self.states = None if isinstance(whole, ResamplingEvaluator) else ImageStates(make)

    def __call__(self, output: torch.Tensor, raw: np.ndarray) -> None:
        if self.states is not None:
            self.states.add(output, raw)

    def resampler(self) -> Resampler:
        if self.states is not None:
            return self.states
        assert isinstance(self.whole, ResamplingEvaluator)
        return self.whole.resampler()


# ------------------------------------------------------------------ the metrics record


def _resolve(path: str, checkpoint: str) -> str:
    """Member checkpoints are recorded as written; also accept them next to a moved sweep checkpoint."""
    if Path(path).is_file():
        return path
    beside = Path(checkpoint).parent / Path(path).parent.name / Path(path).name
    if beside.is_file():
        return str(beside)
    raise MaxaError(f"sweep member checkpoint {path} (recorded in {checkpoint}) does not exist")


def _mean_per_class(runs: list[dict[str, float | None]]) -> dict[str, float | None]:
    """Per-class IoU averaged over seeds (a class absent from a seed's split stays absent: None)."""
    names = list(dict.fromkeys(k for run in runs for k in run))
    out: dict[str, float | None] = {}
    for name in names:
        values = [run.get(name) for run in runs]
        present = [float(v) for v in values if v is not None]
        out[name] = float(np.mean(present)) if len(present) == len(values) else None
    return out


def selection_protocol(sweep: dict[str, Any]) -> dict[str, Any]:
    """What was swept and chosen, for the metrics record's protocol."""
    return {
        "swept": sweep["grid"],
        "chosen": {"layer": sweep["chosen"]["layer"], "lr": sweep["chosen"]["lr"]},
        "criterion": sweep["criterion"],
        "val_fraction": sweep["val_fraction"],
        "val_seed": sweep["val_seed"],
        "val_samples": sweep["val_samples"],
        "data_seed": sweep["data_seed"],
        "constant_val_loss": sweep.get("constant_val_loss"),
        "worse_than_constant": sweep["chosen"].get("worse_than_constant"),
    }


def evaluate_with_uncertainty(
    checkpoint: str,
    features_url: str,
    targets_url: str,
    *,
    batch_size: int = 32,
    device: str = "auto",
    progress: bool = True,
    resamples: int = RESAMPLES,
    allow_training_split: bool = False,
    protocol_name: str | None = None,
) -> dict[str, Any]:
    """`maxa evaluate`'s record plus `uncertainty`: over the chosen member's seeds, or bootstrapped.

    `protocol_name` (params `evaluate.protocol`, e.g. deap) is recorded as `protocol.name`.

    The test split is read once per distinct checkpoint: a single run's bootstrap states are collected in
    the same pass as its scores, and a sweep's chosen checkpoint is not scored again as its first seed.
    """
    kwargs: dict[str, Any] = {
        "batch_size": batch_size,
        "device": device,
        "progress": progress,
        "allow_training_split": allow_training_split,
    }
    sweep = read_meta(checkpoint).sweep
    seeds = [_resolve(p, checkpoint) for p in (sweep or {}).get("seed_checkpoints", [])]
    collected: list[ImageCollector] = []

    def collect(whole: Evaluator, make: Callable[[], Evaluator]) -> ImageCollector:
        collected.append(ImageCollector(whole, make))
        return collected[-1]

    bootstrapping = resamples > 0
    observe = collect if bootstrapping else None
    result = evaluate(checkpoint, features_url, targets_url, observe=observe, **kwargs)
    if protocol_name is not None:
        result["protocol"]["name"] = protocol_name
    if sweep:
        result["protocol"]["selection"] = selection_protocol(sweep)
    if len(seeds) > 1:
        assert sweep is not None
        seed_of = {m["run_id"]: m["seed"] for m in sweep["members"]}
        run_ids = sweep["chosen"]["run_ids"]
        runs, resamplers = [], []
        for rid, path in zip(run_ids, seeds, strict=True):
            if rid == result["run_id"]:  # scored above: its images were collected first
                runs.append(result)
                resamplers.append(collected[0].resampler() if bootstrapping else None)
            else:
                runs.append(evaluate(path, features_url, targets_url, observe=observe, **kwargs))
                resamplers.append(collected[-1].resampler() if bootstrapping else None)
        names = [k for k in result["scores"] if all(k in r["scores"] for r in runs)]
        result["seed_scores"] = [
            {"seed": seed_of[rid], "scores": r["scores"]} for rid, r in zip(run_ids, runs, strict=True)
        ]
        if bootstrapping:
            spread = seed_bootstrap([r for r in resamplers if r is not None], resamples)
            result["uncertainty"] = {k: spread[k] for k in names if k in spread}
        else:
            result["uncertainty"] = {
                k: within_range(k, t_interval([r["scores"][k] for r in runs])) for k in names
            }
        result["scores"] = {k: float(np.mean([r["scores"][k] for r in runs])) for k in names}
        if isinstance(result.get("per_class_iou"), dict):
            result["per_class_iou"] = _mean_per_class([r.get("per_class_iou") or {} for r in runs])
    elif bootstrapping:
        result["uncertainty"] = bootstrap(collected[0].resampler(), resamples)
    else:
        result["uncertainty"] = {}
        result["uncertainty_note"] = "bootstrap disabled (resamples=0)"
    primary = result["primary"]["name"]
    if primary in result["scores"]:
        result["primary"]["value"] = result["scores"][primary]
    for key in ("miou", "pixel_accuracy", "ce"):
        if key in result and key in result["scores"]:
            result[key] = result["scores"][key]
    return result
