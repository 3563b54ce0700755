"""CenterNet as the MAXA paper's code defines it: targets, loss, NMS and decoding, each against an
independent implementation of the reference's definition (deap datasets/functions.py, tasks/center_net.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from maxa.core.labels import instance_boxes
from maxa.evaluate.metrics import BoxAP
from maxa.extract._compat import ensure_torchvision_importable
from maxa.probe import centernet


def _instances(size: int = 32) -> np.ndarray:
    inst = np.zeros((2, size, size), np.int32)
    s = size / 32
    inst[0, int(2 * s) : int(12 * s), int(3 * s) : int(20 * s)] = 1
    inst[0, int(18 * s) : int(30 * s), int(20 * s) : int(31 * s)] = 7
    inst[1, int(5 * s) : int(25 * s), int(5 * s) : int(15 * s)] = 4
    inst[1, 0:3, 0:2] = 2  # a tiny object in a corner
    return inst


def _reference_targets(mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """deap prepare_labels 'centers_gauss' for one (H, W) map (square maps, as the reference uses)."""
    m = torch.from_numpy(mask)[None]
    h, w = mask.shape
    grid = (
        torch.stack(torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij"))
        .permute(1, 2, 0)
        .double()
    )
    grid_ = grid.mul(h).round().div(h)
    heat = torch.zeros(1, h, w, dtype=torch.float64)
    size = torch.zeros(1, h, w, 2, dtype=torch.float64)
    for label in sorted(set(mask.ravel().tolist()) - {0}):
        this = m == label
        mean = grid[this[0]].mean(0).mul(h).round().div(h)
        coords = torch.argwhere(this[0])
        sy = (coords[:, 0].max() - coords[:, 0].min()) / h
        sx = (coords[:, 1].max() - coords[:, 1].min()) / w
        s = 0.12 * this.double().mean().sqrt() * (224.0 / w)
        d = (grid_ - mean[None, None, :]).pow(2).sum(2)
        heat += torch.exp(-d / (2 * s**2))
        size[0, d.sqrt() < 0.01, :] = torch.tensor([float(sx), float(sy)], dtype=torch.float64)
    return heat.clip(0, 1)[0], size[0].permute(2, 0, 1)


@pytest.mark.parametrize("side", [32, 64, 448])
def test_targets_match_the_reference_definition(side: int) -> None:
    inst = _instances(side)
    encoded = centernet.encode(inst)
    assert encoded.shape == (2, 3, side, side) and encoded.dtype == np.float32
    for i in range(2):
        heat, size = _reference_targets(inst[i])
        np.testing.assert_allclose(encoded[i, 0], heat.numpy(), atol=1e-6)
        np.testing.assert_allclose(encoded[i, 1:], size.numpy(), atol=1e-6)
    assert (encoded[:, 0] == 1.0).sum() >= 3  # the snapped centres peak at exactly 1


def test_loss_is_torchvisions_focal_loss_plus_l1_over_sized_pixels() -> None:
    ensure_torchvision_importable()
    from torchvision.ops import sigmoid_focal_loss

    torch.manual_seed(0)
    target = torch.from_numpy(centernet.encode(_instances()))
    output = torch.randn(2, 3, 32, 32)
    sizes = target[:, 1:]
    valid = sizes > 0
    expected = sigmoid_focal_loss(output[:, 0].flatten(), target[:, 0].flatten(), reduction="mean")
    expected = expected + torch.nn.functional.l1_loss(sizes, output[:, 1:], reduction="none")[valid].mean()
    assert centernet.loss(output, target).item() == pytest.approx(expected.item(), rel=1e-5)
    empty = torch.zeros(1, 3, 8, 8)
    assert torch.isfinite(centernet.loss(torch.randn(1, 3, 8, 8), empty))  # no object: focal term only


def _brute_force_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Keep boxes in descending score order unless their IoU with a kept box exceeds the threshold."""

    def iou(a: np.ndarray, b: np.ndarray) -> float:
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union if union > 0 else 0.0

    kept: list[int] = []
    for i in sorted(range(len(scores)), key=lambda j: -scores[j]):
        if all(iou(boxes[i], boxes[k]) <= threshold for k in kept):
            kept.append(i)
    return kept


