"""A real `maxa extract` killed with SIGKILL mid-run resumes to the store an uninterrupted run writes."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from maxa.core.errors import MaxaError
from maxa.core.store import open_store
from maxa.extract.features import extract
from maxa.extract.targets import PrepareConfig, prepare
from tests.kit.cli import command_env, maxa_script
from tests.kit.stores import tiny_extract

pytestmark = pytest.mark.slow

MODEL = ["--model", "vit_tiny_patch16_224", "--weights", "random-init", "--input-size", "32", "--layers=-1"]
SHARD = 4


def _env() -> dict[str, str]:
    return command_env(TQDM_DISABLE="1")


def _command(targets: Path, out: Path) -> list[str]:
    return [
        *maxa_script(),
        "extract",
        "--targets",
        str(targets),
        "--out",
        str(out),
        *MODEL,
        "--batch-size",
        str(SHARD),
        "--shard-size",
        str(SHARD),
    ]


def _done(out: Path | str) -> np.ndarray | None:
    try:
        return open_store(str(out), require_complete=False).done_shards()
    except (MaxaError, OSError, KeyError, ValueError):
        return None  # not created yet


def kill_between_shards(proc: subprocess.Popen, url: str, timeout: float = 240) -> np.ndarray:
    """SIGKILL a running `maxa extract` once at least one shard of `url` but not all are done; returns
    the done flags it was killed at (fails the test when the run cannot be caught in between)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        done = _done(url)
        if done is not None and 1 <= done.sum() < len(done):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            assert proc.returncode == -signal.SIGKILL
            return done
        time.sleep(0.01)
    proc.kill()
    output = proc.communicate()[0].decode(errors="replace")[-2000:]
    pytest.fail(f"could not catch the run between its first and last shard (rc {proc.returncode}): {output}")


def _shard_files(out: Path, shards: list[int]) -> dict[int, int]:
    return {s: (out / "layer_11" / "c" / str(s) / "0" / "0" / "0").stat().st_mtime_ns for s in shards}


def test_sigkill_mid_run_then_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    targets = tmp_path / "targets.zarr"
    prepare(
        PrepareConfig(
            split="train", label_size=16, shard_size=8, options={"num_images": 40, "image_size": 32}
        ),
        str(targets),
        progress=False,
    )
    out = tmp_path / "killed.zarr"
    proc = subprocess.Popen(
        _command(targets, out), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    kill_between_shards(proc, str(out))

    # Interrupted: the store is refused as incomplete, and says which shards are missing.
    interrupted = open_store(str(out), require_complete=False)
    assert not interrupted.complete
    with pytest.raises(MaxaError, match="incomplete"):
        open_store(str(out))
    assert any("shards not written" in p for p in interrupted.problems())
    survivors = [int(s) for s in np.flatnonzero(interrupted.done_shards())]
    assert survivors, "at least one shard was done before the kill"
    before = _shard_files(out, survivors)

    resumed = subprocess.run(_command(targets, out), env=_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert _shard_files(out, survivors) == before  # finished shards were not recomputed
    # Shards are written raw to a temporary file and renamed: a write cut off by the kill left at
    # most a temporary file, and rewriting that shard removed it.
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.partial")) == []

    reference = extract(tiny_extract(SHARD), str(targets), str(tmp_path / "reference.zarr"), progress=False)
    final = open_store(str(out), "features")
    assert final.complete and final.problems() == []
    assert final.fingerprint == reference.fingerprint
    assert final.ids() == reference.ids()
    assert final.array_names() == reference.array_names() == ["layer_11"]
    assert final.read("layer_11").tobytes() == open_store(reference.url).read("layer_11").tobytes()
    prov = final.provenance
    for key in (
        "model",
        "weights",
        "weights_sha256",
        "timm_version",
        "torch_version",
        "input_size",
        "patch_size",
        "mean",
        "std",
        "layers",
        "norm",
        "dataset",
        "created",
        "maxa_version",
    ):
        assert key in prov, key
