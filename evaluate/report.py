"""`maxa report`: metrics JSON files -> one leaderboard across backbones and tasks."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from maxa.extract.errors import MaxaError

# (column header, metrics key, format); one row per (backbone, task, adapter).
COLUMNS: list[tuple[str, str, str]] = [
    ("backbone", "backbone", "{}"),
    ("model", "model", "{}"),
    ("weights", "weights", "{}"),
    ("task", "task", "{}"),
    ("adapter", "adapter", "{}"),
    ("dataset", "dataset", "{}"),
    ("mIoU", "miou", "{:.3f}"),
    ("pixel acc", "pixel_accuracy", "{:.3f}"),
    ("CE", "ce", "{:.3f}"),
    ("const. mIoU", "constant_baseline.miou", "{:.3f}"),
    ("adapter params", "adapter_params", "{:,}"),
    ("backbone params", "backbone_params", "{:,}"),
    ("% of backbone", "adapter_pct_of_backbone", "{:.3f}"),
    ("input", "protocol.input_size", "{}"),
    ("layer", "protocol.layer", "{}"),
    ("iters", "protocol.iterations", "{}"),
]


def _get(metrics: dict[str, Any], dotted: str) -> Any:
    value: Any = metrics
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def load_metrics(paths: Iterable[Path]) -> list[dict[str, Any]]:
    rows = []
    for path in paths:
        try:
            rows.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise MaxaError(f"cannot read metrics file {path}: {exc}") from exc
    if not rows:
        raise MaxaError("no metrics files given to report")
    return sorted(
        rows, key=lambda m: (str(m.get("task")), -float(m.get("miou") or 0), str(m.get("backbone")))
    )


def _cell(metrics: dict[str, Any], key: str, fmt: str) -> str:
    value = _get(metrics, key)
    if value is None:
        return ""
    if isinstance(value, list):
        value = "x".join(str(v) for v in value)
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def table(rows: list[dict[str, Any]]) -> list[list[str]]:
    return [[h for h, _, _ in COLUMNS]] + [[_cell(m, k, f) for _, k, f in COLUMNS] for m in rows]


def to_markdown(cells: list[list[str]]) -> str:
    header, *body = cells
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def to_csv(cells: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(cells)
    return buffer.getvalue()


def write_report(metrics_paths: list[Path], out_dir: Path) -> str:
    """Write leaderboard.{md,csv,json} into out_dir; return the Markdown table."""
    rows = load_metrics(metrics_paths)
    cells = table(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = "# maxa leaderboard\n\n" + to_markdown(cells)
    (out_dir / "leaderboard.md").write_text(markdown)
    (out_dir / "leaderboard.csv").write_text(to_csv(cells))
    (out_dir / "leaderboard.json").write_text(json.dumps(rows, indent=2) + "\n")
    return markdown
