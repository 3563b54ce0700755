"""Task heads: target encoding, losses, statistics and k-NN patch labels, checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from maxa.extract.errors import MaxaError
from maxa.extract.sample import IGNORE_INDEX
from maxa.probe.tasks import (
    INSTANCE_IGNORE,
    SIGLOSS_LAMBDA,
    fit_stats,
    get_task,
    relabel_instances,
    task_names,
)


def test_registry_holds_the_five_tasks_under_the_agreed_names() -> None:
    assert set(task_names()) >= {"semantic", "depth", "boundary", "instance", "centers"}
    assert get_task("centers").target == "instances" and get_task("instance").target == "instances"
    with pytest.raises(MaxaError, match="did you mean depth"):
        get_task("dept")


def test_instances_are_renumbered_per_image_and_capped() -> None:
    raw = np.array([[[0, 5, 5], [9, 200, 0]], [[3, 3, 3], [3, 3, 7]]])
    out = relabel_instances(raw, max_instances=2)
    assert out.tolist() == [[[0, 1, 1], [2, INSTANCE_IGNORE, 0]], [[1, 1, 1], [1, 1, 2]]]
    assert get_task("instance", max_instances=2).out_channels(99) == 3


def test_sigloss_is_scale_aware_only_through_lambda() -> None:
    task = get_task("depth")
    target = torch.rand(2, 8, 8) * 5 + 1
    target[0, 0, 0] = 0.0  # invalid pixel: must not count
    exact = target.clamp(min=1e-6).log()[:, None]
    assert task.loss(exact, target).item() == pytest.approx(0.0, abs=1e-5)
    shifted = exact + 0.5  # every prediction off by the same factor e^0.5: only the lambda term remains
    assert task.loss(shifted, target).item() == pytest.approx(math.sqrt(SIGLOSS_LAMBDA) * 0.5, rel=1e-4)
    noisy = exact + torch.randn_like(exact) * 0.3
    g = (noisy[:, 0] - target.clamp(min=1e-6).log())[target > 0]
    expected = math.sqrt(float(g.var() + SIGLOSS_LAMBDA * g.mean() ** 2))
    assert task.loss(noisy, target).item() == pytest.approx(expected, rel=1e-4)


def test_depth_range_decides_validity_and_prediction_clamp() -> None:
    task = get_task("depth", min_depth=1.0, max_depth=5.0)
    assert task.encode(np.array([[0.5, 1.0, 2.0, 5.0, 7.0]])).tolist() == [[0.0, 0.0, 2.0, 0.0, 0.0]]
    pred = task.predict(torch.log(torch.tensor([0.1, 3.0, 50.0])).view(1, 1, 1, 3))
    torch.testing.assert_close(pred, torch.tensor([[[1.0, 3.0, 5.0]]]))


def test_stats_sum_over_blocks_like_one_block() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(6, 10, 10)).astype(np.uint8)
    labels[0, 0] = IGNORE_INDEX
    task = get_task("semantic")
    whole = fit_stats(task, [labels], 4)
    parts = fit_stats(task, [labels[:2], labels[2:5], labels[5:]], 4)
    assert parts == whole
    counts = np.bincount(labels[labels != IGNORE_INDEX], minlength=4)
    np.testing.assert_allclose(whole["class_prior"], counts / counts.sum())
    bias = task.output_bias(whole)
    np.testing.assert_allclose(np.exp(bias), counts / counts.sum(), rtol=1e-6)
    const = task.constant_output(whole, 3, (5, 7))
    assert const.shape == (3, 4, 5, 7) and torch.allclose(const[2, :, 4, 6], torch.tensor(bias))


def test_boundary_bias_is_the_logit_of_the_positive_rate() -> None:
    task = get_task("boundary")
    raw = np.zeros((2, 10, 10), np.uint8)
    raw[:, :2] = 1  # 20% positives
    stats = fit_stats(task, [raw], 1)
    assert stats["positive_rate"] == pytest.approx(0.2)
    (bias,) = task.output_bias(stats)
    assert 1 / (1 + math.exp(-bias)) == pytest.approx(0.2)


def test_semantic_patch_labels_are_the_patch_mode() -> None:
    """The k-NN bank's rule (shared with the local k-NN test): the majority of a patch's pixels, where
    ignore pixels vote too and a patch they win (or tie first) is left out."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=(2, 8, 12)).astype(np.uint8)
    labels[0, :4, :3] = IGNORE_INDEX  # one whole patch ignored -> invalid
    labels[1, :3, :3] = IGNORE_INDEX  # 9 of 12 pixels ignored -> invalid although 3 carry a class
    values, valid = get_task("semantic").patch_values(labels, (2, 4), 3)
    assert values.shape == (2, 2, 4, 3) and valid.shape == (2, 2, 4)
    assert not valid[0, 0, 0] and not valid[1, 0, 0]
    for i in range(2):
        for y in range(2):
            for x in range(4):
                patch = labels[i, 4 * y : 4 * y + 4, 3 * x : 3 * x + 3].ravel()
                counts = np.bincount(np.minimum(patch, 3), minlength=4)  # 3 = ignore bucket
                winner = int(np.argmax(counts))  # first maximum, like torch.argmax on counts
                assert bool(valid[i, y, x]) == (winner != 3)
                if winner != 3:
                    assert int(values[i, y, x].argmax()) == winner and float(values[i, y, x].sum()) == 1.0


def test_depth_patch_values_average_valid_pixels() -> None:
    depth = np.full((1, 4, 4), 2.0, np.float32)
    depth[0, :2, :2] = [[0.0, 4.0], [4.0, 4.0]]  # one invalid pixel in patch (0, 0)
    depth[0, 2:, 2:] = 0.0  # all-invalid patch
    values, valid = get_task("depth").patch_values(depth, (2, 2), 1)
    assert values[0, 0, 0, 0].item() == pytest.approx(4.0)
    assert values[0, 0, 1, 0].item() == pytest.approx(2.0)
    assert valid.tolist() == [[[True, True], [True, False]]]


def test_knn_is_refused_for_tasks_without_patch_labels() -> None:
    with pytest.raises(MaxaError, match="does not support task 'centers'"):
        get_task("centers").patch_values(np.zeros((1, 4, 4)), (2, 2), 1)
