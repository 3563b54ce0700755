"""`maxa report`: metrics JSON files -> one leaderboard across backbones and tasks, like the paper's table.

Three views of the same runs (one run = one metrics file = backbone x task x adapter):
- leaderboard.md: one row per backbone and trained adapter (its local tests in the same row), one column
  per task's primary metric (arrow = which direction is better, best value in bold), parameter counts, a
  constant-baseline row, and the protocol of every column (resolution, feature grid, layer, label size,
  split, iterations, samples);
- leaderboard.csv: the long format, one row per run with every score, baseline and protocol field;
- leaderboard.json: both, plus the normalized metrics of every run.

A score with an interval (`uncertainty` of the primary metric: over seeds or bootstrapped) prints as
`mean ± half-width`; every entry whose interval overlaps the best entry's is bold. Published numbers
(pipelines/paper/published.yaml, evaluate/published.py) are set beside maxa's only where every protocol
field matches; otherwise the report names the fields that differ.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maxa.core.errors import MaxaError
from maxa.core.records import MetricsRecord, read_json, run_key
from maxa.evaluate.controls import has_controls, lost_to_constant, margin_cells, margins
from maxa.evaluate.metric_specs import METRICS
from maxa.evaluate.published import PUBLISHED, differences, load_published, same_measurement

PROTOCOL_FIELDS = (
    "input_size",
    "feature_grid",
    "layer",
    "label_size",
    "iterations",
    "batch_size",
    "train_samples",
    "eval_samples",
)


def metric_label(name: str) -> str:
    """How a metric key is printed (its spec's label); unregistered keys print as they are."""
    return METRICS.get(name).display() if name in METRICS else name


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite(value: Any) -> float | None:
    if not _is_number(value) or math.isnan(value):
        return None
    return float(value)


def normalize(record: MetricsRecord, source: str) -> dict[str, Any]:
    """The report's row of one run: the record's fields, its numeric scores only, and its `source` file."""
    run = record.to_dict()
    run["scores"] = {str(k): float(v) for k, v in record.scores.items() if _is_number(v)}
    primary = record.primary
    run["primary"] = (
        None
        if primary is None
        else {
            "name": primary.name,
            "value": primary.value,
            "higher_is_better": primary.higher_is_better,
        }
    )
    for key in ("adapter", "dataset", "split"):
        run[key] = run.get(key) or "?"
    run["source"] = source
    return run


def load_runs(paths: Iterable[Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """Read and normalize metrics files; return the runs and notes on files that are not runs."""
    runs, skipped = [], []
    for path in paths:
        data = read_json(path)
        try:
            record = MetricsRecord.from_dict(data, f"metrics file {path}")
        except MaxaError:
            skipped.append(f"{path} (not a metrics file: no backbone/task)")
            continue
        runs.append(normalize(record, str(path)))
    if not runs:
        detail = f"; skipped {', '.join(skipped)}" if skipped else ""
        raise MaxaError(f"no metrics files given to report{detail}")
    unify_backbone_names(runs)
    seen: dict[tuple[str, ...], str] = {}
    for run in runs:
        key = (run["backbone"], run["adapter"], run["task"], run["dataset"], run["split"])
        named = _protocol(run, "name")
        key += (str(named),) if named is not None else ()  # two protocols of one run are two rows
        if key in seen:
            raise MaxaError(f"{seen[key]} and {run['source']} both score {'/'.join(key)}; remove one of them")
        seen[key] = run["source"]
    return runs, skipped


def unify_backbone_names(runs: list[dict[str, Any]]) -> None:
    """One name per backbone: a run whose backbone was never named (its name defaulted to the timm
    model, e.g. `maxa local propagation` on a store extracted with `--model vit_tiny_patch16_224`) takes
    the name of the one named backbone with the same model and weights (`vit_tiny` from params.yaml),
    so probes and local tests of one backbone share a row. The recorded name stays in `backbone_recorded`."""
    named: dict[tuple[Any, Any], set[str]] = {}
    for run in runs:
        if run.get("model") is not None and run["backbone"] != run["model"]:
            named.setdefault((run["model"], run.get("weights")), set()).add(run["backbone"])
    for run in runs:
        names = named.get((run.get("model"), run.get("weights")), set())
        if run["backbone"] == run.get("model") and len(names) == 1:
            run["backbone_recorded"], run["backbone"] = run["backbone"], next(iter(names))


@dataclass(frozen=True)
class Column:
    """One leaderboard column: a task's primary metric on one dataset split."""

    task: str
    dataset: str
    split: str
    metric: str
    higher_is_better: bool

    def header(self, qualify: bool) -> str:
        arrow = "↑" if self.higher_is_better else "↓"
        where = f" ({self.dataset}/{self.split})" if qualify else ""
        return f"{self.task} {metric_label(self.metric)} {arrow}{where}"

    def better(self, a: float, b: float) -> bool:
        return a > b if self.higher_is_better else a < b


@dataclass
class Row:
    """One backbone + adapter across every task it was probed on."""

    backbone: str
    adapter: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    values: dict[Column, float] = field(default_factory=dict)
    intervals: dict[Column, tuple[float, float]] = field(default_factory=dict)
    mean_rank: float | None = None

    def span(self, column: Column) -> tuple[float, float]:
        """The entry's interval, or its value as a point."""
        value = self.values[column]
        return self.intervals.get(column, (value, value))

    def first(self, key: str) -> Any:
        return next((r[key] for r in self.runs if r.get(key) is not None), None)

    def distinct(self, getter: Any) -> list[Any]:
        out: list[Any] = []
        for run in self.runs:
            value = getter(run)
            if value is not None and value not in out:
                out.append(value)
        return out


@dataclass
class Leaderboard:
    columns: list[Column]
    rows: list[Row]
    baseline: dict[Column, float]
    runs: list[dict[str, Any]]
    skipped: list[str]
    published: list[dict[str, Any]] = field(default_factory=list)

    @property
    def qualify(self) -> bool:
        """Name dataset/split in headers only when the runs span more than one."""
        return len({(c.dataset, c.split) for c in self.columns}) > 1

    def best(self, column: Column) -> float | None:
        row = self.best_row(column)
        return None if row is None else row.values[column]

    def best_row(self, column: Column) -> Row | None:
        best: Row | None = None
        for row in self.rows:
            if column in row.values and (
                best is None or column.better(row.values[column], best.values[column])
            ):
                best = row
        return best

    def ties_best(self, row: Row, column: Column) -> bool:
        """Whether the row's interval overlaps the best entry's (point values: equal after rounding)."""
        best = self.best_row(column)
        if best is None or column not in row.values:
            return False
        if column not in row.intervals and column not in best.intervals:
            return format_value(row.values[column]) == format_value(best.values[column])
        (low, high), (best_low, best_high) = row.span(column), best.span(column)
        return low <= best_high and best_low <= high


def column_of(run: dict[str, Any]) -> Column | None:
    primary = run["primary"]
    if primary is None:
        return None
    return Column(run["task"], run["dataset"], run["split"], primary["name"], primary["higher_is_better"])


def interval_of(run: dict[str, Any]) -> tuple[float, float] | None:
    """(low, high) of the run's primary metric from its `uncertainty` record, if it has one."""
    primary = run.get("primary") or {}
    uncertainty = run.get("uncertainty")
    record = uncertainty.get(primary.get("name")) if isinstance(uncertainty, dict) else None
    if not isinstance(record, dict):
        return None
    low, high = _finite(record.get("low")), _finite(record.get("high"))
    return None if low is None or high is None else (low, high)


def format_score(value: float, interval: tuple[float, float] | None) -> str:
    """`mean ± half-width` (the half-width of the interval), or the value alone."""
    if interval is None:
        return format_value(value)
    return f"{format_value(value)} ± {format_value((interval[1] - interval[0]) / 2)}"


def _ranks(rows: list[Row], column: Column) -> dict[int, int]:
    """Competition ranks (1 = best, ties share) of the rows that have this column."""
    scored = [(i, r.values[column]) for i, r in enumerate(rows) if column in r.values]
    ranks = {}
    for i, value in scored:
        ranks[i] = 1 + sum(column.better(other, value) for _, other in scored)
    return ranks


PARAMETER_FREE = "none"
"""The adapter a local test records (k-NN labelling, retrieval, propagation: nothing trained)."""

PREFERRED_ADAPTER = "maxa"


def _row_homes(runs: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[str, str]]:
    """Per (backbone, protocol): the (adapter, protocol) of the row that also holds its parameter-free
    columns (maxa, else the first trained adapter by name), so a backbone's probes and local tests share one
    row. A local test records no protocol name: it joins the backbone's row when that has exactly one."""
    trained: dict[str, dict[str, set[str]]] = {}
    for run in runs:
        if run["adapter"] != PARAMETER_FREE:
            by_protocol = trained.setdefault(run["backbone"], {})
            by_protocol.setdefault(str(_protocol(run, "name")), set()).add(run["adapter"])
    homes = {}
    for backbone, by_protocol in trained.items():
        for protocol, names in by_protocol.items():
            home = (PREFERRED_ADAPTER if PREFERRED_ADAPTER in names else min(names), protocol)
            homes[(backbone, protocol)] = home
            if len(by_protocol) == 1:
                homes[(backbone, str(None))] = home
    return homes


def build_leaderboard(runs: list[dict[str, Any]], skipped: list[str] | None = None) -> Leaderboard:
    """One row per backbone and trained adapter (and protocol); a backbone's parameter-free runs (local
    tests) fill their columns in its row."""
    columns: list[Column] = []
    rows: dict[tuple[str, str, str], Row] = {}
    baseline: dict[Column, float] = {}
    homes = _row_homes(runs)
    for run in runs:
        protocol = str(_protocol(run, "name"))  # one row per protocol too
        adapter = run["adapter"]
        if adapter == PARAMETER_FREE:
            adapter, protocol = homes.get((run["backbone"], protocol), (adapter, protocol))
        row = rows.setdefault((run["backbone"], adapter, protocol), Row(run["backbone"], adapter))
        row.runs.append(run)
        column = column_of(run)
        value = _finite(run["primary"]["value"]) if run["primary"] else None
        if column is None or value is None:
            continue
        if column not in columns:
            columns.append(column)
        row.values[column] = value
        interval = interval_of(run)
        if interval is not None:
            row.intervals[column] = interval
        constant = run.get("constant_baseline")
        if isinstance(constant, dict) and column not in baseline:
            const_value = _finite(constant.get(column.metric))
            if const_value is not None:
                baseline[column] = const_value
    columns.sort(key=lambda c: (c.task, c.dataset, c.split, c.metric))
    ordered = list(rows.values())
    all_ranks = [_ranks(ordered, c) for c in columns]
    for i, row in enumerate(ordered):
        mine = [ranks[i] for ranks in all_ranks if i in ranks]
        row.mean_rank = sum(mine) / len(mine) if mine else None
    ordered.sort(key=lambda r: (r.mean_rank is None, r.mean_rank or 0.0, r.backbone, r.adapter))
    return Leaderboard(columns, ordered, baseline, runs, list(skipped or []))


# ------------------------------------------------------------------ formatting


def format_value(value: float) -> str:
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 10:
        return f"{value:.2f}"
    return f"{value:.3f}"


def format_count(value: Any) -> str:
    if not _is_number(value):
        return ""
    if value >= 1e6:
        return f"{value / 1e6:.2f}M"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    return str(int(value))


def _size(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "x".join(str(v) for v in value)
    return "" if value is None else str(value)


def _span(values: list[Any], fmt: Any) -> str:
    """One value, or the range when runs of one backbone differ (e.g. adapter size per task)."""
    numbers = sorted(v for v in values if _is_number(v))
    if not numbers:
        return ""
    low, high = fmt(numbers[0]), fmt(numbers[-1])
    return low if low == high else f"{low}–{high}"


def _protocol(run: dict[str, Any], key: str) -> Any:
    protocol = run.get("protocol")
    return protocol.get(key) if isinstance(protocol, dict) else None


MAIN_HEADER = ["backbone", "adapter", "protocol", "model", "weights", "input", "backbone params"]
MAIN_HEADER += ["adapter params"]
MAIN_HEADER += ["% of backbone"]


BESIDE: dict[str, tuple[str, ...]] = {"boundary": ("precision", "recall")}
"""Scores shown beside a task's primary column (not ranked): boundary IoU alone hides whether a probe
finds few boundaries precisely or many loosely (labels too small for the boundary rule: precision 0.51,
recall 0.03 gave IoU 0.03)."""


def _beside(column: Column) -> tuple[str, ...]:
    return BESIDE.get(column.task, ())


def _score_of(row: Row, column: Column, name: str) -> float | None:
    run = next((r for r in row.runs if column_of(r) == column), None)
    return None if run is None else _finite(run["scores"].get(name))


def table_cells(board: Leaderboard, *, bold: bool) -> list[list[str]]:
    """The wide table as strings: header row, one row per backbone/adapter, the constant baseline."""
    ranked = len(board.columns) > 1
    header = list(MAIN_HEADER)
    for column in board.columns:
        header.append(column.header(board.qualify))
        header += [f"{column.task} {metric_label(name)}" for name in _beside(column)]
    header += ["mean rank"] if ranked else []
    cells = [header]
    for row in board.rows:
        line = [
            row.backbone,
            row.adapter,
            ", ".join(str(v) for v in row.distinct(lambda r: _protocol(r, "name"))),
            ", ".join(str(v) for v in row.distinct(lambda r: r.get("model"))),
            ", ".join(str(v) for v in row.distinct(lambda r: r.get("weights"))),
            ", ".join(row.distinct(lambda r: _size(_protocol(r, "input_size")) or None)),
            format_count(row.first("backbone_params")),
            _span([r.get("adapter_params") for r in row.runs], format_count),
            _span([r.get("adapter_pct_of_backbone") for r in row.runs], lambda v: f"{v:.3f}"),
        ]
        for column in board.columns:
            value = row.values.get(column)
            text = "" if value is None else format_score(value, row.intervals.get(column))
            if bold and value is not None and len(board.rows) > 1 and board.ties_best(row, column):
                text = f"**{text}**"
            line.append(text)
            for name in _beside(column):
                score = _score_of(row, column, name) if value is not None else None
                line.append("" if score is None else format_value(score))
        if ranked:
            line.append("" if row.mean_rank is None else f"{row.mean_rank:.1f}")
        cells.append(line)
    if board.baseline:
        name = "*constant baseline*" if bold else "constant baseline"
        line = [name] + [""] * (len(MAIN_HEADER) - 1)
        for column in board.columns:
            line.append(format_value(board.baseline[column]) if column in board.baseline else "")
            line += [""] * len(_beside(column))
        cells.append(line + ([""] if ranked else []))
    return cells


def protocol_cells(board: Leaderboard) -> list[list[str]]:
    """Per column: what was measured where and how (values that differ across backbones are listed)."""
    header = ["column", "dataset", "split", "input", "feature grid", "layer", "label size", "iterations"]
    header += ["batch", "train samples", "eval samples", "selection", "runs"]
    cells = [header]
    for column in board.columns:
        runs = [r for r in board.runs if column_of(r) == column]

        def distinct(key: str, runs: list[dict[str, Any]] = runs) -> str:
            values: list[str] = []
            for run in runs:
                text = _size(_protocol(run, key))
                if text and text not in values:
                    values.append(text)
            return ", ".join(values)

        cells.append(
            [column.header(False), column.dataset, column.split]
            + [distinct(key) for key in PROTOCOL_FIELDS]
            + [selection_cell(runs)]
            + [str(len(runs))]
        )
    return cells


def selection_cell(runs: list[dict[str, Any]]) -> str:
    """The column's model selection: one text when every backbone's is the same, else each backbone's
    own, named (`vit_tiny: lr 0.001/0.003 -> 0.001; ... / convnext_atto: lr ... -> 0.003; ...`)."""
    texts = {run["backbone"]: text for run in runs if (text := selection_text(run))}
    if len(set(texts.values())) <= 1:
        return next(iter(texts.values()), "")
    return " / ".join(f"{backbone}: {text}" for backbone, text in texts.items())


def selection_text(run: dict[str, Any]) -> str:
    """What a sweep tried and chose, e.g. `lr 0.001/0.003 -> 0.001; 2 seeds; val 10% (seed 0)`."""
    selection = _protocol(run, "selection")
    if not isinstance(selection, dict):
        return ""
    swept, chosen = selection.get("swept") or {}, selection.get("chosen") or {}
    parts = []
    for key, label in (("lrs", "lr"), ("layers", "layer")):
        options = swept.get(key) or []
        if len(options) > 1:
            parts.append(
                f"{label} {'/'.join(f'{v:g}' if _is_number(v) else str(v) for v in options)} -> "
                f"{chosen.get(label)}"
            )
    seeds = swept.get("seeds") or []
    if len(seeds) > 1:
        parts.append(f"{len(seeds)} seeds")
    if selection.get("val_fraction"):
        parts.append(f"val {selection['val_fraction']:.0%} (seed {selection.get('val_seed')})")
    return "; ".join(parts)


def markdown_table(cells: list[list[str]]) -> str:
    header, *body = cells
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def to_markdown(board: Leaderboard) -> str:
    parts = ["# maxa leaderboard\n", markdown_table(table_cells(board, bold=True))]
    notes = [
        "↑ higher is better, ↓ lower is better; best per column in bold, with every entry whose 95% "
        "interval overlaps the best one's (not distinguishable from it); `±` is the half-width of that "
        "interval (a bootstrap over the seeds and the test images, or over test images for one run); rows "
        "sorted by mean rank over the columns."
    ]
    unscored = [r["source"] for r in board.runs if column_of(r) is None]
    if unscored:
        notes.append(f"No primary metric (only in leaderboard.csv): {', '.join(unscored)}.")
    undefined = [
        f"{r['source']} ({r['primary']['name']}: {(r.get('nulls') or {}).get('primary.value', 'not finite')})"
        for r in board.runs
        if column_of(r) is not None and _finite(r["primary"]["value"]) is None
    ]
    if undefined:
        notes.append(f"No value to rank: {'; '.join(undefined)}.")
    if board.skipped:
        notes.append(f"Skipped: {', '.join(board.skipped)}.")
    lost = lost_to_constant(board.runs)
    if lost:
        notes.append(
            "⚠ Held-out selection chose a member whose validation loss is above the constant baseline's: "
            f"{', '.join(lost)}."
        )
    parts.append("\n".join(notes) + "\n")
    if has_controls(board):
        parts += [
            "## Margin over the strongest control\n",
            markdown_table(margin_cells(board, format_value)),
            "Each backbone's score minus the best of the controls of its column (the constant baseline "
            "and the `control:*` rows: noise features, position-only features), signed so that positive "
            "is better; ⚠ marks a column where the backbone does not beat a control.\n",
        ]
    if board.columns:
        parts += ["## Protocol\n", markdown_table(protocol_cells(board))]
    if board.published:
        parts += [
            "## Published values\n",
            markdown_table(published_cells(board.published)),
            "Entries of pipelines/paper/published.yaml that score what a run scores (model, weights, "
            "adapter, task, dataset, split, metric). A value is paired only when every field of its protocol "
            "equals the run's; otherwise the fields that differ are named. ⚠ marks a paired difference "
            "beyond the entry's tolerance.\n",
        ]
    return "\n".join(parts)


# ------------------------------------------------------------------ long format

IDENTITY = ["backbone", "adapter", "task", "dataset", "split", "model", "weights"]
COUNTS = ["adapter_params", "backbone_params", "adapter_pct_of_backbone"]


def long_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per run: identity, primary metric, every score and baseline, counts, protocol."""
    score_names = sorted({k for r in runs for k in r["scores"]})
    baseline_names = sorted(
        {k for r in runs if isinstance(r.get("constant_baseline"), dict) for k in r["constant_baseline"]}
    )
    rows = []
    for run in runs:
        primary = run["primary"] or {}
        raw = run.get("constant_baseline")
        constant: dict[str, Any] = raw if isinstance(raw, dict) else {}
        row: dict[str, Any] = {k: run.get(k) for k in IDENTITY}
        row["primary_metric"] = primary.get("name")
        row["primary_value"] = primary.get("value")
        interval = interval_of(run)
        row["primary_low"], row["primary_high"] = interval if interval is not None else (None, None)
        row["higher_is_better"] = primary.get("higher_is_better")
        row.update({f"score_{k}": run["scores"].get(k) for k in score_names})
        row.update({f"baseline_{k}": constant.get(k) for k in baseline_names})
        row.update({k: run.get(k) for k in COUNTS})
        row.update({k: _size(_protocol(run, k)) or None for k in PROTOCOL_FIELDS})
        row["source"] = run["source"]
        rows.append(row)

    def order(row: dict[str, Any]) -> tuple[Any, ...]:
        value = _finite(row["primary_value"])
        sign = -1.0 if row["higher_is_better"] else 1.0
        key = math.inf if value is None else sign * value
        return (row["task"], row["dataset"], row["split"], key, row["backbone"], row["adapter"])

    return sorted(rows, key=order)


def to_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def to_json(board: Leaderboard) -> dict[str, Any]:
    return {
        "columns": [
            {
                "header": c.header(board.qualify),
                "task": c.task,
                "dataset": c.dataset,
                "split": c.split,
                "metric": c.metric,
                "higher_is_better": c.higher_is_better,
                "constant_baseline": board.baseline.get(c),
            }
            for c in board.columns
        ],
        "leaderboard": [
            {
                "backbone": row.backbone,
                "adapter": row.adapter,
                "model": row.first("model"),
                "weights": row.first("weights"),
                "backbone_params": row.first("backbone_params"),
                "adapter_params": {r["task"]: r.get("adapter_params") for r in row.runs},
                "scores": {c.header(board.qualify): row.values.get(c) for c in board.columns},
                "intervals": {c.header(board.qualify): list(row.intervals[c]) for c in row.intervals},
                "mean_rank": row.mean_rank,
            }
            for row in board.rows
        ],
        "runs": board.runs,
        "skipped": board.skipped,
        "published": board.published,
        "controls": margins(board),
    }


# ------------------------------------------------------------------ published values


def published_matches(runs: list[dict[str, Any]], entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each (run, entry) that scores the same thing: paired (the published value beside maxa's) when
    every protocol field matches, otherwise listed unpaired with the fields that differ."""
    matches = []
    for run in runs:
        primary = run.get("primary") or {}
        value = _finite(run["scores"].get(primary.get("name"))) if primary else None
        for entry in entries:
            if value is None or not same_measurement(run, entry):
                continue
            differing = differences(run, entry)
            published = float(entry["value"]) * float(entry["scale"])
            interval = interval_of(run)
            matches.append(
                {
                    "run": run_key(run),
                    "backbone": run["backbone"],
                    "task": run["task"],
                    "metric": entry["metric"],
                    "maxa": value,
                    "interval": list(interval) if interval else None,
                    "published": published,
                    "paired": not differing,
                    "differences": [str(d) for d in differing],
                    "difference": None if differing else value - published,
                    "tolerance": float(entry["tolerance"]),
                    "beyond_tolerance": not differing and abs(value - published) > float(entry["tolerance"]),
                    "source": entry["source"],
                    "checked": entry["checked"],
                }
            )
    return matches


def published_cells(matches: list[dict[str, Any]]) -> list[list[str]]:
    """Paired values side by side; an unpaired one says which protocol field differs instead."""
    cells = [["backbone", "task", "metric", "maxa", "published", "maxa − published", "tolerance", "source"]]
    for m in matches:
        interval = tuple(m["interval"]) if m["interval"] else None
        if m["paired"]:
            flag = " ⚠" if m["beyond_tolerance"] else ""
            compared = f"{m['difference']:+.3f}{flag}"
        else:
            compared = "not paired: " + "; ".join(m["differences"])
        cells.append(
            [
                m["backbone"],
                m["task"],
                metric_label(m["metric"]),
                format_score(m["maxa"], interval),
                format_value(m["published"]),
                compared,
                format_value(m["tolerance"]),
                m["source"],
            ]
        )
    return cells


def write_report(metrics_paths: list[Path], out_dir: Path, published: Path | None = PUBLISHED) -> str:
    """Write leaderboard.{md,csv,json} into out_dir; return the Markdown.

    `published`: the published-values file to set beside maxa's numbers (None: none); a missing file is
    refused (the default ships with maxa as package data).
    """
    if published is not None and not published.is_file():
        hint = (
            "it ships with maxa as package data: reinstall maxa"
            if published == PUBLISHED
            else "check the path"
        )
        raise MaxaError(f"published values {published} do not exist; {hint}")
    runs, skipped = load_runs(metrics_paths)
    board = build_leaderboard(runs, skipped)
    if published is not None:
        board.published = published_matches(runs, load_published(published))
    markdown = to_markdown(board)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "leaderboard.md").write_text(markdown)
    (out_dir / "leaderboard.csv").write_text(to_csv(long_rows(runs)))
    (out_dir / "leaderboard.json").write_text(json.dumps(to_json(board), indent=2) + "\n")
    return markdown
