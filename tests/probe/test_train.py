"""Training from stores: tasks learn, checkpoints round-trip, resumed runs end like uninterrupted ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from maxa.core.errors import MaxaError
from maxa.evaluate.run import evaluate
from maxa.probe.fitting import StepCallback
from maxa.probe.train import ProbeConfig, load_checkpoint, resume_path, train
from tests.probe.conftest import FeatureFactory


def _train(
    stores: dict[str, str], out: Path, callback: StepCallback | None = None, **overrides: Any
) -> dict[str, Any]:
    options: dict[str, Any] = {"iterations": 300, "batch_size": 16, "query_grid": 4, "checkpoint_every": 0}
    options.update(overrides)
    config = ProbeConfig(**options)
    features, targets = stores["features_train"], stores["targets_train"]
    return train(config, features, targets, str(out), progress=False, callback=callback)


def _evaluate(stores: dict[str, str], checkpoint: Path) -> dict[str, Any]:
    return evaluate(str(checkpoint), stores["features_val"], stores["targets_val"], progress=False)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


# (task, metric that must beat the constant baseline, higher is better)
TASK_CHECKS = [
    ("semantic", "miou", True),
    ("semantic", "ce", False),
    ("depth", "rmse", False),
    ("depth", "abs_rel", False),
    ("boundary", "iou", True),
    ("boundary", "bce", False),
    ("instance", "ari", True),
    ("centers", "ap50", True),
]


@pytest.mark.heavy
@pytest.mark.parametrize("task", ["semantic", "depth", "boundary", "instance", "centers"])
def test_each_task_learns_and_beats_the_constant_baseline(
    task: str, stores: dict[str, str], tmp_path: Path
) -> None:
    meta = _train(stores, tmp_path / f"{task}.pt", task=task)
    losses = meta.losses
    assert len(losses) == 300
    assert _mean(losses[-50:]) < 0.85 * _mean(losses[:20]), (losses[:20], losses[-50:])
    metrics = _evaluate(stores, tmp_path / f"{task}.pt")
    assert metrics["task"] == task
    for name, metric, higher in TASK_CHECKS:
        if name != task:
            continue
        model, const = metrics["scores"][metric], metrics["constant_baseline"][metric]
        assert (model > const) if higher else (model < const), (metric, model, const)


def test_checkpoint_round_trips_with_weights_only(stores: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    meta = _train(stores, out, iterations=5, layer="layer_0,layer_1")
    blob = torch.load(out, weights_only=True)
    assert blob["meta"]["in_channels"] == 96  # 64 + 32 channels concatenated
    assert blob["meta"]["layers"] == ["layer_0", "layer_1"]
    assert meta.adapter_params == sum(v.numel() for v in blob["state_dict"].values() if v.is_floating_point())
    assert meta.adapter_pct_of_backbone == pytest.approx(100 * meta.adapter_params / 5_000_000)
    model, loaded = load_checkpoint(str(out))
    assert loaded.config == meta.config
    for key, value in model.state_dict().items():
        assert torch.equal(value, blob["state_dict"][key]), key
    assert not resume_path(out).exists()  # a finished run leaves no resumable state behind


def _final_weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


RESUME = {"iterations": 24, "batch_size": 12, "checkpoint_every": 5, "shuffle_shards": 2, "lr": 3e-3}


def _stop_at(step_to_stop: int, exc: type[BaseException]) -> Any:
    def callback(step: int, loss: float) -> None:
        if step == step_to_stop:
            raise exc("stop")

    return callback


def _interrupted(stores: dict[str, str], out: Path, step: int, exc: type[BaseException]) -> None:
    """Train RESUME until `exc` is raised at `step` (Ctrl-C or a crash)."""
    with pytest.raises(exc):
        _train(stores, out, callback=_stop_at(step, exc), **RESUME)


def _assert_same_weights(a: Path, b: Path) -> None:
    first, second = _final_weights(a), _final_weights(b)
    for key in first:
        torch.testing.assert_close(second[key], first[key], rtol=0, atol=1e-6)


def test_resume_after_ctrl_c_gives_the_uninterrupted_weights(stores: dict[str, str], tmp_path: Path) -> None:
    _train(stores, tmp_path / "full.pt", **RESUME)
    out = tmp_path / "part.pt"
    _interrupted(stores, out, 12, KeyboardInterrupt)
    state = torch.load(resume_path(out), weights_only=True)
    assert state["step"] == 13 and len(state["losses"]) == 13  # saved on the interrupt, not at step 10
    assert not out.exists()
    # Resumed with the other loader: both draw the same batches, so the result must not change.
    meta = _train(stores, out, resume=True, loader="stream", **RESUME)
    assert meta.other["resumed_from_step"] == 13 and meta.loader == "stream"
    _assert_same_weights(tmp_path / "full.pt", out)
    assert not resume_path(out).exists()


def test_resume_after_crash_uses_the_periodic_state(stores: dict[str, str], tmp_path: Path) -> None:
    _train(stores, tmp_path / "full.pt", **RESUME)
    out = tmp_path / "part.pt"
    _interrupted(stores, out, 17, RuntimeError)
    assert torch.load(resume_path(out), weights_only=True)["step"] == 15
    _train(stores, out, resume=True, **RESUME)
    _assert_same_weights(tmp_path / "full.pt", out)


def test_resume_refuses_state_of_another_run(stores: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "part.pt"
    _interrupted(stores, out, 3, KeyboardInterrupt)
    changed = {**RESUME, "lr": 1e-2}
    with pytest.raises(MaxaError, match=r"cannot --resume .*lr: 0\.003 -> 0\.01"):
        _train(stores, out, resume=True, **changed)
    assert resume_path(out).exists()  # nothing lost


def test_linear_probe_trains(stores: dict[str, str], tmp_path: Path) -> None:
    meta = _train(stores, tmp_path / "lin.pt", adapter="linear", iterations=60, lr=1e-2)
    assert meta.adapter_params == 32 * 4 + 4  # 1x1 conv from layer_1 (32 ch) to 4 classes
    assert _mean(meta.losses[-10:]) < _mean(meta.losses[:5])


def test_knn_builds_a_bounded_bank_without_training(stores: dict[str, str], tmp_path: Path) -> None:
    meta = _train(stores, tmp_path / "knn.pt", adapter="knn", knn_bank=2000, knn_k=5, layer="layer_0")
    assert meta.losses == [] and meta.adapter_params == 0
    assert 0 < meta.adapter_options["bank_size"] <= 2000
    blob = torch.load(tmp_path / "knn.pt", weights_only=True)
    assert blob["state_dict"]["keys"].shape == (meta.adapter_options["bank_size"], 64)
    metrics = _evaluate(stores, tmp_path / "knn.pt")
    assert metrics["adapter"] == "knn"
    assert metrics["miou"] > metrics["constant_baseline"]["miou"]


def test_knn_depth_beats_constant(stores: dict[str, str], tmp_path: Path) -> None:
    _train(stores, tmp_path / "knn.pt", adapter="knn", task="depth", knn_k=8, layer="layer_0")
    metrics = _evaluate(stores, tmp_path / "knn.pt")
    assert metrics["scores"]["rmse"] < metrics["constant_baseline"]["rmse"]


def test_knn_refuses_unsupported_task(stores: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(MaxaError, match="k-NN baseline does not support task 'boundary'"):
        _train(stores, tmp_path / "knn.pt", adapter="knn", task="boundary")


def test_config_errors_name_the_option() -> None:
    with pytest.raises(MaxaError, match="--min-depth < --max-depth"):
        ProbeConfig(min_depth=5, max_depth=1)
    with pytest.raises(MaxaError, match="--loader"):
        ProbeConfig(loader="disk")
    with pytest.raises(MaxaError, match="unknown task 'semantik'; did you mean semantic"):
        ProbeConfig(task="semantik")
    assert ProbeConfig(layer="9, 11").layers() == ["9", "11"]


@pytest.mark.parametrize(("loss_size", "seen"), [("output", (64, 64)), ("label", (32, 32))])
def test_semantic_training_scores_the_adapters_own_output(
    stores: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loss_size: str, seen: tuple
) -> None:
    """Query grid 8 gives 64-px outputs over 32-px labels: the paper's loss sees 64 px (labels resized)."""
    from maxa.probe.tasks import SemanticSegmentation

    shapes: set[tuple[int, ...]] = set()
    original = SemanticSegmentation.loss

    def spy(self: SemanticSegmentation, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        shapes.add(tuple(output.shape[-2:]))
        return original(self, output, target)

    monkeypatch.setattr(SemanticSegmentation, "loss", spy)
    _train(stores, tmp_path / "m.pt", iterations=2, query_grid=8, semantic_loss_size=loss_size)
    assert shapes == {seen}


def test_a_store_without_backbone_parameters_gives_no_percentage_and_says_why(
    stores: dict[str, str], feature_factory: FeatureFactory, tmp_path: Path
) -> None:
    features = feature_factory("nobackbone.zarr", backbone_params=0)
    config = ProbeConfig(task="semantic", iterations=2, batch_size=8, query_grid=4, checkpoint_every=0)
    out = str(tmp_path / "p.pt")
    meta = train(config, features, stores["targets_train"], out, progress=False)
    assert meta.adapter_params > 0 and meta.adapter_pct_of_backbone is None
    metrics = evaluate(out, features, stores["targets_train"], progress=False, allow_training_split=True)
    assert metrics["adapter_pct_of_backbone"] is None
    assert "no backbone parameters" in metrics["nulls"]["adapter_pct_of_backbone"]
