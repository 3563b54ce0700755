"""What DVC tracks for the generated stages (pipelines/dvcgen.py): the guard stage's params_tracked.json.

No stage's command runs here: every output is a placeholder committed with `dvc commit`, so `dvc status`
answers which stages a change of params.yaml makes stale, as it does for a finished experiment.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from maxa.core.paths import MANIFEST_SUFFIX
from maxa.pipelines import dvcgen
from tests.kit.cli import command_env, maxa_script

pytestmark = pytest.mark.slow

FILES = (".pt", ".json", ".md", ".csv")  # every other output of a generated stage is a folder


def _params() -> dict[str, Any]:
    return {
        "datasets": {"syn": {"dataset": "synthetic"}, "other": {"dataset": "synthetic", "label_size": 32}},
        "backbones": {
            "vit": {"model": "vit_tiny_patch16_224", "weights": "random-init"},
            "vit64": {"model": "vit_tiny_patch16_224", "weights": "random-init", "input_size": 64},
        },
        "tasks": {
            "seg": {"task": "semantic", "dataset": "syn"},
            "far": {"task": "depth", "dataset": "other"},
        },
        "local": {"nn": {"test": "knn", "dataset": "syn"}},
        "probe": {"iterations": 5},
    }


def _run(root: Path, *args: str) -> str:
    done = subprocess.run(args, cwd=root, env=command_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]}{done.stderr[-2000:]}"
    return done.stdout


def _placeholders(root: Path) -> None:
    """A file or folder at every output DVC resolves for the pipeline (the guard's is its own)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        outs = [Path(str(out.fs_path)) for stage in repo.index.stages for out in stage.outs]
        manifests = [  # the manifests inside the extractions' folders
            Path(str(dep.fs_path))
            for stage in repo.index.stages
            for dep in stage.deps
            if str(dep.fs_path).endswith(MANIFEST_SUFFIX)
        ]
    for path in [*outs, *manifests]:
        if path.exists():
            continue
        if path.suffix in FILES:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(path.name)
        else:
            path.mkdir(parents=True)
            (path / "part").write_text(path.name)


def _stale(root: Path) -> set[str]:
    return set(json.loads(_run(root, sys.executable, "-m", "dvc", "status", "--json")))


def _committed(root: Path, raw: dict[str, Any]) -> None:
    """The generated project of `raw` with every output a committed placeholder: up to date."""
    maxa, dvc = maxa_script(), (sys.executable, "-m", "dvc")
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    _run(root, *maxa, "pipeline", "params.yaml")
    _run(root, "git", "init", "-q")
    _run(root, *dvc, "init", "-q")
    _run(root, *dvc, "repro", "pipeline")  # the guard writes the copy the stages track
    assert json.loads((root / dvcgen.TRACKED).read_text()) == json.loads(dvcgen.tracked(raw))
    _placeholders(root)
    _run(root, *dvc, "commit", "-f", "-q")
    assert _stale(root) == set()


def test_a_changed_entry_makes_exactly_its_stages_stale(tmp_path: Path) -> None:
    """Every stage tracks its own entries in the guard's JSON copy: after the guard re-runs on a changed
    params.yaml, `dvc status` lists exactly the stages that read a changed entry."""
    dvc = (sys.executable, "-m", "dvc")
    raw = _params()
    _committed(tmp_path, raw)

    raw["backbones"]["vit64"]["input_size"] = 80  # one backbone's entry
    raw["tasks"]["seg"]["lr"] = 0.01  # one run's entry
    raw["datasets"]["other"]["label_size"] = 16  # one dataset's entry
    raw["local"]["nn"]["k"] = [3]  # one local test's entry
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    assert _stale(tmp_path) == {"pipeline"}  # the guard alone, until it has run
    _run(tmp_path, *dvc, "repro", "pipeline")
    assert _stale(tmp_path) == {
        "extract_syn@vit64",
        "extract_other@vit64",
        "probe_seg@vit",
        "probe_seg@vit64",
        "prepare_other@train",
        "prepare_other@test",
        "local_nn@vit",
        "local_nn@vit64",
    }


def test_a_store_with_other_content_or_unfinished_makes_exactly_its_readers_stale(tmp_path: Path) -> None:
    """Stages depend on a store's manifest (core/store/manifest.py), not its folder: a re-extraction that
    wrote other bytes (a new manifest) or one under way (manifest removed until every shard is done) makes
    exactly the stages reading that store stale, beside the extraction whose folder output changed and the
    plots stage, which reads every feature folder of the dataset."""
    _committed(tmp_path, _params())
    train = tmp_path / "data/features/syn/vit/train.zarr.manifest.json"
    readers = {"extract_syn@vit", "probe_seg@vit", "local_nn@vit", "plots"}
    saved = train.read_text()
    train.write_text(saved.replace("train", "train, written again"))
    assert _stale(tmp_path) == readers
    train.unlink()
    assert _stale(tmp_path) == readers
    train.write_text(saved)
    assert _stale(tmp_path) == set()
    test = tmp_path / "data/targets/other/test.zarr.manifest.json"
    test.write_text("other labels")
    assert _stale(tmp_path) == {
        "prepare_other@test",
        "extract_other@vit",
        "extract_other@vit64",
        "evaluate_far@vit",
        "evaluate_far@vit64",
        "plots",
    }
