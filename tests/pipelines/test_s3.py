"""Remote storage first-class (issue #21 item 3), against a real S3-protocol server on loopback (moto): a
`maxa extract` to s3:// killed with SIGKILL resumes to the bytes of a local run; probe, evaluate and the
local k-NN test read stores from S3 and give what they give from local disk; DVC pushes the demo's outputs
to an S3 remote and pulls them back byte for byte.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from maxa.core import store as st
from tests.extract.test_resume import kill_between_shards
from tests.kit.cli import command_env, invoke, maxa_script
from tests.kit.stores import write_feature_store
from tests.pipelines.test_bad_input import FAST_PROBE, _targets, tree
from tests.s3server import S3

pytestmark = pytest.mark.slow
TINY = ["--model", "vit_tiny_patch16_224", "--weights", "random-init", "--input-size", "32", "--layers=-1"]
SHARD = 4


def _upload(local: Path, url: str) -> str:
    import s3fs

    s3fs.S3FileSystem().put(str(local), url.removeprefix("s3://"), recursive=True)
    return url


def test_extract_to_s3_killed_and_resumed_equals_a_local_run(s3: S3, tmp_path: Path) -> None:
    targets = s3.url("targets.zarr")
    assert (
        invoke(
            "prepare", "-o", "num_images=40", "-o", "image_size=32", "--label-size", "16", "--out", targets
        ).exit_code
        == 0
    )
    out = s3.url("features.zarr")
    command = [
        *maxa_script(),
        "extract",
        "--targets",
        targets,
        "--out",
        out,
        *TINY,
        "--batch-size",
        str(SHARD),
        "--shard-size",
        str(SHARD),
    ]
    env = {**os.environ, "TQDM_DISABLE": "1", "MAXA_WRITE_THREADS": "1"}
    kill_between_shards(
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT), out
    )
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]

    local_targets = tmp_path / "targets.zarr"
    assert (
        invoke(
            "prepare",
            "-o",
            "num_images=40",
            "-o",
            "image_size=32",
            "--label-size",
            "16",
            "--out",
            local_targets,
        ).exit_code
        == 0
    )
    local = tmp_path / "features.zarr"
    assert (
        invoke(
            "extract",
            "--targets",
            local_targets,
            "--out",
            local,
            *TINY,
            "--batch-size",
            SHARD,
            "--shard-size",
            SHARD,
        ).exit_code
        == 0
    )
    remote, reference = st.open_store(out, "features"), st.open_store(str(local), "features")
    assert remote.fingerprint == reference.fingerprint and remote.problems() == []
    assert remote.read("layer_11").tobytes() == reference.read("layer_11").tobytes()


def test_probe_evaluate_and_knn_from_s3_equal_local(s3: S3, tmp_path: Path) -> None:
    local: dict[str, Path] = {}
    for split, n in (("train", 32), ("val", 16)):
        local[f"t_{split}"] = Path(_targets(tmp_path / f"t_{split}.zarr", split, n))
        local[f"f_{split}"] = Path(
            write_feature_store(str(local[f"t_{split}"]), str(tmp_path / f"f_{split}.zarr"))
        )
    remote = {name: _upload(path, s3.url(path.name)) for name, path in local.items()}
    results = {}
    for where, stores in (("local", local), ("s3", remote)):
        ckpt = tmp_path / f"{where}.pt"
        probe = invoke(
            "probe",
            "--features",
            stores["f_train"],
            "--targets",
            stores["t_train"],
            "--out",
            ckpt,
            *FAST_PROBE,
        )
        assert probe.exit_code == 0, probe.output
        metrics = tmp_path / f"{where}.json"
        evaluate = invoke(
            "evaluate",
            "--checkpoint",
            ckpt,
            "--features",
            stores["f_val"],
            "--targets",
            stores["t_val"],
            "--out",
            metrics,
        )
        assert evaluate.exit_code == 0, evaluate.output
        knn = tmp_path / f"{where}-knn.json"
        result = invoke(
            "local",
            "knn",
            "--train-features",
            stores["f_train"],
            "--train-targets",
            stores["t_train"],
            "--features",
            stores["f_val"],
            "--targets",
            stores["t_val"],
            "--out",
            knn,
        )
        assert result.exit_code == 0, result.output
        weights = torch.load(ckpt, weights_only=True)["state_dict"]
        results[where] = (
            weights,
            json.loads(metrics.read_text())["scores"],
            json.loads(knn.read_text())["scores"],
        )
    (lw, ls, lk), (rw, rs, rk) = results["local"], results["s3"]
    assert lw.keys() == rw.keys() and all(torch.equal(lw[k], rw[k]) for k in lw)
    assert ls == rs and lk == rk


def test_dvc_push_and_pull_of_the_demo_through_an_s3_remote(s3: S3, tmp_path: Path) -> None:
    """The demo's prepare stage outputs go to an S3 remote (dvc-s3, endpoint from `dvc remote modify`)
    and come back byte for byte into a fresh checkout; `dvc status` is clean afterwards."""
    pytest.importorskip("dvc_s3", reason="needs dvc-s3 (the dev extra)")
    repo = tmp_path / "demo"
    repo.mkdir()
    root = Path(__file__).resolve().parents[2]
    for name in ("params.yaml", "dvc.yaml", "protocols.yaml"):
        shutil.copy(root / name, repo / name)
    env = command_env(TQDM_DISABLE="1")

    def sh(*args: str) -> str:
        done = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        return done.stdout

    dvc = (sys.executable, "-m", "dvc")
    sh("git", "init", "-q")
    sh(*dvc, "init", "-q")
    sh(*dvc, "config", "core.analytics", "false")
    sh(*dvc, "remote", "add", "-d", "team", s3.url("dvc"))
    sh(*dvc, "remote", "modify", "team", "endpointurl", s3.server.endpoint)
    sh(*dvc, "repro", "pipeline", "prepare_synthetic")
    outputs = sorted((repo / "data" / "targets" / "synthetic").glob("*.zarr"))
    assert [p.name for p in outputs] == ["test.zarr", "train.zarr"]
    before = {p.name: tree(p) for p in outputs}
    sh(*dvc, "push", "pipeline", "prepare_synthetic")  # the guard's params_tracked.json too
    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc" / "cache")
    sh(*dvc, "pull", "pipeline", "prepare_synthetic")
    after = {p.name: tree(p) for p in outputs}
    assert after == before
    assert "changed" not in sh(*dvc, "status", "pipeline", "prepare_synthetic")
    assert st.open_store(str(outputs[1]), "targets").problems() == []
