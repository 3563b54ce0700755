"""Tests for `maxa plots` (pipelines/report_commands.py): what it writes from which inputs, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import Result

from maxa.pipelines.report_commands import PLACEHOLDER, expand
from tests.kit.cli import invoke
from tests.kit.records import checkpoint_meta


def _plots(*args: str) -> Result:
    return invoke("plots", *args, catch_exceptions=True)


def _checkpoint(path: Path, backbone: str, task: str = "semantic") -> Path:
    meta = checkpoint_meta(backbone, task, losses=[1.0, 0.5], layers=["-1"])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "meta": meta.to_dict()}, path)
    return path


def _metrics(path: Path, backbone: str, miou: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"backbone": backbone, "task": "semantic", "dataset": "d", "split": "v", "miou": miou})
    )
    return path


def test_bars_and_losses_from_metrics_and_checkpoints(tmp_path: Path) -> None:
    _metrics(tmp_path / "metrics/a/semantic.json", "a", 0.4)
    _metrics(tmp_path / "metrics/b/semantic.json", "b", 0.2)
    _checkpoint(tmp_path / "models/a/semantic.pt", "a")
    _checkpoint(tmp_path / "models/b/semantic.pt", "b")
    out, data = tmp_path / "plots", tmp_path / "data"
    args = ["--metrics", str(tmp_path / "metrics"), "--checkpoints", str(tmp_path / "models")]
    result = _plots(*args, "--out", str(out), "--data-out", str(data))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["bar_semantic_d.png", "loss_semantic.png"]
    assert sorted(p.name for p in (data / "loss").iterdir()) == ["a_semantic_maxa.csv", "b_semantic_maxa.csv"]
    printed = result.output.split()
    assert str(out / "bar_semantic_d.png") in printed and len(printed) == 5  # 2 PNGs + 3 CSVs


def test_nothing_to_plot_is_an_error(tmp_path: Path) -> None:
    result = _plots("--out", str(tmp_path))
    assert result.exit_code == 1
    assert result.output.startswith("Error: nothing to plot")


def test_features_without_placeholder_for_several_backbones(tmp_path: Path) -> None:
    _checkpoint(tmp_path / "m/a.pt", "a")
    _checkpoint(tmp_path / "m/b.pt", "b")
    args = ["--checkpoints", str(tmp_path / "m"), "--features", "data/val.zarr", "--targets", "t.zarr"]
    result = _plots(*args, "--out", str(tmp_path / "o"), "--data-out", str(tmp_path / "d"))
    assert result.exit_code == 1
    assert PLACEHOLDER in result.output and "2 backbones" in result.output
    assert "Traceback" not in result.output


def test_missing_store_named(tmp_path: Path) -> None:
    _checkpoint(tmp_path / "m/a.pt", "a")
    template = str(tmp_path / "features" / PLACEHOLDER / "val.zarr")
    result = _plots(
        "--checkpoints", str(tmp_path / "m"), "--features", template, "--out", str(tmp_path / "o")
    )
    assert result.exit_code == 1
    assert str(tmp_path / "features/a/val.zarr") in result.output


def test_not_a_checkpoint_named(tmp_path: Path) -> None:
    bad = tmp_path / "m/x.pt"
    bad.parent.mkdir()
    bad.write_text("nope")
    result = _plots("--checkpoints", str(bad), "--out", str(tmp_path / "o"))
    assert result.exit_code == 1 and "x.pt is not a maxa checkpoint" in result.output


def test_expand_files_and_folders(tmp_path: Path) -> None:
    (tmp_path / "d/sub").mkdir(parents=True)
    for name in ("d/b.json", "d/sub/a.json", "d/c.txt", "e.json"):
        (tmp_path / name).write_text("{}")
    found = expand((str(tmp_path / "d"), str(tmp_path / "e.json")), ".json")
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["d/b.json", "d/sub/a.json", "e.json"]


def test_count_comes_from_the_params_or_the_flag_not_both(tmp_path: Path) -> None:
    """dvc.yaml passes --params (so a changed plots.count re-runs the stage, not a stale flag)."""
    params = tmp_path / "params.yaml"
    params.write_text("plots: {count: 2}\n")
    result = _plots("--features", "f.zarr", "--count", "3", "--params", str(params), "--out", str(tmp_path))
    assert result.exit_code == 1 and "--count and --params both set the panel count" in result.output
