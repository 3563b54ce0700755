"""Sweeps: K members on shared batches end exactly like each member trained alone; selection is honest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from maxa.core.errors import MaxaError
from maxa.evaluate.intervals import SEEDS_AND_IMAGES, evaluate_with_uncertainty
from maxa.evaluate.run import evaluate
from maxa.probe.config import ProbeConfig
from maxa.probe.data import open_pair
from maxa.probe.loader import BatchOrder, holdout_rows
from maxa.probe.stepping import resolve_mode
from maxa.probe.sweep import choose, sweep_dir
from maxa.probe.tasks import SemanticSegmentation
from maxa.probe.train import load_checkpoint, train
from tests.kit.cli import invoke, ok

BASE: dict[str, Any] = {"iterations": 12, "batch_size": 8, "query_grid": 4, "checkpoint_every": 0}


def _state(path: str | Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.heavy
def test_every_member_equals_training_it_alone(stores: dict[str, str], tmp_path: Path) -> None:
    config = ProbeConfig(
        **BASE,
        sweep_lrs="1e-3,3e-3",
        sweep_seeds="0,5",
        sweep_layers="layer_0;layer_1;layer_1,layer_0",
        val_fraction=0.25,
        val_seed=3,
    )
    meta = train(
        config, stores["features_train"], stores["targets_train"], str(tmp_path / "s.pt"), progress=False
    )
    members = meta.sweep["members"]
    assert len(members) == 12
    assert len({m["run_id"] for m in members}) == 12
    # Three members, one per layer choice (the concatenation reorders channels), each alone.
    for record in (members[0], members[5], members[11]):
        alone = ProbeConfig(
            **BASE,
            lr=record["lr"],
            seed=record["seed"],
            layer=record["layer"],
            data_seed=0,
            val_fraction=0.25,
            val_seed=3,
        )
        out = tmp_path / f"alone_{record['seed']}_{record['lr']}.pt"
        solo = train(alone, stores["features_train"], stores["targets_train"], str(out), progress=False)
        swept, single = _state(record["checkpoint"]), _state(out)
        assert swept.keys() == single.keys()
        for key in swept:
            assert torch.equal(swept[key], single[key]), (record, key)
        swept_meta = torch.load(record["checkpoint"], weights_only=True)["meta"]
        assert swept_meta["run_id"] == solo.run_id
        assert swept_meta["losses"] == solo.losses
        assert swept_meta["validation"]["loss"] == pytest.approx(solo.validation["loss"], abs=0)


def test_out_is_the_member_chosen_on_validation_loss(stores: dict[str, str], tmp_path: Path) -> None:
    config = ProbeConfig(**BASE, sweep_lrs="1e-4,3e-3", sweep_seeds="0,1", val_fraction=0.25)
    out = tmp_path / "m.pt"
    meta = train(config, stores["features_train"], stores["targets_train"], str(out), progress=False)
    sweep = meta.sweep
    by_lr: dict[float, list[float]] = {}
    for m in sweep["members"]:
        by_lr.setdefault(m["lr"], []).append(m["val_loss"])
    best = min(by_lr, key=lambda lr: np.mean(by_lr[lr]))
    assert sweep["chosen"]["lr"] == best
    assert meta.config["lr"] == best and meta.config["seed"] == 0
    assert len(sweep["seed_checkpoints"]) == 2
    assert all(Path(p).parent == sweep_dir(out) for p in sweep["seed_checkpoints"])
    model, loaded = load_checkpoint(str(out))
    assert loaded.sweep["val_samples"] == 24 and loaded.train_samples == 72
    for key, value in _state(sweep["seed_checkpoints"][0]).items():
        assert torch.equal(model.state_dict()[key], value)


def test_validation_rows_never_reach_a_training_batch(stores: dict[str, str]) -> None:
    pair = open_pair(stores["features_train"], stores["targets_train"], "layer_0", "semantic")
    held = holdout_rows(len(pair), 0.25, 7)
    assert len(held) == 24 and len(np.unique(held)) == 24
    order = BatchOrder(pair.shard_ranges(), 2, seed=0, exclude=held)
    seen = np.concatenate([order.rows(step, 8) for step in range(9)])  # one epoch = 72 rows
    assert not np.isin(seen, held).any()
    assert sorted(seen.tolist()) == sorted(set(range(96)) - set(held.tolist()))
    assert not np.array_equal(held, holdout_rows(len(pair), 0.25, 8))


def test_choose_averages_over_seeds() -> None:
    configs = [ProbeConfig(lr=lr, seed=s) for lr in (0.1, 0.2) for s in (0, 1)]
    # lr 0.1 has the single best member, lr 0.2 the better mean
    assert choose(configs, [0.1, 0.9, 0.4, 0.4]) == ("-1", 0.2)


def test_sweep_options_are_validated() -> None:
    with pytest.raises(MaxaError, match="--val-fraction"):
        ProbeConfig(sweep_lrs="1e-3,1e-2")
    with pytest.raises(MaxaError, match="--sweep-lrs"):
        ProbeConfig(sweep_lrs="1e-3,abc", val_fraction=0.1)
    with pytest.raises(MaxaError, match="twice"):
        ProbeConfig(sweep_seeds="1,1")
    with pytest.raises(MaxaError, match="--val-fraction"):
        holdout_rows(4, 0.1, 0)


@pytest.mark.heavy
def test_evaluate_reports_seed_intervals_for_a_sweep_and_bootstrap_for_one_run(
    stores: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also: the test split is read once per distinct checkpoint (the chosen checkpoint is its first seed;
    a single run's bootstrap states come from the scoring pass)."""
    from maxa.probe.data import StorePair

    reads: list[int] = []  # one entry per pass over a split: its first feature rows read
    read = StorePair.read_features

    def counted(self: StorePair, start: int, stop: int) -> np.ndarray:
        if start == 0:
            reads.append(start)
        return read(self, start, stop)

    monkeypatch.setattr(StorePair, "read_features", counted)
    s = stores
    base = {"iterations": 30, "batch_size": 8, "query_grid": 4, "checkpoint_every": 0, "val_fraction": 0.25}
    config = ProbeConfig(**base, sweep_lrs="1e-3,3e-3", sweep_seeds="0,1")
    out = tmp_path / "sweep.pt"
    train(config, s["features_train"], s["targets_train"], str(out), progress=False)
    reads.clear()
    result = evaluate_with_uncertainty(str(out), s["features_val"], s["targets_val"], progress=False)
    assert len(reads) == 2 and [r["seed"] for r in result["seed_scores"]] == [0, 1]
    seeds = torch.load(out, weights_only=True)["meta"]["sweep"]["seed_checkpoints"]
    each = [evaluate(p, s["features_val"], s["targets_val"], progress=False)["scores"]["miou"] for p in seeds]
    record = result["uncertainty"]["miou"]
    assert record["method"] == SEEDS_AND_IMAGES and record["seeds"] == 2
    assert record["n"] == result["protocol"]["eval_samples"]  # images, drawn with the seeds
    assert result["primary"]["value"] == pytest.approx(np.mean(each))
    assert record["mean"] == pytest.approx(np.mean(each), abs=1e-9)
    assert 0 <= record["low"] <= np.mean(each) <= record["high"] <= 1
    assert result["protocol"]["selection"]["swept"]["lrs"] == [1e-3, 3e-3]
    assert result["protocol"]["selection"]["val_fraction"] == 0.25
    single = tmp_path / "one.pt"
    train(ProbeConfig(**base), s["features_train"], s["targets_train"], str(single), progress=False)
    reads.clear()
    one = evaluate_with_uncertainty(
        str(single), s["features_val"], s["targets_val"], progress=False, resamples=200
    )
    assert len(reads) == 1
    plain = evaluate(str(single), s["features_val"], s["targets_val"], progress=False)
    boot = one["uncertainty"]["miou"]
    assert boot["method"] == "bootstrap" and boot["n"] == plain["protocol"]["eval_samples"]
    assert boot["mean"] == pytest.approx(plain["scores"]["miou"], abs=1e-9)
    assert boot["low"] < plain["scores"]["miou"] < boot["high"]


