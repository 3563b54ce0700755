"""PNG plots people would rather look at than read, and the CSV data `dvc plots` renders.

- per task, a bar chart of the primary metric across backbones (constant baseline dashed; error bars
  where the run has a 95% interval: over seeds or bootstrapped over test images);
- per task, the training-loss curves of every backbone (from the checkpoints' `losses`).

Figures are built with matplotlib's object API (`Figure`, Agg canvas): no pyplot state, no display.
Qualitative panels and PCA maps live in `qualitative.py` and `pca.py` and share the style helpers here.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from maxa.core.checkpoint_meta import CheckpointMeta
from maxa.evaluate.report import Column, build_leaderboard, format_value, metric_label

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 120


def new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, facecolor="white")
    return path


def slug(*parts: str) -> str:
    """A file-name-safe join of the parts."""
    return "_".join(re.sub(r"[^A-Za-z0-9._-]+", "-", p).strip("-") for p in parts if p)


def backbone_colors(names: Iterable[str]) -> dict[str, Any]:
    """One stable colour per backbone (sorted names -> tab10/tab20), the same in every figure."""
    from matplotlib import colormaps

    ordered = sorted(set(names))
    cmap = colormaps["tab10" if len(ordered) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(ordered)}


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


# ------------------------------------------------------------------ bar charts


def _run_label(backbone: str, adapter: str, adapters: set[str]) -> str:
    return backbone if len(adapters) <= 1 else f"{backbone} ({adapter})"


def bar_charts(runs: list[dict[str, Any]], out_dir: Path, data_dir: Path | None = None) -> list[Path]:
    """One PNG per leaderboard column (task x dataset split), bars sorted best first; CSVs for DVC."""
    board = build_leaderboard(runs)
    adapters = {r.adapter for r in board.rows}
    colors = backbone_colors(r.backbone for r in board.rows)
    per_task = {c.task: sum(o.task == c.task for o in board.columns) for c in board.columns}
    written = []
    for column in board.columns:
        entries = [(row, row.values[column]) for row in board.rows if column in row.values]
        entries.sort(key=lambda e: -e[1] if column.higher_is_better else e[1])
        baseline = board.baseline.get(column)
        name = (
            slug(column.task, column.dataset)
            if per_task[column.task] == 1
            else slug(column.task, column.dataset, column.split, column.metric)
        )
        labels = [_run_label(row.backbone, row.adapter, adapters) for row, _ in entries]
        written.append(_bar_figure(column, labels, entries, baseline, colors, out_dir / f"bar_{name}.png"))
        if data_dir is not None:
            rows = [
                [
                    label,
                    row.backbone,
                    row.adapter,
                    value,
                    *row.intervals.get(column, ("", "")),
                    "" if baseline is None else baseline,
                ]
                for label, (row, value) in zip(labels, entries, strict=True)
            ]
            header = ["run", "backbone", "adapter", "value", "low", "high", "constant_baseline"]
            written.append(write_csv(data_dir / "scores" / f"{name}.csv", header, rows))
    return written


def _bar_figure(
    column: Column,
    labels: list[str],
    entries: list[tuple[Any, float]],
    baseline: float | None,
    colors: dict[str, Any],
    path: Path,
) -> Path:
    fig = new_figure(max(4.0, 0.75 * len(entries) + 2.0), 3.8)
    ax = fig.add_subplot()
    values = [value for _, value in entries]
    x = np.arange(len(entries))
    spans = [row.intervals.get(column, (value, value)) for row, value in entries]
    yerr = np.array(
        [
            [v - low for v, (low, _) in zip(values, spans, strict=True)],
            [high - v for v, (_, high) in zip(values, spans, strict=True)],
        ]
    )
    has_err = bool(np.any(yerr > 0))
    bars = ax.bar(
        x,
        values,
        color=[colors[row.backbone] for row, _ in entries],
        edgecolor="0.2",
        linewidth=0.5,
        yerr=np.clip(yerr, 0, None) if has_err else None,
        capsize=4 if has_err else 0,
        error_kw={"elinewidth": 1.0, "ecolor": "0.15"},
    )
    ax.bar_label(bars, labels=[format_value(v) for v in values], padding=2, fontsize=8)
    if baseline is not None:
        ax.axhline(baseline, color="0.25", linestyle="--", linewidth=1.2)
        ax.annotate(
            f"constant baseline {format_value(baseline)}",
            xy=(1.0, baseline),
            xycoords=("axes fraction", "data"),
            xytext=(0, 3),
            textcoords="offset points",
            ha="right",
            va="bottom",
            fontsize=8,
            color="0.25",
        )
    ax.set_xticks(
        x, labels, rotation=30 if len(entries) > 3 else 0, ha="right" if len(entries) > 3 else "center"
    )
    arrow = "↑ higher is better" if column.higher_is_better else "↓ lower is better"
    ax.set_ylabel(f"{metric_label(column.metric)} ({arrow})")
    ax.set_title(f"{column.task}: {metric_label(column.metric)} on {column.dataset}/{column.split}")
    top = max([*values, *(high for _, high in spans), baseline or 0.0, 0.0])
    ax.set_ylim(min(0.0, *values, *(low for low, _ in spans)), top * 1.15 if top > 0 else 1.0)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return save(fig, path)


# ------------------------------------------------------------------ training loss


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing moving average (the first points average what exists so far)."""
    data = np.asarray(values, dtype=np.float64)
    if window <= 1 or data.size == 0:
        return data
    cumsum = np.cumsum(np.insert(data, 0, 0.0))
    idx = np.arange(1, data.size + 1)
    start = np.maximum(idx - window, 0)
    return (cumsum[idx] - cumsum[start]) / (idx - start)


def loss_curves(metas: list[CheckpointMeta], out_dir: Path, data_dir: Path | None = None) -> list[Path]:
    """Per task, one PNG with every backbone's training loss; one CSV per run for `dvc plots`."""
    by_task: dict[str, list[CheckpointMeta]] = {}
    for meta in metas:
        if meta.losses:
            by_task.setdefault(meta.task, []).append(meta)
    colors = backbone_colors(m.backbone for m in metas)
    written = []
    for task, group in sorted(by_task.items()):
        adapters = {m.adapter for m in group}
        fig = new_figure(6.0, 3.8)
        ax = fig.add_subplot()
        for meta in sorted(group, key=lambda m: m.backbone):
            backbone, adapter = meta.backbone, meta.adapter
            losses = list(meta.losses)
            steps = np.arange(1, len(losses) + 1)
            color = colors[backbone]
            ax.plot(steps, losses, color=color, alpha=0.25, linewidth=0.8)
            label = _run_label(backbone, adapter, adapters)
            ax.plot(steps, smooth(losses, max(1, len(losses) // 40)), color=color, linewidth=1.8, label=label)
            if data_dir is not None:
                path = data_dir / "loss" / f"{slug(backbone, task, adapter)}.csv"
                written.append(write_csv(path, ["step", "loss"], zip(steps.tolist(), losses, strict=True)))
        positive = [v for m in group for v in m.losses if v > 0]
        if positive and max(positive) / min(positive) > 50:
            ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel("training loss")
        ax.set_title(f"{task}: training loss (faint: raw, solid: moving average)")
        ax.legend(frameon=False, fontsize=8)
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(alpha=0.3)
        written.append(save(fig, out_dir / f"loss_{slug(task)}.png"))
    return written
