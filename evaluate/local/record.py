"""The metrics JSON every local test writes: the same top-level keys the leaderboard reads.

Contract: backbone, model, weights, task, adapter ("none": nothing is trained), dataset, split,
scores {...}, primary {name, value, higher_is_better} and protocol {every setting that shaped the
number}.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def finite_or_none(value: Any) -> Any:
    """NaN/inf -> None, recursively, so the file is strict JSON (`dvc metrics show` reads it)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def metrics_record(
    summary: dict[str, Any],
    *,
    task: str,
    scores: dict[str, Any],
    primary: tuple[str, float, bool],
    protocol: dict[str, Any],
) -> dict[str, Any]:
    name, value, higher_is_better = primary
    record = dict(summary)
    record.update(
        {
            "task": task,
            "scores": scores,
            "primary": {"name": name, "value": value, "higher_is_better": higher_is_better},
            "protocol": protocol,
        }
    )
    return finite_or_none(record)


def write_metrics(metrics: dict[str, Any], out: str) -> None:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
