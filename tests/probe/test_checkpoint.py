"""The checkpoint record (probe/checkpoint.py) and the run identity rules of `train`."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from maxa.core import store as st
from maxa.core.checkpoint_meta import CheckpointMeta
from maxa.core.errors import MaxaError
from maxa.evaluate.run import evaluate
from maxa.extract.targets import PrepareConfig, prepare
from maxa.probe.checkpoint import load_checkpoint
from maxa.probe.train import ProbeConfig, resume_path, train
from tests.kit.stores import LABEL, SHARD, copy_store, write_feature_store

FAST = {"adapter": "linear", "iterations": 3, "batch_size": 8, "checkpoint_every": 0}


def _train(stores: dict[str, str], out: Path, **kwargs: Any) -> CheckpointMeta:
    config = ProbeConfig(**{**FAST, **kwargs.pop("config", {})})
    return train(
        config, stores["features_train"], stores["targets_train"], str(out), progress=False, **kwargs
    )


def _expected_run_id(config: ProbeConfig, features: str, targets: str) -> str:
    """Independent of maxa.core: interfaces.md's definition spelled out with hashlib and json."""
    payload = {
        "config": config.result_fields(),
        "features": st.open_store(features).fingerprint,
        "targets": st.open_store(targets).fingerprint,
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"pixels/{config.adapter}/{config.task}/{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


def test_run_id_is_backbone_adapter_task_config_hash(stores: dict[str, str], tmp_path: Path) -> None:
    meta = _train(stores, tmp_path / "a.pt")
    config = ProbeConfig(**FAST)
    assert meta.run_id == _expected_run_id(config, stores["features_train"], stores["targets_train"])
    other = _train(stores, tmp_path / "b.pt", config={"lr": 0.5})
    assert other.run_id != meta.run_id and other.run_id.startswith("pixels/linear/semantic/")
    runtime = _train(stores, tmp_path / "c.pt", config={"device": "cpu", "read_threads": 1})
    assert runtime.run_id == meta.run_id  # where/how fast it ran is not part of the identity


def test_finished_checkpoint_never_overwritten(stores: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    meta = _train(stores, out)
    before = out.read_bytes()
    with pytest.raises(MaxaError, match=rf"already holds a finished run \({meta.run_id}\).*--overwrite"):
        _train(stores, out, config={"lr": 0.5})
    with pytest.raises(MaxaError, match=r"nothing to resume: pass --overwrite"):
        _train(stores, out, config={"resume": True})
    assert out.read_bytes() == before
    assert _train(stores, out, config={"lr": 0.5}, overwrite=True).config["lr"] == 0.5


def test_resume_without_state_says_so(stores: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    with pytest.raises(MaxaError, match=r"--resume: no saved state at .*m.pt.resume"):
        _train(stores, out, config={"resume": True})
    assert not out.exists() and not resume_path(out).exists()


def test_unwritable_out_refused_before_training(stores: dict[str, str], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    steps: list[int] = []
    with pytest.raises(MaxaError, match=r"checkpoint .*file/m.pt cannot be written"):
        _train(stores, blocker / "m.pt", callback=lambda step, loss: steps.append(step))
    assert steps == []


@pytest.mark.heavy
def test_checkpoint_loads_without_the_trainer(stores: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    _train(stores, out)
    code = (
        "import sys; from maxa.probe.checkpoint import load_checkpoint; "
        f"m, meta = load_checkpoint({str(out)!r}); "
        "assert 'maxa.probe.train' not in sys.modules, 'trainer imported'; print(meta.run_id)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == load_checkpoint(str(out))[1].run_id


def test_evaluate_refuses_another_backbone(stores: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    _train(stores, out)
    other = copy_store(stores["features_val"], str(tmp_path / "other.zarr"), model="vit_other", name="B")
    with pytest.raises(
        MaxaError, match=r"does not fit these stores: backbone fingerprint [0-9a-f]{16} \(pixels\)"
    ):
        evaluate(str(out), other, stores["targets_val"], progress=False)


def test_evaluate_refuses_another_class_space(stores: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    _train(stores, out)
    targets = str(tmp_path / "t4.zarr")
    options = {"num_images": 16, "image_size": 64, "num_classes": 5, "max_objects": 4}
    prepare(
        PrepareConfig(split="val", label_size=LABEL, shard_size=SHARD, options=options),
        targets,
        progress=False,
    )
    features = write_feature_store(
        targets, str(tmp_path / "f4.zarr"), channels={"layer_0": 64, "layer_1": 32}
    )
    with pytest.raises(MaxaError, match=r"does not fit these stores: class names \["):
        evaluate(str(out), features, targets, progress=False)


def test_metrics_name_checkpoint_and_stores(stores: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    meta = _train(stores, out)
    metrics = evaluate(str(out), stores["features_val"], stores["targets_val"], progress=False)
    assert metrics["run_id"] == meta.run_id
    assert metrics["checkpoint"] == {
        "path": str(out),
        "fingerprint": hashlib.sha256(out.read_bytes()).hexdigest()[:16],
    }
    assert metrics["stores"]["features"]["fingerprint"] == st.open_store(stores["features_val"]).fingerprint
    assert metrics["stores"]["targets"]["fingerprint"] == st.open_store(stores["targets_val"]).fingerprint
    assert np.isfinite(metrics["primary"]["value"])