@pytest.mark.heavy
@pytest.mark.parametrize("task", ["semantic", "depth", "centers"])  # centres: two decoders per member
def test_vmap_members_match_the_loop_to_rounding(stores: dict[str, str], tmp_path: Path, task: str) -> None:
    """One batched computation (stacked parameters, vmap, per-member lr) trains the same members."""
    grid = {"task": task, "sweep_lrs": "1e-3,3e-3", "sweep_seeds": "0,1", "val_fraction": 0.25}
    metas = {}
    for mode in ("loop", "vmap"):
        config = ProbeConfig(**BASE, **grid, sweep_mode=mode)
        out = tmp_path / f"{mode}.pt"
        metas[mode] = train(
            config, stores["features_train"], stores["targets_train"], str(out), progress=False
        )
    assert metas["vmap"].other["sweep_mode"] == "vmap" and metas["loop"].other["sweep_mode"] == "loop"
    for a, b in zip(metas["loop"].sweep["members"], metas["vmap"].sweep["members"], strict=True):
        assert a["run_id"] == b["run_id"]
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
        loop, vmapped = _state(a["checkpoint"]), _state(b["checkpoint"])
        # Adam normalises gradients, so parameters with ~zero gradient (key biases: softmax is shift
        # invariant) carry rounding noise up to ~lr x steps; everything else agrees far closer.
        for key in loop:
            assert torch.allclose(loop[key], vmapped[key], atol=2e-3, rtol=1e-3), key
        heads = [key for key in loop if key.endswith("head.weight")]  # parts.N.head.weight for centres
        assert heads and all(torch.allclose(loop[k], vmapped[k], atol=1e-4) for k in heads)


