"""Record fixtures: checkpoint and metrics records as later stages read them, built from a few fields."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from maxa.core.checkpoint_meta import CheckpointMeta
from maxa.core.records import MetricsRecord
from maxa.evaluate.report import normalize

METRICS_CONTRACT = frozenset(
    {"backbone", "model", "weights", "task", "adapter", "dataset", "split", "scores", "primary", "protocol"}
)
"""Keys every metrics record carries, a probe evaluation's and a local test's alike."""


def checkpoint_meta(
    backbone: str, task: str, losses: Sequence[float] = (), adapter: str = "maxa", **fields: Any
) -> CheckpointMeta:
    """A checkpoint record of a `task` adapter on `backbone` (format 3 fields left out are empty)."""
    classes = int(fields.get("num_classes", 3))
    base: dict[str, Any] = {"run_id": f"{backbone}/{adapter}/{task}/00000000", "in_channels": 8}
    base |= {"out_channels": classes, "output_size": [8, 8], "num_classes": classes}
    base |= {"class_names": [f"c{i}" for i in range(classes)]}
    base |= {"backbone": backbone, "layers": ["layer_0"], "losses": list(losses)}
    config = {"task": task, "adapter": adapter, **fields.pop("config", {})}
    return CheckpointMeta.from_dict({**base, "config": config, **fields}, f"{backbone}/{task} record")


def report_run(metrics: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The report's row of a metrics file holding `metrics` (read as `maxa report` reads it)."""
    return normalize(MetricsRecord.from_dict(metrics, f"metrics file {source}"), source)
