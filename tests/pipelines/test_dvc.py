"""The repository's own dvc.yaml, run by `dvc repro` on a shrunken params.yaml in a fresh git repo."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.kit.cli import command_env

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _shrink(params: dict) -> dict:
    data = params["datasets"]["synthetic"]
    data.update(train_images=64, test_images=16, label_size=32, shard_size=32)
    data["options"]["image_size"] = 64
    # The demo's first backbone, and (`controls: true`) the two control stores of its shape.
    assert params["controls"] is True
    first = next(iter(params["backbones"]))
    params["backbones"] = {first: params["backbones"][first]}
    for backbone in params["backbones"].values():
        backbone["input_size"] = 64
    params["extract"]["batch_size"] = 32
    params["probe"].update(iterations=20, batch_size=16, query_grid=4)
    params["tasks"] = {"semantic": params["tasks"]["semantic"]}  # the test adds a run itself
    params["plots"]["count"] = 2
    return params


def _run(cwd: Path, *args: str) -> str:
    done = subprocess.run(args, cwd=cwd, env=command_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{args}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def _branch(stage: str, backbone: str) -> bool:
    """Whether a generated stage belongs to a backbone: `extract_synthetic@vit` or `probe_semantic@vit`."""
    return stage.endswith(f"@{backbone}")


def _maxa() -> str:
    return str(Path(sys.executable).parent / "maxa")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh repo holding a shrunken params.yaml and the dvc.yaml `maxa pipeline` writes from it."""
    root = tmp_path_factory.mktemp("dvcproj")
    params = _shrink(yaml.safe_load((REPO / "params.yaml").read_text()))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(root, _maxa(), "pipeline", "params.yaml")
    _run(root, "git", "init", "-q")
    _run(root, sys.executable, "-m", "dvc", "init", "-q")
    _run(root, sys.executable, "-m", "dvc", "config", "core.analytics", "false")
    return root


def _controls(params: dict) -> list[str]:
    """The control entries `controls: true` adds for one backbone (one shape)."""
    (first,) = params["backbones"]
    return [f"control_{kind}.{first}" for kind in ("noise", "position")] if params.get("controls") else []


def _branches(params: dict, controls: list[str] | None = None) -> list[tuple[str, str]]:
    """(entry, stage suffix) of every DVC branch: the backbones, then their controls (`_controls` twins)."""
    controls = _controls(params) if controls is None else controls
    return [(name, "") for name in params["backbones"]] + [(c, "_controls") for c in controls]


def _expected(params: dict, runs: list[str], controls: list[str] | None = None) -> set[str]:
    stages = {"pipeline", "report", "plots"}
    branches = _branches(params, controls)
    for data in params["datasets"]:
        stages |= {f"prepare_{data}@train", f"prepare_{data}@test"}
        stages |= {f"extract_{data}{twin}@{name}" for name, twin in branches}
    for run in runs:
        stages |= {
            f"{stage}_{run}{twin}@{name}" for stage in ("probe", "evaluate") for name, twin in branches
        }
    for name, entry in (params.get("local") or {}).items():
        assert "backbones" not in entry  # the demo's local tests run on every backbone
        stages |= {f"local_{name}{twin}@{backbone}" for backbone, twin in branches}
    return stages


def test_repro_runs_every_stage_then_nothing(project: Path) -> None:
    first = _run(project, sys.executable, "-m", "dvc", "repro")
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert _ran(first) == _expected(params, list(params["tasks"]))
    leaderboard = (project / "reports/leaderboard.md").read_text()
    assert all(f"| {name} |" in leaderboard for name, _ in _branches(params))  # the controls are rows
    assert "knn mIoU ↑" in leaderboard  # the local test of params.yaml, a column of its own
    knn = json.loads((project / f"metrics/knn/{next(iter(params['backbones']))}.json").read_text())
    assert knn["task"] == "knn" and knn["run_id"].split("/")[2] == "knn"
    plots = {p.name for p in (project / "reports/plots/synthetic").iterdir()}
    assert {"pca.png", "bar_semantic_synthetic.png", "loss_semantic.png", "qualitative_semantic.png"} <= plots
    # the stores hold what params.yaml says (no setting is re-spelled, or lost, on the way)
    targets = json.loads((project / "data/targets/synthetic/train.zarr/zarr.json").read_text())
    prov = targets["attributes"]["maxa"]["provenance"]
    assert prov["label_size"] == [32, 32] and prov["dataset_config"]["num_images"] == 64

    second = _run(project, sys.executable, "-m", "dvc", "repro")
    assert _ran(second) == set()