@pytest.mark.heavy
@pytest.mark.parametrize("task", ["semantic", "instance"])
def test_parallel_members_equal_their_recorded_config_trained_alone(
    stores: dict[str, str], tmp_path: Path, task: str
) -> None:
    """Members stepped on two cores (one thread each) record `threads: 1`, and that config trained alone
    ends bit-for-bit where the member ended (instance: each member keeps its own training head)."""
    grid = {"sweep_lrs": "1e-3,3e-3", "val_fraction": 0.25} if task == "semantic" else {}
    config = ProbeConfig(**BASE, task=task, sweep_seeds="0,1", threads=2, **grid)
    meta = train(
        config, stores["features_train"], stores["targets_train"], str(tmp_path / "s.pt"), progress=False
    )
    assert meta.other["sweep_mode"] == "parallel"
    assert torch.get_num_threads() == 1  # the conftest's setting is restored afterwards
    for i, record in enumerate(meta.sweep["members"]):
        recorded = torch.load(record["checkpoint"], weights_only=True)["meta"]
        assert recorded["config"]["threads"] == 1
        out = tmp_path / f"alone{i}.pt"
        solo = train(
            ProbeConfig(**recorded["config"]),
            stores["features_train"],
            stores["targets_train"],
            str(out),
            progress=False,
        )
        assert solo.run_id == record["run_id"] and solo.losses == recorded["losses"]
        swept, single = _state(record["checkpoint"]), _state(out)
        assert all(torch.equal(swept[key], single[key]) for key in swept), record


