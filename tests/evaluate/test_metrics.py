"""Every metric in evaluate/metrics.py against an independent computation (numpy, sklearn, known answers)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from maxa.core.errors import MaxaError
from maxa.core.sample import IGNORE_INDEX
from maxa.evaluate.metrics import (
    BinaryMetrics,
    BoxAP,
    ConfusionMatrix,
    DepthMetrics,
    InstanceARI,
)

NUM_CLASSES = 5
ABSENT = 3  # never in ground truth nor prediction


def _random_labels(seed: int, shape: tuple[int, ...] = (4, 16, 16)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    present = [c for c in range(NUM_CLASSES) if c != ABSENT]
    target = rng.choice(present, size=shape).astype(np.int64)
    pred = rng.choice(present, size=shape).astype(np.int64)
    # Make predictions mostly right so IoUs are not all tiny.
    agree = rng.random(shape) < 0.6
    pred[agree] = target[agree]
    target[rng.random(shape) < 0.15] = IGNORE_INDEX
    return pred, target


def _reference(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Per-class IoU (NaN where a class is absent from both), nan-mean IoU and pixel accuracy."""
    valid = target != IGNORE_INDEX
    p, t = pred[valid], target[valid]
    ious = np.full(NUM_CLASSES, np.nan)
    for c in range(NUM_CLASSES):
        inter = np.sum((p == c) & (t == c))
        union = np.sum((p == c) | (t == c))
        if union:
            ious[c] = inter / union
    return ious, float(np.nanmean(ious)), float(np.mean(p == t))


def test_matches_numpy_reference() -> None:
    pred, target = _random_labels(0)
    cm = ConfusionMatrix(NUM_CLASSES)
    cm.update(torch.from_numpy(pred), torch.from_numpy(target))
    ref_iou, ref_miou, ref_acc = _reference(pred, target)
    iou = cm.iou()
    assert np.isnan(iou[ABSENT])
    assert np.isnan(ref_iou[ABSENT])
    np.testing.assert_allclose(iou, ref_iou, rtol=0, atol=1e-12, equal_nan=True)
    assert cm.miou() == pytest.approx(ref_miou, abs=1e-12)
    # The absent class is excluded from the mean, not counted as zero.
    finite = iou[np.isfinite(iou)]
    assert cm.miou() == pytest.approx(finite.sum() / (NUM_CLASSES - 1))
    assert cm.miou() > finite.sum() / NUM_CLASSES
    assert cm.pixel_accuracy() == pytest.approx(ref_acc, abs=1e-12)


def test_ignore_pixels_do_not_count() -> None:
    pred, target = _random_labels(1)
    cm = ConfusionMatrix(NUM_CLASSES)
    cm.update(torch.from_numpy(pred), torch.from_numpy(target))
    assert int(cm.matrix.sum()) == int(np.sum(target != IGNORE_INDEX))
    # Reference confusion matrix: rows = truth, columns = prediction.
    valid = target != IGNORE_INDEX
    ref = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(ref, (target[valid], pred[valid]), 1)
    np.testing.assert_array_equal(cm.matrix.numpy(), ref)


def test_batches_accumulate_like_one_update() -> None:
    pred, target = _random_labels(2, shape=(6, 12, 12))
    whole = ConfusionMatrix(NUM_CLASSES)
    whole.update(torch.from_numpy(pred), torch.from_numpy(target))
    batched = ConfusionMatrix(NUM_CLASSES)
    for lo, hi in [(0, 1), (1, 4), (4, 6)]:
        batched.update(torch.from_numpy(pred[lo:hi]), torch.from_numpy(target[lo:hi]))
    assert torch.equal(batched.matrix, whole.matrix)
    np.testing.assert_array_equal(batched.iou(), whole.iou())
    assert batched.miou() == whole.miou()
    assert batched.pixel_accuracy() == whole.pixel_accuracy()


def test_perfect_prediction() -> None:
    _, target = _random_labels(3)
    pred = np.where(target == IGNORE_INDEX, 0, target)
    cm = ConfusionMatrix(NUM_CLASSES)
    cm.update(torch.from_numpy(pred), torch.from_numpy(target))
    assert cm.miou() == 1.0
    assert cm.pixel_accuracy() == 1.0


