"""`maxa evaluate` output contract for every task and adapter, on stores written by prepare + extract."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import zarr

from maxa.core.records import write_metrics
from maxa.evaluate.metric_specs import METRICS
from maxa.evaluate.report import PROTOCOL_FIELDS
from maxa.evaluate.run import evaluate, evaluator_class, evaluator_for
from maxa.extract.config import ExtractConfig
from maxa.extract.datasets import build_dataset
from maxa.extract.features import extract
from maxa.extract.targets import PrepareConfig, prepare
from maxa.probe.task_specs import TASKS
from maxa.probe.tasks import fit_stats, get_task, task_names
from maxa.probe.train import ProbeConfig, train
from tests.kit.records import METRICS_CONTRACT, checkpoint_meta

TOP_LEVEL = METRICS_CONTRACT | {
    "adapter_params",
    "backbone_params",
    "adapter_pct_of_backbone",
    "constant_baseline",
}
PROTOCOL = set(PROTOCOL_FIELDS)
"""The protocol fields the report shows: every evaluation must write them."""


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny adapters run faster on one thread, and far faster on a CPU shared with other jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def real_stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("eval_stores")
    urls = {}
    for split, count in (("train", 32), ("val", 16)):
        options = {"num_images": count, "image_size": 64, "num_classes": 3}
        targets = str(root / f"targets_{split}.zarr")
        prepare(
            PrepareConfig(split=split, label_size=32, shard_size=16, options=options), targets, progress=False
        )
        features = str(root / f"features_{split}.zarr")
        config = ExtractConfig(
            model="vit_tiny_patch16_224",
            name="vit",
            input_size=64,
            layers=[-2, -1],
            shard_size=16,
            device="cpu",
        )
        extract(config, targets, features, progress=False)
        urls[f"targets_{split}"], urls[f"features_{split}"] = targets, features
    return urls


def _run(stores: dict[str, str], tmp_path: Path, **options: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {"iterations": 8, "batch_size": 8, "query_grid": 4, "checkpoint_every": 0}
    settings.update(options)
    checkpoint = str(tmp_path / "model.pt")
    train(  # one path reused by several runs of a test: replacing is intended
        ProbeConfig(**settings),
        stores["features_train"],
        stores["targets_train"],
        checkpoint,
        progress=False,
        overwrite=True,
    )
    return evaluate(checkpoint, stores["features_val"], stores["targets_val"], progress=False)


def test_every_registered_task_names_an_evaluator_and_a_registered_primary_metric() -> None:
    for name in task_names():
        assert callable(evaluator_class(name))
        assert TASKS.get(name).primary in METRICS


@pytest.mark.parametrize("name", task_names())
def test_task_contract_on_a_tiny_batch(name: str) -> None:
    """encode -> loss (with its head) -> backward -> predict -> evaluator scores with the primary metric."""
    torch.manual_seed(0)
    dataset = build_dataset("synthetic", split="train", num_images=4, image_size=32)
    samples, c = [dataset[i] for i in range(4)], dataset.num_classes
    task = get_task(name)
    raw = np.stack([s.targets[task.target] for s in samples])
    stats = fit_stats(task, [raw[:2], raw[2:]], c)
    head = task.build_head(stats)
    target = torch.from_numpy(task.encode(raw, 0))
    output = task.constant_output(stats, 4, (32, 32)) + 0.1 * torch.randn(4, task.out_channels(c), 32, 32)
    output.requires_grad_(True)
    loss = task.loss(output, target)
    assert torch.isfinite(loss)
    loss.backward()
    assert output.grad is not None and output.grad.abs().sum() > 0
    if head is not None:
        assert all(p.grad is not None for p in head.parameters())
    pair = SimpleNamespace(targets=SimpleNamespace(array_names=list), label_size=(32, 32))
    meta = checkpoint_meta("vit", task.name, num_classes=c, config={"seed": 0}, output_size=[32, 32])
    evaluator = evaluator_for(task, meta, pair)  # type: ignore[arg-type]
    with torch.no_grad():
        evaluator.update(output.detach(), raw)
    scores = evaluator.compute()
    assert task.primary in scores and isinstance(scores[task.primary], float)
    assert set(scores) <= set(METRICS.names())  # every score is declared (label, direction, range)


@pytest.mark.heavy
@pytest.mark.parametrize("task", task_names())
def test_metrics_json_contract(task: str, real_stores: dict[str, str], tmp_path: Path) -> None:
    metrics = _run(real_stores, tmp_path, task=task)
    assert set(metrics) >= TOP_LEVEL
    assert set(metrics["protocol"]) >= PROTOCOL
    assert metrics["task"] == task and metrics["adapter"] == "maxa" and metrics["backbone"] == "vit"
    assert metrics["split"] == "val" and metrics["protocol"]["eval_samples"] == 16
    assert metrics["protocol"]["train_samples"] == 32 and metrics["protocol"]["feature_grid"] == [4, 4]
    assert metrics["protocol"]["layer"] == "layer_11"
    # what published values are paired on (evaluate/published.py): the final norm and the held-out range
    assert metrics["protocol"]["norm"] is False and metrics["protocol"]["eval_start"] == 0
    assert set(metrics["constant_baseline"]) == set(metrics["scores"])
    assert all(isinstance(v, float) for v in metrics["scores"].values())
    name = TASKS.get(task).primary
    higher = METRICS.get(name).higher_is_better
    assert metrics["primary"] == {"name": name, "value": metrics["scores"][name], "higher_is_better": higher}
    assert 0 < metrics["adapter_pct_of_backbone"] < 0.3 * 2  # vit_tiny is small: the budget is for ViT-B
    assert metrics["protocol"]["schedule"] == "constant"  # the paper's released loop
    if task == "centers":  # prepare records each image's size (64 px here), so areas are original pixels
        assert metrics["protocol"]["box_area_pixels"] == "original"
        sizes = zarr.open_group(real_stores["targets_val"], mode="r")["original_size"][:]
        assert sizes.shape == (16, 2) and (sizes == 64).all()
    out = tmp_path / "metrics.json"
    write_metrics(metrics, str(out))
    again = json.loads(out.read_text())
    assert again["primary"]["name"] == name and again["task"] == task


def test_semantic_keeps_top_level_scores(real_stores: dict[str, str], tmp_path: Path) -> None:
    metrics = _run(real_stores, tmp_path, task="semantic", layer="-2,-1")
    assert metrics["miou"] == metrics["scores"]["miou"] and metrics["ce"] == metrics["scores"]["ce"]
    assert set(metrics["per_class_iou"]) == {"background", "disk", "square", "triangle"}
    assert metrics["protocol"]["layer"] == "layer_10,layer_11"


def test_depth_records_its_valid_range(real_stores: dict[str, str], tmp_path: Path) -> None:
    metrics = _run(real_stores, tmp_path, task="depth", min_depth=2.0, max_depth=8.5)
    assert metrics["protocol"]["task_options"]["min_depth"] == 2.0
    assert metrics["protocol"]["task_options"]["max_depth"] == 8.5
    assert 0 < metrics["scores"]["rmse"] < 6.5  # errors are bounded by the clamped valid range
    assert not math.isnan(metrics["constant_baseline"]["rmse"])
    assert metrics["protocol"]["eigen_crop"] is False  # only NYU-Depth v2 is scored inside the Eigen crop


@pytest.mark.heavy
def test_instance_clustering_resolution_is_an_option(real_stores: dict[str, str], tmp_path: Path) -> None:
    full = _run(real_stores, tmp_path, task="instance")
    coarse = _run(real_stores, tmp_path, task="instance", cluster_size=8)  # labels are 32 px
    assert coarse["protocol"]["task_options"]["cluster_size"] == 8
    assert coarse["scores"]["ari"] != full["scores"]["ari"]


def test_knn_and_linear_evaluate_like_any_adapter(real_stores: dict[str, str], tmp_path: Path) -> None:
    knn = _run(real_stores, tmp_path, adapter="knn", task="depth")
    assert knn["adapter"] == "knn" and knn["adapter_params"] == 0 and knn["primary"]["name"] == "rmse"
    linear = _run(real_stores, tmp_path, adapter="linear")
    assert linear["adapter_params"] == 192 * 4 + 4


def test_the_protocol_name_is_recorded(real_stores: dict[str, str], tmp_path: Path) -> None:
    from maxa.evaluate.intervals import evaluate_with_uncertainty

    _run(real_stores, tmp_path, task="semantic")
    stores = (real_stores["features_val"], real_stores["targets_val"])
    named = evaluate_with_uncertainty(
        str(tmp_path / "model.pt"), *stores, progress=False, resamples=0, protocol_name="deap"
    )
    unnamed = evaluate_with_uncertainty(str(tmp_path / "model.pt"), *stores, progress=False, resamples=0)
    assert named["protocol"]["name"] == "deap" and "name" not in unnamed["protocol"]
    assert named["scores"] == unnamed["scores"]