def test_parallel_refuses_a_step_that_draws_from_the_global_random_stream(
    stores: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads would interleave the global stream, so members could not be reproduced: refused."""
    loss = SemanticSegmentation.loss

    def noisy(self: SemanticSegmentation, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return loss(self, output, target) + 0.0 * torch.rand(())

    monkeypatch.setattr(SemanticSegmentation, "loss", noisy)
    config = ProbeConfig(**BASE, sweep_seeds="0,1", threads=2, sweep_mode="parallel")
    with pytest.raises(MaxaError, match=r"global random stream.*--sweep-mode loop"):
        train(
            config, stores["features_train"], stores["targets_train"], str(tmp_path / "m.pt"), progress=False
        )
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("mode", ["loop", "parallel", "vmap"])
def test_a_diverging_member_stops_the_sweep_with_its_lr(
    stores: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """A non-finite loss in any member ends the run with a one-line error naming the step and lr (from a
    worker thread too), leaves no checkpoint and restores the thread setting."""
    loss = SemanticSegmentation.loss

    def poisoned(self: SemanticSegmentation, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        value = loss(self, output, target)
        return value * float("nan") if output.requires_grad and output.shape[0] == 8 else value

    monkeypatch.setattr(SemanticSegmentation, "loss", poisoned)
    config = ProbeConfig(**BASE, sweep_seeds="0,1", threads=2, sweep_mode=mode)
    out = tmp_path / "m.pt"
    with pytest.raises(MaxaError, match=r"training diverged at step 0 .*lr.*0\.001"):
        train(config, stores["features_train"], stores["targets_train"], str(out), progress=False)
    assert not out.exists() and torch.get_num_threads() == 1


def test_auto_sweep_mode_follows_the_device_and_cores() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_mode("auto", cpu, 4, 2) == "parallel"
    assert resolve_mode("auto", cpu, 4, 1) == "loop"
    assert resolve_mode("auto", cpu, 1, 8) == "loop"
    assert resolve_mode("auto", cpu, 4, 4) == "parallel"
    assert resolve_mode("auto", cpu, 4, 16) == "loop"  # more cores than members: one member's threads
    assert resolve_mode("auto", cuda, 4, 1) == "vmap"
    assert resolve_mode("loop", cuda, 4, 1) == "loop"
    with pytest.raises(MaxaError, match="parallel runs members on CPU cores"):
        resolve_mode("parallel", cuda, 4, 1)
    # The instance task's per-member training head is not stacked: never vmap it.
    assert resolve_mode("auto", cuda, 4, 1, heads=True) == "loop"
    with pytest.raises(MaxaError, match="vmap cannot train this task's training head"):
        resolve_mode("vmap", cpu, 4, 1, heads=True)


def test_vmap_sweep_of_a_task_with_a_training_head_is_refused(stores: dict[str, str], tmp_path: Path) -> None:
    """Stacking only the adapters would leave every member's instance head untrained: refused up front."""
    config = ProbeConfig(**BASE, task="instance", sweep_seeds="0,1", sweep_mode="vmap")
    with pytest.raises(MaxaError, match="vmap cannot train"):
        train(
            config, stores["features_train"], stores["targets_train"], str(tmp_path / "m.pt"), progress=False
        )
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.heavy
def test_cli_sweep_then_evaluate_writes_seed_intervals(stores: dict[str, str], tmp_path: Path) -> None:
    import json

    out, metrics = tmp_path / "models/m.pt", tmp_path / "metrics/m.json"
    args = ["probe", "--features", stores["features_train"], "--targets", stores["targets_train"]]
    args += ["--out", str(out), "--iterations", "10", "--batch-size", "8", "--query-grid", "4"]
    args += [
        "--sweep-lrs",
        "1e-3,2e-3",
        "--sweep-seeds",
        "0,1",
        "--val-fraction",
        "0.25",
        "--sweep-mode",
        "vmap",
    ]
    ok(*args)
    assert len(list(sweep_dir(out).glob("*.pth"))) == 4 and not list(sweep_dir(out).glob("*.pt"))
    args = ["evaluate", "--checkpoint", str(out), "--features", stores["features_val"]]
    args += ["--targets", stores["targets_val"], "--out", str(metrics)]
    ok(*args)
    record = json.loads(metrics.read_text())
    assert record["uncertainty"]["miou"]["seeds"] == 2 and record["run_id"].startswith(
        "pixels/maxa/semantic/"
    )
    bad = invoke("probe", "--features", "x", "--targets", "y", "--out", "z", "--sweep-lrs", "1,2")
    assert bad.exit_code != 0 and "--val-fraction" in bad.output


@pytest.mark.heavy
@pytest.mark.parametrize("task", ["depth", "boundary", "instance", "centers"])
def test_bootstrap_states_add_up_to_the_reported_scores(
    stores: dict[str, str], tmp_path: Path, task: str
) -> None:
    """Summing every test image's state reproduces evaluate()'s pooled metrics exactly, for each task;
    box AP, resampled from COCOeval's per-image matches, reproduces it bit for bit."""
    out = tmp_path / "one.pt"
    config = ProbeConfig(**{**BASE, "iterations": 5}, task=task)
    train(config, stores["features_train"], stores["targets_train"], str(out), progress=False)
    result = evaluate_with_uncertainty(
        str(out), stores["features_val"], stores["targets_val"], progress=False, resamples=50
    )
    plain = evaluate(str(out), stores["features_val"], stores["targets_val"], progress=False)
    assert set(result["uncertainty"]) == set(plain["scores"]) and "uncertainty_note" not in result
    if task == "centers":
        ap = result["uncertainty"]["ap"]
        assert ap["method"] == "bootstrap" and ap["resamples"] == 50
        assert ap["mean"] == plain["scores"]["ap"] and ap["low"] <= ap["mean"] <= ap["high"]
        undefined = [k for k, v in plain["scores"].items() if v != v]
        assert undefined, "the tiny label maps hold no COCO-large box"
        assert all("no ground-truth box" in plain["nulls"][f"scores.{k}"] for k in undefined)
    for name, value in plain["scores"].items():
        record = result["uncertainty"][name]
        if value != value:  # NaN stays NaN, without an interval
            assert record["low"] is None
            continue
        assert record["mean"] == pytest.approx(value, rel=1e-6, abs=1e-12), name  # float32 sums (BCE)
        assert record["method"] == "bootstrap" and record["low"] <= record["high"]


def test_a_task_without_held_out_loss_refuses_val_fraction(stores: dict[str, str], tmp_path: Path) -> None:
    """Instance discrimination's classes are the training instances: a held-out image has none, so
    model selection on it is refused up front (with what to do), not failed mid-run."""
    config = ProbeConfig(task="instance", iterations=2, query_grid=4, val_fraction=0.25)
    with pytest.raises(MaxaError, match=r"--val-fraction: the instance task .* set val_fraction 0"):
        train(
            config, stores["features_train"], stores["targets_train"], str(tmp_path / "m.pt"), progress=False
        )


def test_a_sweep_joins_its_stores_once_and_refuses_a_step_callback(
    stores: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every member reads other layers of the same join (no store is reopened per member); a callback,
    which follows one run's steps, is refused for a sweep instead of being ignored."""
    import maxa.probe.data as data

    joins: list[str] = []
    join = data.join_stores
    monkeypatch.setattr(data, "join_stores", lambda f, t: joins.append(f) or join(f, t))
    grid = {"sweep_lrs": "1e-3,3e-3", "sweep_seeds": "0,1", "sweep_layers": "layer_0;layer_1"}
    config = ProbeConfig(**BASE, **grid, val_fraction=0.25)
    meta = train(
        config, stores["features_train"], stores["targets_train"], str(tmp_path / "s.pt"), progress=False
    )
    assert len(meta.sweep["members"]) == 8 and joins == [stores["features_train"]]
    with pytest.raises(MaxaError, match="callback follows one run"):
        train(
            config,
            stores["features_train"],
            stores["targets_train"],
            str(tmp_path / "c.pt"),
            progress=False,
            callback=lambda step, loss: None,
        )


@pytest.mark.heavy
def test_selection_flags_a_chosen_member_that_loses_to_the_constant(
    stores: dict[str, str], tmp_path: Path
) -> None:
    pair = open_pair(stores["features_train"], stores["targets_train"], "layer_0", "semantic")
    held = holdout_rows(len(pair), 0.25, 0)
    labels = np.asarray(pair.targets.array("semantic")[:]).astype(np.int64)
    train_rows = np.setdiff1d(np.arange(len(pair)), held)
    # Independent definition: cross-entropy of the training split's class prior on the held-out pixels.
    counts = np.bincount(labels[train_rows][labels[train_rows] != 255], minlength=pair.num_classes)
    prior = counts / counts.sum()
    truth = labels[held][labels[held] != 255]
    expected = float(-np.log(np.maximum(prior, 1e-6))[truth].mean())
    outcomes = {}
    for name, lrs in (("learns", "1e-3,3e-3"), ("diverges", "3,5")):
        config = ProbeConfig(**{**BASE, "iterations": 20}, sweep_lrs=lrs, val_fraction=0.25)
        out = str(tmp_path / f"{name}.pt")
        sweep = train(config, stores["features_train"], stores["targets_train"], out, progress=False).sweep
        assert sweep["constant_val_loss"] == pytest.approx(expected, rel=1e-4)
        flagged = sweep["chosen"]["worse_than_constant"]
        assert flagged == (sweep["chosen"]["mean_val_loss"] > expected)
        outcomes[name] = flagged
    assert outcomes == {"learns": False, "diverges": True}
