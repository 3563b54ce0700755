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
    params["probe"]["tasks"] = ["semantic"]  # the test adds "depth" itself; the demo runs every task
    params["plots"]["count"] = 2
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


def _branch(stage: str, backbone: str) -> bool:
    """Whether a generated stage belongs to a backbone: `extract@vit` or `probe@vit-semantic`."""
    return stage.endswith(f"@{backbone}") or f"@{backbone}-" in stage


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
    params = yaml.safe_load((project / "params.yaml").read_text())
    backbones, tasks = params["extract"]["backbones"], params["probe"]["tasks"]
    expected = {"prepare@train", "prepare@val", "report", "plots"}
    for name in backbones:
        expected.add(f"extract@{name}")
        expected |= {f"{stage}@{name}-{task}" for stage in ("probe", "evaluate") for task in tasks}
    assert _ran(first) == expected
    leaderboard = (project / "reports/leaderboard.md").read_text()
    assert all(f"| {name} |" in leaderboard for name in backbones)
    plots = {p.name for p in (project / "reports/plots").iterdir()}
    assert {"pca.png", "bar_semantic_synthetic.png", "loss_semantic.png", "qualitative_semantic.png"} <= plots

    second = _run(project, sys.executable, "-m", "dvc", "repro")
    assert _ran(second) == set()


def test_metrics_show_lists_scores(project: Path) -> None:
    shown = json.loads(_run(project, sys.executable, "-m", "dvc", "metrics", "show", "--json"))
    text = json.dumps(shown)
    backbones = yaml.safe_load((project / "params.yaml").read_text())["extract"]["backbones"]
    for name in backbones:
        assert f"metrics/{name}/semantic.json" in text
    assert '"miou"' in text


def test_plots_show_renders_declared_data(project: Path) -> None:
    shown = json.loads(_run(project, sys.executable, "-m", "dvc", "plots", "show", "--json"))
    assert not shown.get("errors"), shown.get("errors")
    kinds = {path: entries[0]["type"] for path, entries in shown["data"].items()}
    backbones = yaml.safe_load((project / "params.yaml").read_text())["extract"]["backbones"]
    for name in backbones:
        assert kinds[f"reports/plot_data/loss/{name}_semantic_maxa.csv"] == "vega"
    assert kinds["reports/plot_data/scores/semantic_synthetic.csv"] == "vega"
    assert kinds["reports/plots/pca.png"] == "image"
    loss = shown["data"][f"reports/plot_data/loss/{next(iter(backbones))}_semantic_maxa.csv"][0]["content"]
    assert len(loss["data"]["values"]) == 20  # one point per training iteration


def test_changed_backbone_and_added_task_rerun_only_their_stages(project: Path) -> None:
    """One repro checks both: a changed backbone re-runs its branch, a new task runs only its stages."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    names = list(params["extract"]["backbones"])
    changed, untouched = names[0], names[1:]
    old_tasks = list(params["probe"]["tasks"])
    params["extract"]["backbones"][changed]["input_size"] = 48
    params["probe"]["tasks"] = [*old_tasks, "depth"]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = _ran(_run(project, sys.executable, "-m", "dvc", "repro"))
    expected = {f"extract@{changed}", "report", "plots"}
    expected |= {f"{stage}@{changed}-{task}" for stage in ("probe", "evaluate") for task in old_tasks}
    expected |= {f"{stage}@{name}-depth" for stage in ("probe", "evaluate") for name in names}
    assert ran == expected
    for name in untouched:  # nothing of theirs but the new task
        assert {s for s in ran if _branch(s, name)} == {f"probe@{name}-depth", f"evaluate@{name}-depth"}
    leaderboard = (project / "reports/leaderboard.md").read_text()
    assert "depth RMSE ↓" in leaderboard and "semantic mIoU ↑" in leaderboard
    assert (project / "reports/plots/qualitative_depth.png").is_file()


@pytest.fixture(scope="module")
def paper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The paper experiment's folder made into its own repo, as its dvc.yaml says (nothing can run here)."""
    root = tmp_path_factory.mktemp("paper") / "experiment"
    shutil.copytree(REPO / "pipelines/paper", root)
    _run(root, "git", "init", "-q")
    _run(root, sys.executable, "-m", "dvc", "init", "-q")
    return root


def test_paper_pipeline_parses(paper: Path) -> None:
    params = yaml.safe_load((paper / "params.yaml").read_text())
    listed = _run(paper, sys.executable, "-m", "dvc", "stage", "list", "--name-only")
    stages = set(listed.split())
    backbones, datasets, runs = params["extract"]["backbones"], params["datasets"], params["tasks"]
    expected = {f"prepare@{d}" for d in datasets} | {"report", "plots"}
    expected |= {f"extract_{d}@{b}" for d in datasets for b in backbones}
    expected |= {f"{s}_{r}@{b}" for s in ("probe", "evaluate") for r in runs for b in backbones}
    assert stages == expected
    dag = _run(paper, sys.executable, "-m", "dvc", "dag", "--dot")
    for run, entry in runs.items():  # each task run reads the stores of its own dataset only
        edges = re.findall(rf'"([^"]+)" -> "probe_{run}@dinov2_b"', dag)
        assert sorted(edges) == sorted(
            [f"extract_{entry['dataset']}@dinov2_b", f"prepare@{entry['dataset']}"]
        )
    status = _run(paper, sys.executable, "-m", "dvc", "status")
    assert "prepare@voc" in status and "deleted" in status
