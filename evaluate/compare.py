"""`maxa compare A B`: why two numbers differ — every protocol/provenance field that differs, and the
score difference with its interval, so "different protocol" reads apart from "different features".

A and B are metrics JSON files, `leaderboard.json` files or report folders (their runs are paired by
`run_id`, else by backbone/adapter/task/dataset/split).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from maxa.core.errors import MaxaError
from maxa.core.headline import full_records
from maxa.core.records import MetricsRecord, read_json, run_key
from maxa.evaluate.intervals import LEVEL, half_width
from maxa.evaluate.report import normalize

# Result values, not settings: compared through the score difference, never listed as fields.
RESULT_KEYS = {
    "scores",
    "primary",
    "constant_baseline",
    "per_class_iou",
    "uncertainty",
    "uncertainty_note",
    "seed_scores",
    "nulls",
    "source",
    "miou",
    "pixel_accuracy",
    "ce",
    "losses",
    "train_seconds",
    "load_seconds",
    "samples_per_second",
}
# Fields listed first: what most often explains a gap (protocol, then data and weights provenance).
FIRST = ("protocol.", "dataset", "split", "stores.", "weights", "model", "checkpoint.", "versions.")
FEATURE_PREFIXES = (
    "weights",
    "model",
    "backbone",
    "protocol.layer",
    "protocol.feature_grid",
    "protocol.selection.chosen.layer",
    "protocol.selection.swept.layers",
)
"""What names the features a score was computed from: the backbone, its weights and which of its layers
(a layer index, or the grid its patch size makes, differs between any two backbones: it does not make the
protocol differ). The feature store's URL and fingerprint are not among them: adding a layer the probe
never reads changes the store, not the features scored."""
PROTOCOL_PREFIXES = ("protocol.", "dataset", "split")
"""What defines the protocol (how a backbone is measured): every `protocol.` field but the feature ones."""


def _names_features(key: str) -> bool:
    return key.startswith(FEATURE_PREFIXES)


def _defines_protocol(key: str) -> bool:
    return key.startswith(PROTOCOL_PREFIXES) and not _names_features(key)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not prefix and key in RESULT_KEYS:
                continue
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def differing_fields(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted field, A's value, B's value) for every setting or provenance field that differs."""
    fa, fb = _flatten(a), _flatten(b)
    keys = [k for k in dict.fromkeys([*fa, *fb]) if fa.get(k) != fb.get(k) and k != "run_id"]

    def order(key: str) -> tuple[int, str]:
        rank = next((i for i, p in enumerate(FIRST) if key.startswith(p)), len(FIRST))
        return rank, key

    return [(k, fa.get(k), fb.get(k)) for k in sorted(keys, key=order)]


def difference_interval(
    ua: dict[str, Any] | None, ub: dict[str, Any] | None, level: float = LEVEL
) -> dict[str, Any]:
    """Interval of B - A: Welch's t over seeds when both have seed statistics, else the half-widths of
    both intervals combined in quadrature (independent errors, normal approximation)."""
    from scipy import stats

    if not ua or not ub:
        return {"low": None, "high": None, "method": None}
    mean_a, mean_b = float(ua["mean"]), float(ub["mean"])
    diff = mean_b - mean_a
    seeds = ua.get("method") == ub.get("method") == "seeds"
    if seeds and ua.get("std") is not None and ub.get("std") is not None and min(ua["n"], ub["n"]) > 1:
        va, vb = float(ua["std"]) ** 2 / ua["n"], float(ub["std"]) ** 2 / ub["n"]
        se = math.sqrt(va + vb)
        if se == 0:
            return {"low": diff, "high": diff, "method": "welch"}
        df = (va + vb) ** 2 / (va**2 / (ua["n"] - 1) + vb**2 / (ub["n"] - 1))
        half = float(stats.t.ppf(0.5 + level / 2, df)) * se
        return {"low": diff - half, "high": diff + half, "method": "welch"}
    ha, hb = half_width(ua), half_width(ub)
    if ha is None or hb is None:
        return {"low": None, "high": None, "method": None}
    half = math.hypot(ha, hb)
    return {"low": diff - half, "high": diff + half, "method": "quadrature"}