def _stale(project: Path) -> set[str]:
    return set(json.loads(_run(project, sys.executable, "-m", "dvc", "status", "--json")))


def test_a_protocol_version_makes_only_its_stages_stale(project: Path) -> None:
    """An upgrade that bumps one task's objective (or metric) version re-runs that task's probes (or
    evaluations) only: the guard stage copies the versions into params_tracked.json (what the upgraded
    maxa's guard writes is simulated here), whose entries their stages track."""
    from maxa.pipelines.dvcgen import TRACKED, tracked
    from maxa.pipelines.params import protocol_versions

    versions = protocol_versions()

    current = (project / TRACKED).read_text()
    raw = yaml.safe_load((project / "params.yaml").read_text())
    assert json.loads(current) == json.loads(tracked(raw))
    branches = _branches(raw)
    try:
        bumps = (("objective.semantic", "probe_semantic"), ("metric.semantic", "evaluate_semantic"))
        for name, stage in bumps:
            (project / TRACKED).write_text(tracked(raw, {**versions, name: versions[name] + 1}))
            # and the guard, whose output changed outside it
            assert _stale(project) == {"pipeline", *(f"{stage}{twin}@{b}" for b, twin in branches)}, name
        (project / TRACKED).write_text(tracked(raw, {**versions, "features": versions["features"] + 1}))
        assert _stale(project) == {"pipeline", *(f"extract_synthetic{twin}@{b}" for b, twin in branches)}
    finally:
        (project / TRACKED).write_text(current)
    assert _stale(project) == set()


def test_metrics_show_lists_the_headlines(project: Path) -> None:
    """`dvc metrics show` lists three numbers a run (issue 21: ~300 columns); the full record is beside."""
    shown = json.loads(_run(project, sys.executable, "-m", "dvc", "metrics", "show", "--json"))
    files = next(iter(shown.values()))["data"]
    params = yaml.safe_load((project / "params.yaml").read_text())
    backbones = [name for name, _ in _branches(params)]
    runs = ["semantic", *(params.get("local") or {})]  # k-NN: a local test
    assert set(files) == {f"metrics/{run}/{name}.headline.json" for name in backbones for run in runs}
    for run, name in ((run, name) for run in runs for name in backbones):
        data = files[f"metrics/{run}/{name}.headline.json"]["data"]
        record = json.loads((project / f"metrics/{run}/{name}.json").read_text())
        low, high = record["uncertainty"]["miou"]["low"], record["uncertainty"]["miou"]["high"]
        assert data == {
            "miou": record["primary"]["value"],
            "ci95_half_width": pytest.approx((high - low) / 2),
            "constant_baseline": record["constant_baseline"]["miou"],
        }


def test_a_clone_of_the_pushed_demo_is_up_to_date(project: Path, tmp_path: Path) -> None:
    """What a colleague gets: `git clone` + `dvc pull` from the pushed remote brings the metrics and the
    reports too; `dvc status` is clean and `dvc repro` runs nothing (issue 21 item 6)."""
    dvc = [sys.executable, "-m", "dvc"]
    _run(project, *dvc, "remote", "add", "-d", "team", str(tmp_path / "remote"))
    _run(project, "git", "add", "-A")
    _run(project, "git", "commit", "-qm", "demo")
    _run(project, *dvc, "push", "-q")
    clone = tmp_path / "clone"
    _run(tmp_path, "git", "clone", "-q", str(project), str(clone))
    assert not list(clone.glob("metrics/**/*.json")) and not (clone / "reports/leaderboard.md").exists()
    _run(clone, *dvc, "pull", "-q")
    assert (clone / "reports/leaderboard.md").read_text() == (project / "reports/leaderboard.md").read_text()
    backbone = next(iter(yaml.safe_load((project / "params.yaml").read_text())["backbones"]))
    for name in (f"{backbone}.json", f"{backbone}.headline.json"):
        assert (clone / "metrics/semantic" / name).read_bytes() == (
            project / "metrics/semantic" / name
        ).read_bytes()
    assert "up to date" in _run(clone, *dvc, "status")
    assert _ran(_run(clone, *dvc, "repro")) == set()


