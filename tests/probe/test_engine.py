"""The one training engine: a sweep resumes like a single run, after a crash or a `kill -9`, in every mode."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from maxa.core.errors import MaxaError
from maxa.probe.config import ProbeConfig
from maxa.probe.resume import can_resume, resume_path
from maxa.probe.sweep import sweep_dir
from maxa.probe.tasks import SemanticSegmentation
from maxa.probe.train import train
from tests.kit.cli import maxa_script

BASE: dict[str, Any] = {"iterations": 12, "batch_size": 8, "query_grid": 4, "checkpoint_every": 4}
GRID: dict[str, Any] = {"sweep_lrs": "1e-3,3e-3", "sweep_seeds": "0,1", "val_fraction": 0.25}
RUN_INFO = ("load_seconds", "train_seconds", "samples_per_second", "resumed_from_step")


def _blob(path: str | Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _members(out: Path) -> dict[str, dict[str, Any]]:
    """Member checkpoint name -> its file's contents."""
    return {p.name: _blob(p) for p in sorted(sweep_dir(out).glob("*.pth"))}


def _crash_at(monkeypatch: pytest.MonkeyPatch, call: int) -> None:
    """Raise RuntimeError (a crash) in the `call`-th training loss of the run, in whichever thread."""
    loss, calls = SemanticSegmentation.loss, itertools.count(1)

    def crashing(self: SemanticSegmentation, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if output.requires_grad and next(calls) == call:
            raise RuntimeError("crash")
        return loss(self, output, target)

    monkeypatch.setattr(SemanticSegmentation, "loss", crashing)


def _record(meta: dict[str, Any]) -> str:
    """A checkpoint record without how the run went (timings, where it resumed) or `--resume` itself,
    as JSON (so a NaN validation loss equals itself)."""
    config = {k: v for k, v in meta["config"].items() if k != "resume"}
    return json.dumps(
        {k: v for k, v in meta.items() if k not in RUN_INFO} | {"config": config}, sort_keys=True
    )


def _assert_same_members(resumed: Path, full: Path, count: int) -> None:
    """Every member checkpoint holds the same weights bit for bit and the same record but for run info."""
    mine, theirs = _members(resumed), _members(full)
    assert mine.keys() == theirs.keys() and len(mine) == count
    for name, blob in theirs.items():
        assert blob["state_dict"].keys() == mine[name]["state_dict"].keys()
        for key, value in blob["state_dict"].items():
            assert torch.equal(mine[name]["state_dict"][key], value), (name, key)
        assert _record(mine[name]["meta"]) == _record(blob["meta"]), name


@pytest.mark.heavy
@pytest.mark.parametrize("mode", ["loop", "parallel", "vmap"])
def test_a_crashed_sweep_resumes_every_member_to_the_uninterrupted_weights(
    stores: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """4 members crash in step 9 (0-based); the state of step 8 continues every member, in every mode, to
    the weights, losses and validation losses of the sweep that never crashed."""
    config = ProbeConfig(**BASE, **GRID, sweep_mode=mode, threads=2 if mode == "parallel" else 0)
    urls = (stores["features_train"], stores["targets_train"])
    full = tmp_path / "full.pt"
    train(config, *urls, str(full), progress=False)

    out = tmp_path / "part.pt"
    with monkeypatch.context() as patch:
        _crash_at(patch, 9 * 4 + 2)  # the third member's loss of step 9: a half-done step is never saved
        with pytest.raises(RuntimeError, match="crash"):
            train(config, *urls, str(out), progress=False)
    state = _blob(resume_path(out))
    assert state["step"] == 8 and len(state["members"]) == 4
    assert len(state["losses"]) == 8 and all(len(row) == 4 for row in state["losses"])
    assert not out.exists() and not sweep_dir(out).exists()
    assert can_resume(config, *urls, str(out))
    assert not can_resume(ProbeConfig(**{**BASE, **GRID, "sweep_seeds": "0,2"}), *urls, str(out))

    meta = train(replace(config, resume=True), *urls, str(out), progress=False)
    assert meta.other["resumed_from_step"] == 8 and meta.other["sweep_mode"] == mode
    _assert_same_members(out, full, 4)
    assert meta.sweep["chosen"] == _blob(full)["meta"]["sweep"]["chosen"]
    assert not resume_path(out).exists()


def test_a_sweep_refuses_the_state_of_another_grid(
    stores: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    urls = (stores["features_train"], stores["targets_train"])
    out = tmp_path / "part.pt"
    with monkeypatch.context() as patch:
        _crash_at(patch, 5 * 4 + 1)
        with pytest.raises(RuntimeError, match="crash"):
            train(ProbeConfig(**BASE, **GRID, sweep_mode="loop"), *urls, str(out), progress=False)
    other = ProbeConfig(**BASE, **{**GRID, "sweep_lrs": "1e-3,2e-3"}, resume=True)
    with pytest.raises(MaxaError, match=r"cannot --resume .*sweep_lrs: '1e-3,3e-3' -> '1e-3,2e-3'"):
        train(other, *urls, str(out), progress=False)
    assert resume_path(out).exists()  # nothing lost


def _probe_command(stores: dict[str, str], out: Path, iterations: int) -> list[str]:
    """`maxa probe` as a generated DVC stage runs it (`--update`: resume this run's state, else start)."""
    args = ["probe", "--features", stores["features_train"], "--targets", stores["targets_train"]]
    args += ["--out", str(out), "--update", "--iterations", str(iterations), "--batch-size", "8"]
    args += ["--query-grid", "4", "--checkpoint-every", "5", "--threads", "1", "--sweep-seeds", "0,1"]
    return [*maxa_script(), *args]


@pytest.mark.heavy
def test_a_sweep_killed_with_sigkill_continues_every_member_when_run_again(
    stores: dict[str, str], tmp_path: Path
) -> None:
    """`kill -9` mid-sweep, then the same command: every member continues from its saved state and ends
    bit-for-bit where an uninterrupted sweep ends."""
    iterations = 100
    out = tmp_path / "killed.pt"
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        _probe_command(stores, out, iterations), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and not resume_path(out).is_file():
        time.sleep(0.005)
    if proc.poll() is not None or not resume_path(out).is_file():
        proc.kill()
        pytest.fail(f"the sweep saved no state before it ended: {proc.communicate()[0].decode()[-2000:]}")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = int(_blob(resume_path(out))["step"])
    assert 0 < saved < iterations and not out.exists()

    again = subprocess.run(
        _probe_command(stores, out, iterations), env=env, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    resumed = _blob(out)["meta"]
    assert resumed["resumed_from_step"] == saved

    full = tmp_path / "full.pt"
    config = ProbeConfig(
        iterations=iterations, batch_size=8, query_grid=4, checkpoint_every=5, threads=1, sweep_seeds="0,1"
    )
    train(config, stores["features_train"], stores["targets_train"], str(full), progress=False)
    _assert_same_members(out, full, 2)
    assert not resume_path(out).exists()
