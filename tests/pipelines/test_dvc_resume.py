"""`dvc repro` killed with SIGKILL during extraction, during a probe and during a sweep resumes under DVC.

The generated stores are `persist: true` outputs and their commands run with `--update`, so the second
`dvc repro` keeps the shards the first one finished and a probe or sweep continues every member from its
saved state; the result equals an uninterrupted `dvc repro` of the same params.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from maxa.core.errors import MaxaError
from maxa.core.store import open_store
from tests.kit.cli import command_env

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

BACKBONE = "vit_tiny"
TARGET = f"probe_semantic@{BACKBONE}"  # the repro target: prepare -> extract -> probe
STORE = f"data/features/synthetic/{BACKBONE}/train.zarr"
MODEL = f"models/semantic/{BACKBONE}.pt"
SWEEP_TARGET = f"probe_sweep@{BACKBONE}"  # a sweep of two seeds on the same stores
SWEEP = f"models/sweep/{BACKBONE}"
RUN_INFO = ("load_seconds", "train_seconds", "samples_per_second", "resumed_from_step")
"""Checkpoint fields that say how the run went (timings, where it resumed), not what it computed."""


def _params() -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    data = params["datasets"]["synthetic"]
    data.update(train_images=48, test_images=8, label_size=16, shard_size=32)
    data["options"]["image_size"] = 64
    params["backbones"] = {BACKBONE: {**params["backbones"][BACKBONE], "input_size": 64}}
    params["extract"] = {"batch_size": 4, "shard_size": 4}  # 12 small shards: a kill lands between two
    params["probe"].update(
        iterations=40, batch_size=4, query_grid=4, checkpoint_every=5, sweep_lrs="", sweep_seeds=""
    )
    params["probe"].pop("val_fraction", None)
    params["tasks"] = {"semantic": params["tasks"]["semantic"]}
    params["tasks"]["sweep"] = {"task": "semantic", "dataset": "synthetic", "sweep_seeds": "0,1"}
    return params


def _env() -> dict[str, str]:
    # SOURCE_DATE_EPOCH: the stores' `created`, so both projects write the same bytes
    return command_env(TQDM_DISABLE="1", SOURCE_DATE_EPOCH="1700000000")


def _run(cwd: Path, *args: str) -> str:
    done = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{args}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def _project(root: Path) -> Path:
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(_params(), sort_keys=False))
    _run(root, str(Path(sys.executable).parent / "maxa"), "pipeline", "params.yaml")
    _run(root, "git", "init", "-q")
    _run(root, sys.executable, "-m", "dvc", "init", "-q")
    return root


def _repro(cwd: Path, target: str = TARGET) -> str:
    return _run(cwd, sys.executable, "-m", "dvc", "repro", target)


def _kill_repro_when(cwd: Path, ready: Callable[[], bool], what: str, target: str = TARGET) -> None:
    """Start `dvc repro` in its own process group and SIGKILL the whole group (DVC and the maxa command
    it runs) as soon as `ready()` holds: a machine going down, not a polite interrupt."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", target],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if ready():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.01)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    output = proc.communicate()[0].decode(errors="replace")[-3000:]
    pytest.fail(f"could not kill `dvc repro` {what} (rc {proc.returncode}): {output}")


def _done(store: Path) -> np.ndarray | None:
    try:
        return open_store(str(store), require_complete=False).done_shards()
    except (MaxaError, OSError, KeyError, ValueError):
        return None  # not created yet


def _shard_files(store: Path) -> dict[str, int]:
    """Every shard object of the feature array -> its modification time (rewritten = new time)."""
    files = (p for p in (store / "layer_11" / "c").rglob("*") if p.is_file())
    return {str(p.relative_to(store)): p.stat().st_mtime_ns for p in files}


def _lock(root: Path) -> dict:
    return yaml.safe_load((root / "dvc.lock").read_text())["stages"]


