"""Task heads: target encoding, losses, statistics and k-NN patch labels, checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maxa.core.errors import MaxaError
from maxa.core.sample import IGNORE_INDEX
from maxa.probe.task_specs import TASKS
from maxa.probe.tasks import SIGLOSS_LAMBDA, fit_stats, get_task, task_class, task_names


def test_registry_holds_the_five_tasks_under_the_agreed_names() -> None:
    assert set(task_names()) >= {"semantic", "depth", "boundary", "instance", "centers"}
    assert get_task("centers").target == "instances" and get_task("instance").target == "instances"
    with pytest.raises(MaxaError, match="did you mean depth"):
        get_task("dept")


def test_every_task_declares_its_metric_label_and_options() -> None:
    for name in task_names():
        spec = TASKS.get(name)
        task = get_task(name)
        assert isinstance(task, task_class(name))
        assert (task.name, task.primary, task.label, task.target) == (
            name,
            spec.primary,
            spec.label,
            spec.target,
        )
        assert task.options() == spec.defaults()
    # a config carries every task's options: each task keeps its own, unknown names are refused
    assert get_task("depth", max_depth=5.0, instance_dim=3).options() == {"min_depth": 1e-3, "max_depth": 5.0}
    with pytest.raises(MaxaError, match="unknown task option"):
        get_task("depth", max_labels=3)
    # checkpoints written before the reference instance objective record max_instances
    assert get_task("semantic", max_instances=16).options() == {"semantic_loss_size": "output"}
    with pytest.raises(MaxaError, match="retrain it"):
        get_task("instance", max_instances=16)


def _reference_global_ids(blocks: list[np.ndarray]) -> np.ndarray:
    """deap prepare_labels with instance_count: image r's j-th id (ascending) -> shift_r + j, shift_r the
    number of instances in the images before it; background 0."""
    images = [image for block in blocks for image in block]
    out, shift = [], 0
    for image in images:
        ids = [v for v in sorted(set(image.ravel().tolist())) if v > 0]
        mapped = np.zeros(image.shape, np.int64)
        for j, v in enumerate(ids):
            mapped[image == v] = shift + j + 1
        out.append(mapped)
        shift += len(ids)
    return np.stack(out)


def test_instance_classes_span_the_training_set() -> None:
    rng = np.random.default_rng(3)
    blocks = [rng.choice([0, 3, 7, 9, 200], size=(n, 6, 5)).astype(np.int32) for n in (3, 1, 4)]
    blocks[1][:] = 0  # an image without objects takes no class
    task = get_task("instance", instance_dim=4)
    stats = fit_stats(task, blocks, 0)
    expected = _reference_global_ids(blocks)
    assert stats["train_instances"] == int(expected.max())
    starts = np.cumsum([0] + [len(b) for b in blocks])[:-1]
    encoded = np.concatenate([task.encode(b, int(start)) for b, start in zip(blocks, starts, strict=True)])
    np.testing.assert_array_equal(encoded, expected)
    assert task.out_channels(99) == 4
    with pytest.raises(MaxaError, match="outside the 8 training images"):
        task.encode(blocks[0], 7)


def test_instance_loss_is_cross_entropy_through_the_instance_head() -> None:
    torch.manual_seed(0)
    raw = np.zeros((2, 4, 4), np.int32)
    raw[0, :2] = 5
    raw[1, 2:, 2:] = 1
    raw[1, :1] = 2
    task = get_task("instance", instance_dim=3)
    stats = fit_stats(task, [raw], 0)
    head = task.build_head(stats)
    assert head is not None and head.weight.shape == (3, 4)  # background + 3 training instances
    target = torch.from_numpy(task.encode(raw))
    output = torch.randn(2, 3, 4, 4, requires_grad=True)
    logits = torch.einsum("bdhw,dc->bhwc", output, head.weight.detach())
    expected = F.cross_entropy(logits.reshape(-1, 4), target.reshape(-1))
    loss = task.loss(output, target)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    loss.backward()
    assert head.weight.grad is not None and output.grad is not None
    half = get_task("instance", instance_dim=3, instance_subsample=0.5)
    fit_stats(half, [raw], 0)
    half.build_head(stats)
    assert half.loss(output, target).item() == half.loss(output, target).item()  # same batch, same pixels


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


def test_depth_range_decides_validity_and_predictions_are_not_clamped() -> None:
    task = get_task("depth", min_depth=1.0, max_depth=5.0)
    assert task.encode(np.array([[0.5, 1.0, 2.0, 5.0, 7.0]])).tolist() == [[0.0, 0.0, 2.0, 0.0, 0.0]]
    pred = task.predict(torch.log(torch.tensor([0.1, 3.0, 50.0])).view(1, 1, 1, 3))
    torch.testing.assert_close(pred, torch.tensor([[[0.1, 3.0, 50.0]]]))


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


def test_semantic_and_boundary_losses_are_the_references() -> None:
    """deap semseg.py loss: cross_entropy(logits (P, C), labels (P,), ignore_index=255); scalar_maps.py
    BCELoss: binary_cross_entropy_with_logits over the flattened map (mean)."""
    torch.manual_seed(2)
    logits = torch.randn(2, 4, 6, 5)
    labels = torch.randint(0, 4, (2, 6, 5))
    labels[0, 0] = IGNORE_INDEX
    flat = logits.permute(1, 0, 2, 3).flatten(1).T
    expected = F.cross_entropy(flat, labels.flatten(), ignore_index=255)
    assert get_task("semantic").loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)
    edges = (torch.rand(2, 6, 5) > 0.7).float()
    expected = F.binary_cross_entropy_with_logits(logits[:, :1].flatten(), edges.flatten())
    assert get_task("boundary").loss(logits[:, :1], edges).item() == pytest.approx(expected.item(), rel=1e-6)


def _nearest_reference(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """torch's legacy `nearest` (what deap's F.interpolate(labels, size, mode='nearest') does): output
    pixel i reads input pixel floor(i * in / out)."""
    rows = np.floor(np.arange(size[0]) * labels.shape[-2] / size[0]).astype(int)
    cols = np.floor(np.arange(size[1]) * labels.shape[-1] / size[1]).astype(int)
    return labels[:, rows][:, :, cols]


@pytest.mark.parametrize("size", [(12, 10), (7, 9), (3, 4)])
def test_semantic_loss_at_the_output_size_is_the_references(size: tuple[int, int]) -> None:
    """deap semseg.py `loss_function`: labels resized (nearest) to the output's size, then cross-entropy
    over every output pixel, ignore 255 (VOC: 448-px outputs, 224-px labels)."""
    torch.manual_seed(3)
    logits = torch.randn(2, 4, *size)
    labels = torch.randint(0, 4, (2, 6, 5))
    labels[1, 2:4] = IGNORE_INDEX
    resized = _nearest_reference(labels, size)
    expected = F.cross_entropy(logits.permute(1, 0, 2, 3).flatten(1).T, resized.flatten(), ignore_index=255)
    assert get_task("semantic").loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)


def test_the_semantic_loss_sees_the_adapters_own_output_unless_asked_for_the_label_size() -> None:
    task = get_task("semantic")
    assert task.loss_size((224, 224), (448, 448)) == (448, 448)  # VOC in the paper: query grid 56 x 8
    assert task.loss_size((224, 224), None) == (224, 224)  # an adapter without an output grid (linear)
    assert get_task("semantic", semantic_loss_size="label").loss_size((224, 224), (448, 448)) == (224, 224)
    assert get_task("depth").loss_size((224, 224), (448, 448)) == (224, 224)
    with pytest.raises(MaxaError, match=r"--semantic-loss-size: unknown semantic loss size .native."):
        get_task("semantic", semantic_loss_size="native")


@pytest.mark.parametrize(("mode", "moves"), [("trained", True), ("frozen", False)])
def test_a_frozen_instance_head_keeps_its_draw_while_the_adapter_learns(mode: str, moves: bool) -> None:
    from maxa.probe.member import new_member, train_step
    from maxa.probe.train import ProbeConfig

    raw = np.zeros((4, 16, 16), np.int64)
    raw[:, 2:8, 3:9], raw[:, 9:14, 8:15] = 5, 7
    task = get_task("instance", instance_head=mode)
    stats = fit_stats(task, [raw], 0)
    config = ProbeConfig(task="instance", instance_head=mode, query_grid=2, lr=0.05)
    member = new_member(config, 8, task, stats, 0, torch.device("cpu"))
    assert member.head is not None
    head, adapter = member.head.weight.detach().clone(), member.model.skip.weight.detach().clone()
    torch.manual_seed(0)
    x, y = torch.randn(4, 4, 4, 8), torch.from_numpy(task.encode(raw))
    for step in range(2):
        train_step(member, x, y, task, (16, 16), step)
    assert not torch.equal(member.model.skip.weight, adapter)
    assert torch.equal(member.head.weight, head) is not moves
