"""Control rows on the leaderboard: each backbone's margin over the strongest control of every column."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from maxa.evaluate.report import write_report


def _run(backbone: str, weights: str, task: str, metric: str, value: float, higher: bool) -> dict[str, Any]:
    return {
        "backbone": backbone,
        "model": "vit_tiny_patch16_224",
        "weights": weights,
        "task": task,
        "adapter": "maxa",
        "dataset": "synthetic",
        "split": "val",
        "scores": {metric: value},
        "primary": {"name": metric, "value": value, "higher_is_better": higher},
        "constant_baseline": {metric: {"miou": 0.17, "rmse": 1.9}[metric]},
    }


def _report(tmp_path: Path, runs: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    paths = []
    for i, run in enumerate(runs):
        path = tmp_path / "metrics" / f"{i}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(run))
        paths.append(path)
    markdown = write_report(paths, tmp_path / "reports", published=None)
    return markdown, json.loads((tmp_path / "reports" / "leaderboard.json").read_text())


def test_margins_are_over_the_strongest_control_in_each_metrics_direction(tmp_path: Path) -> None:
    markdown, data = _report(
        tmp_path,
        [
            _run("vit", "random-init", "semantic", "miou", 0.75, True),
            _run("vit", "random-init", "depth", "rmse", 1.02, False),
            _run("weak", "random-init", "semantic", "miou", 0.30, True),
            _run("weak", "random-init", "depth", "rmse", 2.5, False),
            _run("control-noise", "control:noise", "semantic", "miou", 0.17, True),
            _run("control-noise", "control:noise", "depth", "rmse", 2.28, False),
            _run("control-position", "control:position", "semantic", "miou", 0.40, True),
            _run("control-position", "control:position", "depth", "rmse", 2.0, False),
        ],
    )
    controls = data["controls"]
    semantic = next(v for k, v in controls.items() if k.startswith("semantic"))
    depth = next(v for k, v in controls.items() if k.startswith("depth"))
    # semantic: position (0.40) beats noise (0.17) and the constant (0.17)
    assert semantic["strongest_control"] == "control-position" and semantic["control_value"] == 0.40
    assert semantic["margins"] == {"vit/maxa": 0.75 - 0.40, "weak/maxa": 0.30 - 0.40}
    # depth (lower is better): the constant (1.9) beats both control stores
    assert depth["strongest_control"] == "constant baseline"
    assert depth["margins"]["vit/maxa"] == 1.9 - 1.02
    assert depth["margins"]["weak/maxa"] == 1.9 - 2.5
    assert "control-noise/maxa" not in semantic["margins"]
    section = markdown.split("## Margin over the strongest control")[1]
    assert "control-position: 0.400" in section and "constant baseline: 1.900" in section
    weak = next(line for line in section.splitlines() if line.startswith("| weak"))
    assert weak.count("⚠") == 2
    vit = next(line for line in section.splitlines() if line.startswith("| vit"))
    assert "+0.350" in vit and "+0.880" in vit and "⚠" not in vit
    # the controls are rows of the main table too
    main = markdown.split("## ")[0]
    assert "| control-noise |" in main and "| control-position |" in main


def test_no_margin_section_without_control_rows_and_lost_selection_is_named(tmp_path: Path) -> None:
    run = _run("vit", "random-init", "semantic", "miou", 0.75, True)
    run["protocol"] = {"selection": {"worse_than_constant": True}}
    markdown, _ = _report(tmp_path, [run])
    assert "Margin over" not in markdown
    assert "validation loss is above the constant baseline's" in markdown and "0.json" in markdown
