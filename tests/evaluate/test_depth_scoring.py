"""NYU depth scored as the MAXA paper's code scores it, against an independent implementation of
deap/tasks/depth_estimation.py DepthEvaluate.evaluate (lines 38-62): bilinear resize of the predicted
depth to the ground truth, no clamping, valid 1e-3 < d < 10 (strict), Eigen crop [45:471, 41:601] of
the 480x640 frame, RMSE pooled over all valid pixels of the split."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maxa.core.errors import MaxaError
from maxa.evaluate.metrics import DepthMetrics
from maxa.evaluate.run import DepthEvaluator
from maxa.probe.tasks import get_task
from tests.kit.records import checkpoint_meta


def reference_rmse(predictions: list[torch.Tensor], truths: list[np.ndarray]) -> float:
    """deap's evaluate: predictions (B, 1, h, w) metres, truths (B, 480, 640)."""
    diffs, valid = [], []
    for pred, gt in zip(predictions, truths, strict=True):
        gt_t = torch.from_numpy(gt)[:, None].double()
        out = F.interpolate(pred.double(), gt_t.shape[2:], mode="bilinear")
        diffs.append(gt_t - out)
        valid.append((gt_t < 10) & (gt_t > 1e-3))
    valid_t, diffs_t = torch.cat(valid)[:, 0], torch.cat(diffs)[:, 0]
    crop = torch.zeros(valid_t.shape[0], 480, 640).bool()
    crop[:, 45:471, 41:601] = True
    return float(diffs_t[valid_t & crop].pow(2).mean().sqrt())


def nyu_batch(rng: np.random.Generator, n: int) -> np.ndarray:
    gt = rng.uniform(0.5, 9.0, size=(n, 480, 640)).astype(np.float32)
    gt[:, :40] = 0.0  # missing depth
    gt[:, 100:110] = 10.0  # exactly the upper bound: not counted (strict)
    gt[:, 200:205] = 12.0  # beyond the range
    gt[:, 300:302] = 1e-3  # exactly the lower bound: not counted
    return gt


@pytest.mark.parametrize("output_size", [(480, 640), (224, 304)])
def test_nyu_rmse_equals_the_papers_evaluation(output_size: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    task = get_task("depth")
    evaluator = DepthEvaluator(task, checkpoint_meta("vit", "depth", dataset="nyu"), None)
    predictions, truths = [], []
    for n in (2, 3):
        gt = nyu_batch(rng, n)
        log_depth = torch.from_numpy(
            rng.normal(1.0, 1.6, size=(n, 1, *output_size))
        )  # many beyond (1e-3, 10)
        evaluator.update(log_depth.float(), gt)
        predictions.append(log_depth.float().double().exp())
        truths.append(gt)
    expected = reference_rmse(predictions, truths)
    assert evaluator.compute()["rmse"] == pytest.approx(expected, rel=1e-9)
    clamped = reference_rmse([p.clamp(1e-3, 10) for p in predictions], truths)
    assert abs(clamped - expected) > 0.1  # the reference's number is not the clamped one
    protocol = evaluator.protocol()
    assert protocol["depth_scored_at"] == [480, 640] and protocol["depth_native_resolution"] is True
    assert protocol["eigen_crop"] is True and protocol["depth_clamped"] is False


def test_other_datasets_count_every_valid_pixel() -> None:
    rng = np.random.default_rng(1)
    evaluator = DepthEvaluator(get_task("depth"), checkpoint_meta("vit", "depth", dataset="synthetic"), None)
    gt = rng.uniform(0.5, 9.0, size=(2, 32, 32)).astype(np.float32)
    log_depth = torch.from_numpy(rng.normal(1.0, 0.5, size=(2, 1, 32, 32))).float()
    evaluator.update(log_depth, gt)
    expected = math.sqrt(float(((log_depth[:, 0].double().exp().numpy() - gt) ** 2).mean()))
    assert evaluator.compute()["rmse"] == pytest.approx(expected, rel=1e-9)
    assert (
        evaluator.protocol()["eigen_crop"] is False
        and evaluator.protocol()["depth_native_resolution"] is False
    )


def test_non_positive_predictions_are_an_error() -> None:
    metrics = DepthMetrics()
    with pytest.raises(MaxaError, match="1 depth predictions are <= 0 m"):
        metrics.update(torch.tensor([[1.0, -0.5]]), torch.tensor([[2.0, 3.0]]))