def test_plots_show_renders_declared_data(project: Path) -> None:
    shown = json.loads(_run(project, sys.executable, "-m", "dvc", "plots", "show", "--json"))
    assert not shown.get("errors"), shown.get("errors")
    kinds = {path: entries[0]["type"] for path, entries in shown["data"].items()}
    backbones = yaml.safe_load((project / "params.yaml").read_text())["backbones"]
    data = "reports/plot_data/synthetic"
    for name in backbones:
        assert kinds[f"{data}/loss/{name}_semantic_maxa.csv"] == "vega"
    assert kinds[f"{data}/scores/semantic_synthetic.csv"] == "vega"
    assert kinds["reports/plots/synthetic/pca.png"] == "image"
    loss = shown["data"][f"{data}/loss/{next(iter(backbones))}_semantic_maxa.csv"][0]["content"]
    assert len(loss["data"]["values"]) == 20  # one point per training iteration


def test_changed_backbone_and_added_run_rerun_only_their_stages(project: Path) -> None:
    """One repro checks both: a changed backbone re-runs its branch, a new run (after `maxa pipeline`)
    runs only its stages; a stale dvc.yaml stops the repro with the command that fixes it."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    names = list(params["backbones"])
    changed, untouched = names[0], names[1:]
    params["backbones"][changed]["input_size"] = 48
    params["tasks"]["depth"] = {"task": "depth", "dataset": "synthetic"}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    stale = subprocess.run(
        [sys.executable, "-m", "dvc", "repro"],
        cwd=project,
        env=command_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert stale.returncode != 0
    assert (
        "dvc.yaml is out of date with params.yaml; run `maxa pipeline params.yaml`"
        in stale.stdout + stale.stderr
    )
    _run(project, _maxa(), "pipeline", "params.yaml")
    ran = _ran(_run(project, sys.executable, "-m", "dvc", "repro"))
    # the controls copy the changed backbone's shape: their branches re-run with it
    mine = [(changed, ""), *((c, "_controls") for c in _controls(params))]
    expected = {"pipeline", "report", "plots", *(f"extract_synthetic{twin}@{b}" for b, twin in mine)}
    expected |= {f"{stage}_semantic{twin}@{b}" for stage in ("probe", "evaluate") for b, twin in mine}
    expected |= {
        f"{stage}_depth{twin}@{b}" for stage in ("probe", "evaluate") for b, twin in _branches(params)
    }
    expected |= {f"local_{name}{twin}@{b}" for name in params.get("local") or {} for b, twin in mine}
    assert ran == expected
    for name in untouched:  # nothing of theirs but the new run
        assert {s for s in ran if _branch(s, name)} == {f"probe_depth@{name}", f"evaluate_depth@{name}"}
    leaderboard = (project / "reports/leaderboard.md").read_text()
    assert "depth RMSE ↓" in leaderboard and "semantic mIoU ↑" in leaderboard
    assert (project / "reports/plots/synthetic/qualitative_depth.png").is_file()


def test_a_probe_key_reruns_the_probes_and_reaches_the_checkpoint(project: Path) -> None:
    """probe.max_depth used to validate and be dropped by dvc.yaml; now DVC re-runs and the run records it."""
    import torch

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["probe"]["max_depth"] = 5.0
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = _ran(_run(project, sys.executable, "-m", "dvc", "repro"))
    probes = {s for s in ran if s.startswith("probe_")}
    assert probes == {
        f"probe_{run}{twin}@{name}" for run in params["tasks"] for name, twin in _branches(params)
    }
    name = next(iter(params["backbones"]))
    meta = torch.load(project / f"models/depth/{name}.pt", weights_only=True)["meta"]
    assert meta["config"]["max_depth"] == 5.0


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
    # the control entries per feature shape (their grouping: tests/pipelines/test_controls_switch.py)
    stages = yaml.safe_load((paper / "dvc.yaml").read_text())["stages"]
    controls = list(stages["extract_voc_controls"]["foreach"])
    assert len(controls) >= 2 and all(c.startswith(("control_noise.", "control_position.")) for c in controls)
    assert set(listed.split()) == _expected(params, list(params["tasks"]), controls)
    dag = _run(paper, sys.executable, "-m", "dvc", "dag", "--dot")
    for run, entry in params["tasks"].items():  # each task run reads the stores of its own dataset only
        edges = re.findall(rf'"([^"]+)" -> "probe_{run}@dinov2_b"', dag)
        assert sorted(edges) == sorted(  # and the guard's copy of params.yaml
            ["pipeline", f"extract_{entry['dataset']}@dinov2_b", f"prepare_{entry['dataset']}@train"]
        )
    status = _run(paper, sys.executable, "-m", "dvc", "status")
    assert "prepare_voc@train" in status and "deleted" in status