def test_killed_repro_resumes_extraction_and_probe(tmp_path: Path) -> None:
    reference = _project(tmp_path / "uninterrupted")
    _repro(reference)
    _repro(reference, SWEEP_TARGET)

    root = _project(tmp_path / "killed")
    store = root / STORE

    def mid_extraction() -> bool:
        done = _done(store)
        return done is not None and 2 <= done.sum() < len(done) - 2

    _kill_repro_when(root, mid_extraction, "between the first and last shard")
    survivors = _done(store)
    assert survivors is not None and 0 < survivors.sum() < len(survivors)
    kept = _shard_files(store)

    _kill_repro_when(root, lambda: (root / f"{MODEL}.resume").is_file(), "once the probe saved its state")
    assert not (root / MODEL).exists()
    finished = open_store(str(store))  # the resumed extraction completed the store ...
    assert finished.complete
    after = _shard_files(store)
    # ... computing only the shards the kill had left: every finished shard object is the same file
    assert {name: after[name] for name in kept} == kept
    assert len(after) == len(survivors) and len(after) - len(kept) == len(survivors) - int(survivors.sum())
    saved_step = int(torch.load(root / f"{MODEL}.resume", weights_only=True)["step"])
    assert 0 < saved_step < 40

    log = _repro(root)
    assert "Running stage 'extract_synthetic" not in log  # finished under the second repro
    mine = torch.load(root / MODEL, weights_only=True)
    theirs = torch.load(reference / MODEL, weights_only=True)
    assert mine["meta"]["resumed_from_step"] == saved_step  # continued from the saved optimiser state
    assert theirs["meta"]["resumed_from_step"] == 0
    assert mine["state_dict"].keys() == theirs["state_dict"].keys()
    for key, value in theirs["state_dict"].items():
        assert torch.equal(mine["state_dict"][key], value), key
    assert mine["meta"]["config"].pop("resume") and not theirs["meta"]["config"].pop("resume")
    strip = lambda meta: {k: v for k, v in meta.items() if k not in RUN_INFO}  # noqa: E731
    assert strip(mine["meta"]) == strip(theirs["meta"])
    assert not (root / f"{MODEL}.resume").exists()

    # A sweep killed once it saved its state: the same command continues both members from that state
    state = root / f"{SWEEP}.pt.resume"
    _kill_repro_when(root, state.is_file, "once the sweep saved its state", SWEEP_TARGET)
    assert not (root / f"{SWEEP}.pt").exists()
    saved_step = int(torch.load(state, weights_only=True)["step"])
    assert 0 < saved_step < 40
    log = _repro(root, SWEEP_TARGET)
    assert "Running stage 'extract_synthetic" not in log
    chosen = torch.load(root / f"{SWEEP}.pt", weights_only=True)["meta"]
    assert chosen["resumed_from_step"] == saved_step and len(chosen["sweep"]["members"]) == 2
    members = sorted((reference / f"{SWEEP}.sweep").glob("*.pth"))
    assert len(members) == 2 and not state.exists()
    for path in members:
        theirs = torch.load(path, weights_only=True)
        mine = torch.load(root / f"{SWEEP}.sweep" / path.name, weights_only=True)
        assert mine["state_dict"].keys() == theirs["state_dict"].keys()
        for key, value in theirs["state_dict"].items():
            assert torch.equal(mine["state_dict"][key], value), (path.name, key)
        assert mine["meta"]["losses"] == theirs["meta"]["losses"]

    # dvc.lock: the same stages, commands, params and dependencies; the same bytes for every store; the
    # checkpoints differ only in the run-info fields above
    lock, expected = _lock(root), _lock(reference)
    assert lock.keys() == expected.keys()
    for name, stage in expected.items():
        if name in (TARGET, SWEEP_TARGET):
            assert {k: v for k, v in lock[name].items() if k != "outs"} == {
                k: v for k, v in stage.items() if k != "outs"
            }
        else:
            assert lock[name] == stage, name
    status = _run(root, sys.executable, "-m", "dvc", "status", TARGET, SWEEP_TARGET)
    assert "up to date" in status or "unchanged" in status
