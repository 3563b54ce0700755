"""Records between stages (core/records.py): canonical hashing, run ids, the metrics record."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

from maxa.core.errors import MaxaError
from maxa.core.records import (
    METRICS_FORMAT,
    DatasetRef,
    MetricsRecord,
    Primary,
    canonical_json,
    digest,
    read_metrics,
    run_id,
    run_key,
    write_metrics,
)

RECORD = {
    "run_id": "vit/maxa/semantic/0123abcd",
    "backbone": "vit",
    "adapter": "maxa",
    "task": "semantic",
    "scores": {"miou": 0.5, "ce": math.nan},
    "primary": {"name": "miou", "value": 0.5, "higher_is_better": True},
    "constant_baseline": {"miou": 0.1, "ce": math.inf},
}


def test_digest_is_sha256_of_compact_sorted_json() -> None:
    value = {"b": [1, 2.5], "a": "ü"}
    blob = '{"a":"ü","b":[1,2.5]}'
    assert canonical_json(value) == blob
    assert digest(value) == hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]
    with pytest.raises(MaxaError, match="NaN or inf"):
        digest({"x": math.nan})


def test_run_id_layout_and_sensitivity() -> None:
    rid = run_id("vit", "maxa", "depth", {"lr": 1e-3}, "f" * 16, "t" * 16)
    blob = json.dumps(
        {"config": {"lr": 1e-3}, "features": "f" * 16, "targets": "t" * 16},
        sort_keys=True,
        separators=(",", ":"),
    )
    assert rid == f"vit/maxa/depth/{hashlib.sha256(blob.encode()).hexdigest()[:8]}"
    assert run_id("vit", "maxa", "depth", {"lr": 1e-3}, "f" * 16, "u" * 16) != rid
    assert run_key({"run_id": rid}) == rid
    assert run_key({"backbone": "a", "adapter": "b", "task": "c"}) == "a/b/c"


def test_metrics_json_is_always_valid_with_null_and_reason(tmp_path: Path) -> None:
    out = tmp_path / "m" / "metrics.json"
    written = write_metrics(RECORD, out)
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    loaded = json.loads(text)  # strict JSON
    assert loaded == written == read_metrics(out).to_dict()  # the reader gives back what was written
    assert loaded["format"] == METRICS_FORMAT
    assert loaded["scores"]["ce"] is None and loaded["constant_baseline"]["ce"] is None
    assert loaded["nulls"] == {"scores.ce": "not finite (nan)", "constant_baseline.ce": "not finite (inf)"}
    assert loaded["scores"]["miou"] == 0.5


def test_metrics_record_keeps_given_reasons_and_uncertainty(tmp_path: Path) -> None:
    interval = {
        "miou": {
            "mean": 0.5,
            "std": 0.01,
            "low": 0.48,
            "high": 0.52,
            "n": 5,
            "method": "seeds",
            "level": 0.95,
        }
    }
    record = {
        **RECORD,
        "scores": {"miou": 0.5, "ap": None},
        "nulls": {"ap": "no box in the split"},
        "uncertainty": interval,
    }
    loaded = write_metrics(record, tmp_path / "m.json")
    assert loaded["nulls"]["ap"] == "no box in the split"
    assert loaded["uncertainty"] == interval


def test_metrics_record_refuses_missing_fields_and_newer_format(tmp_path: Path) -> None:
    with pytest.raises(MaxaError, match=r"metrics record lacks required field\(s\) run_id"):
        write_metrics({k: v for k, v in RECORD.items() if k != "run_id"}, tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()
    newer = tmp_path / "n.json"
    newer.write_text(
        json.dumps({**RECORD, "scores": {}, "constant_baseline": {}, "format": METRICS_FORMAT + 1})
    )
    with pytest.raises(MaxaError, match=r"n.json has format 2, this maxa reads up to 1"):
        read_metrics(newer)
    broken = tmp_path / "b.json"
    broken.write_text('{"scores": NaN')
    with pytest.raises(MaxaError, match=r"b.json is not valid JSON"):
        read_metrics(broken)


def test_unwritable_metrics_path_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "f"
    blocker.write_text("x")
    with pytest.raises(MaxaError, match=r"metrics file .*f/m.json cannot be written"):
        write_metrics(RECORD, blocker / "m.json")


def test_dataset_reference_differences_name_fields() -> None:
    a = DatasetRef("voc", "val", "aa", content="c1")
    assert a.differences(DatasetRef("voc", "val", "aa", root="/elsewhere")) == []
    assert a.differences(DatasetRef("nyu", "val", "bb", content="c2")) == [
        "name: 'voc' vs 'nyu'",
        "fingerprint: 'aa' vs 'bb'",
        "content: c1 vs c2",
    ]
    with pytest.raises(MaxaError, match="x: dataset reference lacks split"):
        DatasetRef.from_dict({"name": "voc", "fingerprint": "aa"}, "x")


def test_metrics_record_read_back_as_documented(tmp_path: Path) -> None:
    """docs/store.md: run_id, backbone, adapter, task, scores, primary, constant_baseline, protocol, stores,
    checkpoint, optional uncertainty, and nulls."""
    documented = {
        **RECORD,
        "dataset": "synthetic",
        "split": "val",
        "protocol": {"input_size": [64, 64]},
        "stores": {"features": {"url": "f.zarr", "fingerprint": "0" * 16}},
        "checkpoint": {"path": "m.pt", "fingerprint": "1" * 16},
    }
    write_metrics(documented, tmp_path / "m.json")
    record = read_metrics(tmp_path / "m.json")
    assert (record.run_id, record.backbone, record.task) == ("vit/maxa/semantic/0123abcd", "vit", "semantic")
    assert (record.adapter, record.dataset, record.split) == ("maxa", "synthetic", "val")
    assert record.primary == Primary("miou", 0.5, True) and record.scores == {"miou": 0.5, "ce": None}
    assert record.nulls == {"scores.ce": "not finite (nan)", "constant_baseline.ce": "not finite (inf)"}
    assert record.protocol == {"input_size": [64, 64]} and record.other["checkpoint"]["path"] == "m.pt"
    assert list(record.to_dict()) == list(json.loads((tmp_path / "m.json").read_text()))  # key order kept


def test_metrics_files_older_than_scores_and_primary_are_migrated_on_read() -> None:
    """Files written before `scores`/`primary`: top-level scores, the task's primary metric, no run id."""
    old = {"backbone": "vit", "task": "semantic", "adapter": "maxa", "miou": 0.5, "ce": 1.25, "n": 3}
    record = MetricsRecord.from_dict(old, "old.json")
    assert record.scores == {"miou": 0.5, "ce": 1.25}  # counts are not scores
    assert record.primary == Primary("miou", 0.5, True)
    assert record.run_id == "vit/maxa/semantic" and record.dataset is None
    depth = MetricsRecord.from_dict({"backbone": "vit", "task": "depth", "rmse": 0.3}, "d.json")
    assert depth.primary is None and depth.scores == {}  # no primary was ever defined for it
    with pytest.raises(MaxaError, match=r"x.json lacks required field\(s\) task"):
        MetricsRecord.from_dict({"backbone": "vit"}, "x.json")