def test_nms_matches_the_brute_force_definition() -> None:
    rng = np.random.default_rng(5)
    for trial in range(20):
        n = int(rng.integers(0, 40))
        xy = rng.uniform(0, 50, size=(n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(1, 20, size=(n, 2))], axis=1)
        scores = rng.permutation(n).astype(np.float64) / max(n, 1)  # distinct scores
        assert centernet.nms(boxes, scores, 0.5).tolist() == _brute_force_nms(boxes, scores, 0.5), trial
        assert (
            centernet.nms(boxes, scores, 0.5, max_keep=3).tolist() == _brute_force_nms(boxes, scores, 0.5)[:3]
        )


def _reference_decode(output: torch.Tensor, max_detections: int = 100) -> list[tuple[np.ndarray, np.ndarray]]:
    """deap CenterNetTask.evaluate's decoding with the brute-force NMS in place of torchvision's op."""
    results = []
    side = output.shape[-1]
    for i in range(output.shape[0]):
        centers = output[i, 0].sigmoid().numpy()
        peaks = (centers == ndi.maximum_filter(centers, size=3, mode="reflect")) & (centers > 0.01)
        sizes = output[i, 1:3][:, torch.from_numpy(peaks)].T.numpy() * side
        scores = centers[peaks]
        points = np.argwhere(peaks)[:, ::-1].astype(np.float64)
        boxes = np.clip(np.concatenate([points - 0.5 * sizes, points + 0.5 * sizes], axis=1), 0, side)
        keep = _brute_force_nms(boxes, scores, 0.5)[:max_detections]
        results.append((boxes[keep], scores[keep]))
    return results


def test_decoding_matches_the_reference() -> None:
    torch.manual_seed(1)
    output = torch.randn(3, 3, 24, 24) * 2
    output[:, 1:] = output[:, 1:].abs() * 0.2
    for (boxes, scores), (ref_boxes, ref_scores) in zip(
        centernet.decode(output, 100), _reference_decode(output), strict=True
    ):
        np.testing.assert_allclose(boxes.numpy(), ref_boxes, atol=1e-4)
        np.testing.assert_allclose(scores.numpy(), ref_scores, atol=1e-6)
    few = centernet.decode(output, 5)
    assert all(len(scores) == 5 for _, scores in few)


def test_decoding_a_perfect_output_finds_the_objects() -> None:
    inst = _instances(64)
    encoded = torch.from_numpy(centernet.encode(inst))
    heat = encoded[:, :1].clamp(1e-6, 1 - 1e-6)
    dense = torch.zeros_like(encoded[:, 1:])
    for i, image in enumerate(inst):  # every pixel predicts its object's size, as a trained head does
        for obj, (x0, y0, x1, y1) in zip(np.unique(image[image > 0]), instance_boxes(image), strict=True):
            dense[i, 0][torch.from_numpy(image == obj)] = float(x1 - x0 - 1) / 64
            dense[i, 1][torch.from_numpy(image == obj)] = float(y1 - y0 - 1) / 64
    decoded = centernet.decode(torch.cat([heat.logit(), dense], 1))
    for (boxes, scores), image in zip(decoded, inst, strict=True):
        gt = instance_boxes(image)
        assert len(boxes) == len(gt) and (scores > 0.99).all()  # one peak per object, duplicates suppressed
        iou = centernet.box_iou(gt.astype(np.float64), boxes.numpy().astype(np.float64)).max(axis=1)
        # The reference's sizes are (max - min) pixels around a pixel-index centre: a box is 1 px short,
        # which only matters for tiny objects (the 2x3 px one in image 1).
        big = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]) > 100
        assert (iou[big] > 0.8).all() and (iou[~big] < 0.5).all()


def test_box_areas_are_measured_in_original_pixels() -> None:
    """A 20x15 label-pixel box on a 64x64 map of a 480x640 image is 200x112.5 original pixels (large)."""
    gt = np.array([[10.0, 10.0, 30.0, 25.0]])
    original = BoxAP()
    original.update_image(gt, gt, np.array([0.9]), scale=(640 / 64, 480 / 64))
    scores = original.compute()
    assert (
        scores["ap_large"] == pytest.approx(1.0)
        and np.isnan(scores["ap_small"])
        and np.isnan(scores["ap_medium"])
    )
    label = BoxAP()  # in label pixels the same box is 300 px²: small
    label.update_image(gt, gt, np.array([0.9]))
    assert label.compute()["ap_small"] == pytest.approx(1.0) and np.isnan(label.compute()["ap_large"])
    assert original.gt[0]["area"] == pytest.approx(200 * 112.5)
    assert list(itertools.chain(original.gt[0]["bbox"])) == pytest.approx([100.0, 75.0, 200.0, 112.5])
