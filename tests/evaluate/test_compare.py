"""`maxa compare`: differing fields, the score difference's interval (vs scipy), pairing and the CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from maxa.core.errors import MaxaError
from maxa.evaluate.compare import compare_runs, difference_interval, load_side, pair_runs
from maxa.evaluate.intervals import t_interval
from tests.kit.cli import invoke


def _run(values: list[float], **protocol: Any) -> dict[str, Any]:
    record = t_interval(values)
    return {
        "backbone": "vit",
        "adapter": "maxa",
        "task": "semantic",
        "dataset": "synthetic",
        "split": "val",
        "weights": "random-init",
        "scores": {"miou": record["mean"]},
        "primary": {"name": "miou", "value": record["mean"], "higher_is_better": True},
        "uncertainty": {"miou": record},
        "protocol": {"input_size": [128, 128], "layer": "-1", "iterations": 400, **protocol},
        "stores": {"features": {"url": "f.zarr", "fingerprint": "abc"}},
    }


def test_welch_interval_matches_scipy() -> None:
    a, b = [0.50, 0.53, 0.51], [0.58, 0.55, 0.60, 0.57]
    got = difference_interval(t_interval(a), t_interval(b))
    ci = stats.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    assert got["method"] == "welch"
    assert (got["low"], got["high"]) == pytest.approx((ci.low, ci.high), rel=1e-9)


def test_bootstrap_halves_combine_in_quadrature() -> None:
    ua = {"mean": 0.5, "low": 0.46, "high": 0.54, "method": "bootstrap", "n": 64}
    ub = {"mean": 0.6, "low": 0.57, "high": 0.63, "method": "bootstrap", "n": 64}
    got = difference_interval(ua, ub)
    assert got["low"] == pytest.approx(0.1 - 0.05) and got["high"] == pytest.approx(0.1 + 0.05)


def test_lists_protocol_fields_first_and_names_the_cause() -> None:
    a = _run([0.50, 0.52, 0.51])
    b = _run([0.60, 0.61, 0.62], input_size=[224, 224])
    b["stores"]["features"]["fingerprint"] = "def"
    result = compare_runs(a, b)
    keys = [k for k, _, _ in result["fields"]]
    assert keys == ["protocol.input_size", "stores.features.fingerprint"]
    assert "different protocol" in result["verdict"] and "significant" in result["verdict"]
    assert result["score"]["difference"] == pytest.approx(np.mean([0.6, 0.61, 0.62]) - 0.51)
    assert (result["a"], result["b"]) == ("vit/maxa/semantic", "vit/maxa/semantic")  # run_key, no run_id
    same = compare_runs(a, copy.deepcopy(a))
    assert same["fields"] == [] and "within its interval" in same["verdict"]
    assert compare_runs({**a, "run_id": "vit/maxa/semantic/ab12"}, b)["a"] == "vit/maxa/semantic/ab12"
    features_only = copy.deepcopy(a)
    features_only["weights"] = "dinov2"
    assert "different features" in compare_runs(a, features_only)["verdict"]


def test_reports_pair_by_run_id_then_by_what_they_measure(tmp_path: Path) -> None:
    a1, a2 = _run([0.5, 0.6]), _run([0.3, 0.4])
    a2["task"] = "depth"
    # b1 measures another split, so only the run id links it to a1; `decoy` has a1's key but no id
    b1, b2, decoy = copy.deepcopy(a1), copy.deepcopy(a2), copy.deepcopy(a1)
    b1["split"] = "test"
    a1["run_id"], b1["run_id"] = "vit/maxa/semantic/1", "vit/maxa/semantic/1"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "leaderboard.json").write_text(json.dumps({"runs": [a1, a2]}))
    (tmp_path / "b.json").write_text(json.dumps({"runs": [b2, decoy, b1]}))
    pairs = pair_runs(load_side(tmp_path / "a"), load_side(tmp_path / "b.json"))
    got = [(x["task"], y["task"], y["split"]) for x, y in pairs]
    assert got == [("semantic", "semantic", "test"), ("depth", "depth", "val")]
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(MaxaError, match=r"bad\.json"):
        load_side(tmp_path / "bad.json")
    (tmp_path / "newer.json").write_text(json.dumps({**a1, "format": 999}))
    with pytest.raises(MaxaError, match=r"newer\.json has format 999"):
        load_side(tmp_path / "newer.json")


def test_cli_prints_fields_and_difference(tmp_path: Path) -> None:
    a, b = _run([0.50, 0.52, 0.51]), _run([0.50, 0.52, 0.51], iterations=1000)
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    result = invoke("compare", tmp_path / "a.json", tmp_path / "b.json", catch_exceptions=True)
    assert result.exit_code == 0, result.output
    assert "protocol.iterations: 400 -> 1000" in result.output
    assert "B - A +0.0000" in result.output


def test_layer_and_grid_name_features_not_protocol() -> None:
    """Two backbones are always read at their own layer and grid: that is which features, not how they
    are measured (issue 21: every cross-backbone pair read "different protocol")."""
    vit = _run([0.50, 0.52, 0.51], layer="layer_11", feature_grid=[8, 8])
    cnn = _run([0.40, 0.42, 0.41], layer="layer_2", feature_grid=[4, 4])
    cnn.update(backbone="convnext", model="convnext_atto")
    cnn["protocol"]["selection"] = {"chosen": {"layer": "2", "lr": 0.001}}
    vit["protocol"]["selection"] = {"chosen": {"layer": "11", "lr": 0.001}}
    result = compare_runs(vit, cnn)
    assert "same protocol, different features or weights" in result["verdict"]
    assert {k for k, _, _ in result["fields"]} >= {"protocol.layer", "protocol.feature_grid", "model"}
    cnn["protocol"]["iterations"] = 1000  # a protocol field still makes the protocol differ
    assert "different protocol" in compare_runs(vit, cnn)["verdict"]


def test_an_unused_extra_layer_is_not_different_features() -> None:
    """Extracting one more layer changes the store's fingerprint, not the features a probe read."""
    one = _run([0.50, 0.52, 0.51])
    more = copy.deepcopy(one)
    more["stores"]["features"] = {"url": "f2.zarr", "fingerprint": "abd"}
    result = compare_runs(one, more)
    assert [k for k, _, _ in result["fields"]] == ["stores.features.fingerprint", "stores.features.url"]
    assert result["verdict"].startswith("same protocol and features; other settings differ")
    assert result["score"]["difference"] == 0.0
