"""benchmarks/pipeline_scale.py: a rerun of the same DAG restores the committed state instead of `dvc commit`,
and that state is one `dvc status -q` finds fully up to date (the script stops otherwise)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.kit.cli import command_env

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "pipeline_scale.py"


def _run(cache: Path, backbones: int) -> str:
    args = ["--backbones", str(backbones), "--datasets", "1", "--tasks", "1", "--records", "5"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--setup-cache", str(cache)],
        env=command_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def test_a_rerun_restores_the_committed_workspace(tmp_path: Path) -> None:
    cache = tmp_path / "setup"
    first = _run(cache, 1)
    assert "setup: `dvc commit`" in first
    saved = list(cache.glob("pipeline_scale-*.tar"))
    assert len(saved) == 1
    again = _run(cache, 1)
    assert f"setup: restored from {cache}" in again
    assert "dvc status (all up to date)" in again  # timed only after `dvc status -q` exited 0
    other = _run(cache, 2)  # another DAG: another key, committed anew
    assert "setup: `dvc commit`" in other and len(list(cache.glob("pipeline_scale-*.tar"))) == 2
