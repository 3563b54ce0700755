"""The metrics JSON every local test writes: the same top-level keys the leaderboard reads.

Contract: backbone, model, weights, task, adapter ("none": nothing is trained), dataset, split,
scores {...}, primary {name, value, higher_is_better} and protocol {every setting that shaped the
number}.
"""

from __future__ import annotations

from typing import Any

from maxa.core import records

__all__ = ["metrics_record"]


def metrics_record(
    summary: dict[str, Any],
    *,
    task: str,
    scores: dict[str, Any],
    primary: tuple[str, float, bool],
    protocol: dict[str, Any],
) -> dict[str, Any]:
    """The local test's result as the one metrics record (maxa.core.records): NaN -> null + reason,
    and a run id over the protocol and the stores' fingerprints."""
    name, value, higher_is_better = primary
    used = summary.get("stores") or {}
    record = {
        **summary,
        "run_id": records.run_id(
            str(summary["backbone"]),
            str(summary.get("adapter", "none")),
            task,
            protocol,
            str(used.get("features", {}).get("fingerprint", "")),
            str(used.get("targets", {}).get("fingerprint", "")),
        ),
        "task": task,
        "scores": scores,
        "primary": {"name": name, "value": value, "higher_is_better": higher_is_better},
        "protocol": protocol,
    }
    return records.metrics_record(record)