def test_empty_matrix_is_nan() -> None:
    cm = ConfusionMatrix(NUM_CLASSES)
    target = torch.full((2, 4, 4), IGNORE_INDEX)
    cm.update(torch.zeros(2, 4, 4, dtype=torch.long), target)
    assert int(cm.matrix.sum()) == 0
    assert np.isnan(cm.iou()).all()
    assert math.isnan(cm.miou())
    assert math.isnan(cm.pixel_accuracy())


# ---------------------------------------------------------------- depth


def _depth_reference(pred: np.ndarray, target: np.ndarray, lo: float, hi: float) -> dict[str, float]:
    valid = (target > lo) & (target < hi)
    p, t = pred[valid].astype(np.float64), target[valid].astype(np.float64)
    ratio = np.maximum(p / t, t / p)
    return {
        "rmse": float(np.sqrt(np.mean((p - t) ** 2))),
        "abs_rel": float(np.mean(np.abs(p - t) / t)),
        "sq_rel": float(np.mean((p - t) ** 2 / t)),
        "rmse_log": float(np.sqrt(np.mean((np.log(p) - np.log(t)) ** 2))),
        "log10": float(np.mean(np.abs(np.log10(p) - np.log10(t)))),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25**2)),
        "delta3": float(np.mean(ratio < 1.25**3)),
    }


def test_depth_metrics_match_numpy_and_respect_the_valid_range() -> None:
    rng = np.random.default_rng(0)
    target = rng.uniform(0.5, 12.0, size=(3, 20, 20)).astype(np.float32)
    target[0, :5] = 0.0  # invalid (no ground truth)
    pred = (target * rng.uniform(0.7, 1.4, size=target.shape)).clip(0.1, None).astype(np.float32)
    metrics = DepthMetrics(1.0, 10.0)
    for i in range(3):  # batches pool like one
        metrics.update(torch.from_numpy(pred[i : i + 1]), torch.from_numpy(target[i : i + 1]))
    expected = _depth_reference(pred, target, 1.0, 10.0)
    result = metrics.compute()
    assert set(result) == set(expected)
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, rel=1e-9), name
    assert metrics.count == int(((target > 1.0) & (target < 10.0)).sum())
    perfect = DepthMetrics()
    perfect.update(torch.from_numpy(target).clamp(min=1e-3), torch.from_numpy(target))
    assert perfect.compute()["rmse"] == 0.0 and perfect.compute()["delta1"] == 1.0
    assert math.isnan(DepthMetrics().compute()["rmse"])
    region = np.zeros((20, 20), bool)
    region[5:15, 2:18] = True  # e.g. an Eigen crop: only these pixels count
    cropped = DepthMetrics(1.0, 10.0)
    cropped.update(torch.from_numpy(pred), torch.from_numpy(target), torch.from_numpy(region))
    expected = _depth_reference(pred[:, region], target[:, region], 1.0, 10.0)
    assert cropped.compute()["rmse"] == pytest.approx(expected["rmse"], rel=1e-9)


# ---------------------------------------------------------------- binary maps


def test_binary_metrics_match_numpy() -> None:
    rng = np.random.default_rng(1)
    truth = rng.random((4, 16, 16)) < 0.2
    prob = np.clip(truth * 0.3 + rng.random(truth.shape) * 0.6, 0, 1).astype(np.float32)
    metrics = BinaryMetrics(0.5)
    metrics.update(torch.from_numpy(prob), torch.from_numpy(truth.astype(np.uint8)))
    pred = prob > 0.5
    tp, fp, fn = np.sum(pred & truth), np.sum(pred & ~truth), np.sum(~pred & truth)
    result = metrics.compute()
    assert result["iou"] == pytest.approx(tp / (tp + fp + fn))
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    assert result["f1"] == pytest.approx(2 * precision * recall / (precision + recall))
    assert result["precision"] == pytest.approx(precision) and result["recall"] == pytest.approx(recall)
    assert result["mse"] == pytest.approx(np.mean((prob - truth) ** 2), rel=1e-6)
    assert 0 < result["iou"] < 1


# ---------------------------------------------------------------- instance discrimination


