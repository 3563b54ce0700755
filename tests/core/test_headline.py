"""The headline `dvc metrics show` lists, beside the full record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maxa.core.headline import full_records, headline, headline_path, is_headline
from maxa.core.records import write_metrics


def _record() -> dict[str, object]:
    return {
        "run_id": "vit/maxa/semantic/1",
        "backbone": "vit",
        "adapter": "maxa",
        "task": "semantic",
        "dataset": "synthetic",
        "split": "val",
        "scores": {"miou": 0.5, "pixel_accuracy": 0.8},
        "primary": {"name": "miou", "value": 0.5, "higher_is_better": True},
        "constant_baseline": {"miou": 0.1, "pixel_accuracy": 0.4},
        "uncertainty": {"miou": {"mean": 0.5, "low": 0.44, "high": 0.58}},
        "per_class_iou": {str(i): 0.5 for i in range(40)},
    }


def test_headline_written_beside_the_full_record(tmp_path: Path) -> None:
    out = tmp_path / "metrics" / "semantic" / "vit.json"
    full = write_metrics(_record(), out)
    beside = headline_path(out)
    assert beside == tmp_path / "metrics" / "semantic" / "vit.headline.json" and is_headline(beside)
    top = json.loads(beside.read_text())
    assert top == {"miou": 0.5, "ci95_half_width": pytest.approx(0.07), "constant_baseline": 0.1}
    assert json.loads(out.read_text())["per_class_iou"] == full["per_class_iou"]  # the full record stays
    assert full_records(sorted(out.parent.glob("*.json"))) == [out]


def test_no_headline_without_a_primary_metric() -> None:
    record = _record()
    record.pop("primary")
    assert headline(record) is None
    record = _record()
    record.pop("uncertainty")
    assert headline(record) == {"miou": 0.5, "ci95_half_width": None, "constant_baseline": 0.1}