def compare_runs(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The differing fields, the primary-score difference B - A with its interval, and a verdict."""
    fields = differing_fields(a, b)
    primary_a, primary_b = a.get("primary") or {}, b.get("primary") or {}
    name = primary_a.get("name")
    score: dict[str, Any] = {"metric": name, "a": primary_a.get("value"), "b": primary_b.get("value")}
    if name is None or primary_b.get("name") != name:
        score["note"] = f"different primary metrics: {name} vs {primary_b.get('name')}"
    elif score["a"] is not None and score["b"] is not None:
        score["difference"] = float(score["b"]) - float(score["a"])
        ua = (a.get("uncertainty") or {}).get(name)
        ub = (b.get("uncertainty") or {}).get(name)
        score.update(difference_interval(ua, ub))
    keys = [k for k, _, _ in fields]
    if any(_defines_protocol(k) for k in keys):
        verdict = "different protocol: the scores are not directly comparable"
    elif any(_names_features(k) for k in keys):
        verdict = "same protocol, different features or weights"
    elif fields:
        verdict = "same protocol and features; other settings differ"
    else:
        verdict = "same protocol and provenance"
    low, high = score.get("low"), score.get("high")
    if low is not None and high is not None:
        inside = low <= 0 <= high
        verdict += (
            "; the difference is within its interval of zero" if inside else "; the difference is significant"
        )
    return {"a": run_key(a), "b": run_key(b), "fields": fields, "score": score, "verdict": verdict}


def load_side(path: Path) -> list[dict[str, Any]]:
    """The runs of one side: a metrics file, a leaderboard.json, or a folder holding either."""
    if path.is_dir():
        board = path / "leaderboard.json"
        files = [board] if board.is_file() else full_records(sorted(path.rglob("*.json")))
        return [run for file in files for run in load_side(file)]
    data = read_json(path)
    if isinstance(data.get("runs"), list):  # a leaderboard.json: the runs it ranked
        return [normalize(MetricsRecord.from_dict(run, f"{path} run"), str(path)) for run in data["runs"]]
    try:
        return [normalize(MetricsRecord.from_dict(data, f"metrics file {path}"), str(path))]
    except MaxaError:
        raise MaxaError(
            f"{path} is neither a metrics file nor a leaderboard.json (no backbone/task, no runs)"
        ) from None


def _key(run: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(run.get(k)) for k in ("backbone", "adapter", "task", "dataset", "split"))


def pair_runs(
    a: list[dict[str, Any]], b: list[dict[str, Any]]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """One file each: compared directly. Reports: runs paired by run id, else by what they measure."""
    if len(a) == 1 and len(b) == 1:
        return [(a[0], b[0])]
    by_id = {r["run_id"]: r for r in b if r.get("run_id")}
    by_key = {_key(r): r for r in b}
    pairs = []
    for run in a:
        other = by_id.get(run.get("run_id")) or by_key.get(_key(run))
        if other is not None:
            pairs.append((run, other))
    if not pairs:
        raise MaxaError("no run of A matches a run of B (by run_id or backbone/adapter/task/dataset/split)")
    return pairs


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "—" if value is None else str(value)


def format_comparison(result: dict[str, Any]) -> str:
    lines = [f"A: {result['a']}", f"B: {result['b']}"]
    score = result["score"]
    if "difference" in score:
        interval = ""
        if score.get("low") is not None:
            interval = (
                f", {LEVEL:.0%} interval [{score['low']:+.4f}, {score['high']:+.4f}] ({score['method']})"
            )
        values = f"A {_text(score['a'])}, B {_text(score['b'])}"
        lines.append(f"{score['metric']}: {values}, B - A {score['difference']:+.4f}{interval}")
    elif "note" in score:
        lines.append(score["note"])
    if result["fields"]:
        lines.append(f"{len(result['fields'])} fields differ:")
        lines += [f"  {key}: {_text(va)} -> {_text(vb)}" for key, va, vb in result["fields"]]
    else:
        lines.append("no protocol or provenance field differs")
    lines.append(f"verdict: {result['verdict']}")
    return "\n".join(lines)