def _reference_rand_index(embedding: np.ndarray, ids: np.ndarray, res: int, seed: int) -> float | None:
    """deap tasks/instance_discrimination.py `rand_index` for one image (random_state fixed)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    sample = torch.from_numpy(ids)[None, None]
    bg = torch.nn.functional.interpolate((sample == 0).byte(), (res, res), mode="bilinear")[0, 0]
    a = torch.nn.functional.interpolate(
        torch.from_numpy(embedding)[None].float(), (res, res), mode="bilinear"
    )[0]
    n_objects = len(set(ids.flatten().tolist())) - 1
    if n_objects <= 0:
        return None
    c = KMeans(n_objects, n_init=15, random_state=seed).fit_predict(a.flatten(1).T.double().numpy()) + 1
    labels = c.reshape(res, res)
    valid = (bg != 1).numpy()
    gt = torch.nn.functional.interpolate(sample.byte(), (res, res))[0, 0].numpy()
    return float(adjusted_rand_score(gt[valid].flatten(), labels[valid].flatten()))


@pytest.mark.heavy
@pytest.mark.parametrize("res", [16, 112])
def test_ari_matches_the_reference_rand_index(res: int) -> None:
    rng = np.random.default_rng(res)
    instances = np.zeros((48, 48), np.int32)
    instances[:20, :20], instances[30:, 25:], instances[:18, 30:45], instances[40:, :3] = 3, 5, 9, 2
    noisy = np.stack([(instances == v).astype(np.float64) for v in (0, 3, 5, 9, 2)])
    noisy[1] += 0.6 * (instances == 9)  # objects 3 and 9 look alike: an imperfect embedding
    noisy += rng.normal(0, 0.2, noisy.shape)
    metric = InstanceARI(size=res, seed=0)
    metric.update_image(noisy, instances)
    expected = _reference_rand_index(noisy, instances, res, seed=0)
    assert expected is not None and 0 < expected < 1
    assert metric.compute()["ari"] == pytest.approx(expected, abs=1e-9)
    # k is counted at full resolution: the 8x3 px object is there even where the resize loses it
    perfect = np.stack([(instances == v).astype(np.float64) for v in (0, 3, 5, 9, 2)])
    metric.update_image(perfect, instances)
    metric.update_image(perfect, np.zeros_like(instances))  # no objects: not counted
    assert len(metric.scores) == 2
    assert metric.scores[1] == pytest.approx(_reference_rand_index(perfect, instances, res, seed=0))


# ---------------------------------------------------------------- box AP


def test_box_ap_known_answers() -> None:
    gt = np.array([[10, 10, 40, 40], [50, 5, 56, 11]], np.float64)
    perfect = BoxAP()
    perfect.update_image(gt, gt, np.array([0.9, 0.8]))
    result = perfect.compute()
    assert result["ap"] == pytest.approx(1.0) and result["ap50"] == pytest.approx(1.0)
    # Shift the large box by half its width (IoU 1/3, below every threshold) and score it lower: the
    # first half of the recall range is found at precision 1, the rest never -> AP50 = 51/101.
    shifted = BoxAP()
    scale = (10.0, 10.0)  # a 64 px label map of a 640x640 image
    shifted.update_image(gt, gt + np.array([[15, 0, 15, 0], [0, 0, 0, 0]]), np.array([0.5, 0.9]), scale)
    result = shifted.compute()
    assert result["ap50"] == pytest.approx(51 / 101)
    assert result["ap"] < perfect.compute()["ap"]
    # In original pixels the 30x30 box is 300x300 (large, > 96^2), the 6x6 one 60x60 (medium).
    assert result["ap_large"] == pytest.approx(0.0) and result["ap_medium"] == pytest.approx(1.0)
    empty = BoxAP()
    empty.update_image(gt, np.zeros((0, 4)), np.zeros(0))
    assert empty.compute()["ap"] == 0.0


BoxImage = tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]


def _box_images(n: int, seed: int) -> list[BoxImage]:
    """Images of 0-5 objects with near, far and background detections at varied scores and scales, so
    small, medium and large boxes all occur; some images have no objects, some no detections, and one
    has tied scores (their order inside an image decides the ranking)."""
    rng = np.random.default_rng(seed)
    images: list[BoxImage] = []
    for i in range(n):
        count = int(rng.integers(0, 6)) if i % 7 else 0
        corner = rng.uniform(0, 40, (count, 2))
        gt = np.concatenate([corner, corner + rng.uniform(2, 24, (count, 2))], 1)
        k = int(rng.integers(0, 12)) if i % 5 else 0
        near = gt[rng.integers(0, count, k)] + rng.normal(0, 2.5, (k, 4)) if count else np.zeros((0, 4))
        start = rng.uniform(0, 50, (k // 2, 2))
        background = np.concatenate([start, start + rng.uniform(2, 20, (k // 2, 2))], 1)
        boxes = np.concatenate([near, background])
        boxes = np.concatenate(
            [np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])], 1
        )
        scores = rng.random(len(boxes))
        if i == 3 and len(scores) > 2:
            scores[1:3] = scores[0]
        images.append((gt, boxes, scores, (float(rng.uniform(1, 8)), float(rng.uniform(1, 8)))))
    return images


def _box_ap(images: list[BoxImage], order: np.ndarray) -> BoxAP:
    metric = BoxAP()
    for i in order:
        metric.update_image(*images[i])
    return metric


def test_box_ap_over_resampled_images_equals_a_fresh_evaluation_of_them() -> None:
    """Each drawn copy of an image added as a new image to a fresh BoxAP, scored by pycocotools end to
    end, gives the resampler's numbers bit for bit."""
    n = 40
    images = _box_images(n, 0)
    whole = _box_ap(images, np.arange(n))
    full = whole.compute()
    assert all(0 < full[name] < 1 for name in BoxAP.NAMES), full  # every area range occurs
    resampler = whole.resampler()
    resampler.prepare()
    rng = np.random.default_rng(1)
    draws = [rng.multinomial(n, np.full(n, 1 / n)) for _ in range(6)]
    draws.append(np.where(np.arange(n) % 3 == 0, 3, 0))  # zeros and triples
    no_objects = np.zeros(n, np.int64)
    no_objects[[0, 7]] = 2  # images without objects: NaN, as BoxAP.compute()
    no_detections = np.zeros(n, np.int64)
    no_detections[[5, 10]] = 1  # objects, no detections: 0
    draws += [no_objects, no_detections]
    for counts in draws:
        got = resampler.compute(counts)
        expected = _box_ap(images, np.repeat(np.arange(n), counts)).compute()
        assert list(got) == list(BoxAP.NAMES)
        np.testing.assert_array_equal([got[k] for k in BoxAP.NAMES], [expected[k] for k in BoxAP.NAMES])
    assert np.isnan(resampler.compute(no_objects)["ap"]) and resampler.compute(no_detections)["ap"] == 0.0
    assert resampler.compute(draws[0]) != full  # resamples differ from the point estimate


