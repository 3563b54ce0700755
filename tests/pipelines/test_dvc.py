"""The repository's own dvc.yaml, run by `dvc repro` on a shrunken params.yaml in a fresh git repo."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _shrink(params: dict) -> dict:
    params["prepare"]["splits"] = {"train": 64, "val": 16}
    params["prepare"]["options"]["image_size"] = 64
    params["prepare"]["label_size"] = 32
    params["prepare"]["shard_size"] = 32
    for backbone in params["extract"]["backbones"].values():
        backbone["input_size"] = 64
    params["extract"]["batch_size"] = 32
    params["probe"].update(iterations=20, batch_size=16, query_grid=4)
    return params


def _run(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{args}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dvcproj")
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    params = _shrink(yaml.safe_load((REPO / "params.yaml").read_text()))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(root, "git", "init", "-q")
    _run(root, sys.executable, "-m", "dvc", "init", "-q")
    _run(root, sys.executable, "-m", "dvc", "config", "core.analytics", "false")
    return root


def test_repro_runs_every_stage_then_nothing(project: Path) -> None:
    first = _run(project, sys.executable, "-m", "dvc", "repro")
    backbones = yaml.safe_load((project / "params.yaml").read_text())["extract"]["backbones"]
    expected = {"prepare@train", "prepare@val", "report"}
    for name in backbones:
        expected |= {f"extract@{name}", f"probe@{name}", f"evaluate@{name}"}
    assert _ran(first) == expected
    leaderboard = (project / "reports/leaderboard.md").read_text()
    assert all(f"| {name} |" in leaderboard for name in backbones)

    second = _run(project, sys.executable, "-m", "dvc", "repro")
    assert _ran(second) == set()


def test_metrics_show_lists_scores(project: Path) -> None:
    shown = json.loads(_run(project, sys.executable, "-m", "dvc", "metrics", "show", "--json"))
    text = json.dumps(shown)
    backbones = yaml.safe_load((project / "params.yaml").read_text())["extract"]["backbones"]
    for name in backbones:
        assert f"metrics/{name}/semantic.json" in text
    assert '"miou"' in text


def test_changing_one_backbone_reruns_only_its_branch(project: Path) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    names = list(params["extract"]["backbones"])
    changed, untouched = names[0], names[1:]
    params["extract"]["backbones"][changed]["input_size"] = 48
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = _ran(_run(project, sys.executable, "-m", "dvc", "repro"))
    assert {f"extract@{changed}", f"probe@{changed}", f"evaluate@{changed}", "report"} <= ran
    for name in untouched:
        assert not any(stage.endswith(f"@{name}") for stage in ran), ran
    assert not any(stage.startswith("prepare") for stage in ran)
