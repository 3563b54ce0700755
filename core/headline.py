"""The headline of a metrics record: what `dvc metrics show` lists, written beside the full record.

DVC shows every number of a metrics file as a column; the full record (scores, per-class IoU, intervals,
protocol counts) made ~300 columns. The headline keeps the primary metric under its own name, the
half-width of its 95% interval and the constant baseline's value: three columns a task, readable across
an experiment. The full record stays at the path `maxa evaluate --out` names; report, plots and compare
read it and skip headlines when they search a folder.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

SUFFIX = ".headline.json"


def headline_path(out: str | Path) -> Path:
    """`metrics/semantic/vit.json` -> `metrics/semantic/vit.headline.json`."""
    path = Path(out)
    stem = path.name[: -len(".json")] if path.name.endswith(".json") else path.name
    return path.with_name(stem + SUFFIX)


def is_headline(path: str | Path) -> bool:
    return Path(path).name.endswith(SUFFIX)


def full_records(paths: Iterable[Path]) -> list[Path]:
    """The metrics records among files found in a folder (their headlines left out)."""
    return [p for p in paths if not is_headline(p)]


def headline(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """{<primary metric>: value, ci95_half_width, constant_baseline}, or None for a record without a
    primary metric (nothing to headline)."""
    primary = record.get("primary")
    if not isinstance(primary, Mapping) or not isinstance(primary.get("name"), str):
        return None
    name = primary["name"]
    interval = (record.get("uncertainty") or {}).get(name) or {}
    low, high = interval.get("low"), interval.get("high")
    baseline = record.get("constant_baseline")
    return {
        name: primary.get("value"),
        "ci95_half_width": (high - low) / 2 if low is not None and high is not None else None,
        "constant_baseline": baseline.get(name) if isinstance(baseline, Mapping) else None,
    }