def test_box_ap_resampled_once_each_is_compute() -> None:
    n = 64
    whole = _box_ap(_box_images(n, 2), np.arange(n))
    assert whole.resampler().compute(np.ones(n, np.int64)) == whole.compute()


def test_box_ap_resampler_refuses_bad_counts() -> None:
    resampler = _box_ap(_box_images(8, 3), np.arange(8)).resampler()
    for counts in (np.ones(7, np.int64), np.full(8, 1.0), np.array([2, -1, 1, 1, 1, 1, 1, 2])):
        with pytest.raises(MaxaError, match="8 non-negative integers"):
            resampler.compute(counts)


def test_box_ap_says_which_area_range_has_no_ground_truth() -> None:
    """COCOeval leaves AP_large undefined (-1) when no ground-truth box is large; the record says why."""
    metrics = BoxAP()
    small, medium = np.array([[0, 0, 10, 10]]), np.array([[0, 0, 50, 50]])  # areas 100 and 2500 (x1)
    metrics.update_image(small, small, np.array([0.9]))
    metrics.update_image(medium, medium, np.array([0.8]))
    values = metrics.compute()
    assert np.isnan(values["ap_large"]) and values["ap_small"] == pytest.approx(1.0)
    reasons = metrics.undefined("original-image")
    assert set(reasons) == {"ap_large"} and "large range (area >= 9216 original-image" in reasons["ap_large"]
    # Scaled by 4 in x and y, the medium box (200 x 200 original pixels) is large: nothing is undefined.
    scaled = BoxAP()
    scaled.update_image(medium, medium, np.array([0.8]), scale=(4.0, 4.0))
    assert "ap_large" not in scaled.undefined() and "ap_small" in scaled.undefined()
    assert set(BoxAP().undefined()) == set(BoxAP.NAMES)
