"""Tests for `maxa report` (evaluate/report.py): metrics JSON files -> leaderboard.{md,csv,json}."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from maxa.evaluate.report import COLUMNS, write_report
from maxa.extract.errors import MaxaError

HEADER = [h for h, _, _ in COLUMNS]


def _metrics(backbone: str, task: str, miou: float, **overrides: Any) -> dict[str, Any]:
    metrics = {
        "backbone": backbone,
        "model": f"{backbone}_model",
        "weights": "random-init",
        "task": task,
        "adapter": "maxa",
        "dataset": "synthetic",
        "split": "val",
        "miou": miou,
        "pixel_accuracy": 0.5 + miou / 2,
        "ce": 1.25,
        "per_class_iou": {"a": miou, "b": None},
        "constant_baseline": {"miou": 0.1111, "pixel_accuracy": 0.4, "ce": 1.5},
        "adapter_params": 123456,
        "backbone_params": 5717416,
        "adapter_pct_of_backbone": 2.1593,
        "protocol": {"input_size": 128, "feature_grid": [8, 8], "layer": "-1", "iterations": 400},
    }
    metrics.update(overrides)
    return metrics


def _write(tmp_path: Path, *all_metrics: dict[str, Any]) -> list[Path]:
    paths = []
    for i, metrics in enumerate(all_metrics):
        path = tmp_path / "metrics" / f"{i}_{metrics['backbone']}_{metrics['task']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(metrics))
        paths.append(path)
    return paths


@pytest.fixture
def report(tmp_path: Path) -> tuple[str, Path]:
    paths = _write(
        tmp_path,
        _metrics("vit_tiny", "semantic", 0.25),
        _metrics("convnext_atto", "semantic", 0.40),
        _metrics("resnet18", "semantic", 0.31),
        _metrics("vit_tiny", "boundary", 0.60),
    )
    out = tmp_path / "reports"
    return write_report(paths, out), out


def test_writes_all_three_files(report: tuple[str, Path]) -> None:
    markdown, out = report
    assert sorted(p.name for p in out.iterdir()) == ["leaderboard.csv", "leaderboard.json", "leaderboard.md"]
    assert (out / "leaderboard.md").read_text() == markdown
    for backbone in ("vit_tiny", "convnext_atto", "resnet18"):
        assert backbone in markdown
        assert backbone in (out / "leaderboard.csv").read_text()


def test_csv_parses_back_sorted_by_miou_within_task(report: tuple[str, Path]) -> None:
    _, out = report
    rows = list(csv.reader(io.StringIO((out / "leaderboard.csv").read_text())))
    assert rows[0] == HEADER
    body = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    assert len(body) == 4
    assert all(len(row) == len(HEADER) for row in rows)
    # Tasks grouped (alphabetically), best mIoU first within each task.
    assert [(r["task"], r["backbone"]) for r in body] == [
        ("boundary", "vit_tiny"),
        ("semantic", "convnext_atto"),
        ("semantic", "resnet18"),
        ("semantic", "vit_tiny"),
    ]
    semantic = [float(r["mIoU"]) for r in body if r["task"] == "semantic"]
    assert semantic == sorted(semantic, reverse=True) == [0.4, 0.31, 0.25]
    first = body[1]
    assert first["const. mIoU"] == "0.111"
    assert first["CE"] == "1.250"
    assert first["adapter params"] == "123,456"
    assert first["backbone params"] == "5,717,416"
    assert first["input"] == "128"
    assert first["layer"] == "-1"
    assert first["iters"] == "400"


def test_json_holds_full_rows_in_order(report: tuple[str, Path]) -> None:
    _, out = report
    rows = json.loads((out / "leaderboard.json").read_text())
    assert [r["backbone"] for r in rows] == ["vit_tiny", "convnext_atto", "resnet18", "vit_tiny"]
    assert rows[1]["protocol"]["iterations"] == 400
    assert rows[1]["per_class_iou"] == {"a": 0.4, "b": None}


def test_markdown_table_shape(report: tuple[str, Path]) -> None:
    markdown, _ = report
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    assert lines[0] == "| " + " | ".join(HEADER) + " |"
    assert set(lines[1].replace("|", "")) == {"-"}
    assert len(lines) == 2 + 4
    assert all(line.count("|") == len(HEADER) + 1 for line in lines)
    assert lines[3].startswith("| convnext_atto |")


def test_missing_keys_leave_cells_empty(tmp_path: Path) -> None:
    metrics = _metrics("vit_tiny", "semantic", 0.2)
    del metrics["constant_baseline"]
    del metrics["protocol"]
    out = tmp_path / "out"
    write_report(_write(tmp_path, metrics), out)
    rows = list(csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())))
    assert rows[0]["const. mIoU"] == ""
    assert rows[0]["iters"] == ""
    assert rows[0]["mIoU"] == "0.200"


def test_unreadable_json_names_file(tmp_path: Path) -> None:
    good = _write(tmp_path, _metrics("vit_tiny", "semantic", 0.2))
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(MaxaError, match=r"broken\.json"):
        write_report([*good, bad], tmp_path / "out")
    missing = tmp_path / "missing.json"
    with pytest.raises(MaxaError, match=r"missing\.json"):
        write_report([missing], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_no_metrics_files_refused(tmp_path: Path) -> None:
    with pytest.raises(MaxaError, match="no metrics files"):
        write_report([], tmp_path / "out")
