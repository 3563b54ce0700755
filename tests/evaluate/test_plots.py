"""Tests for evaluate/plots.py: per-task bar charts, training-loss curves and their `dvc plots` data."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from maxa.evaluate.plots import backbone_colors, bar_charts, loss_curves, slug, smooth
from tests.kit.records import checkpoint_meta, report_run


def _run(backbone: str, task: str, value: float, higher: bool = True, **extra: Any) -> dict[str, Any]:
    metrics = {
        "backbone": backbone,
        "task": task,
        "adapter": "maxa",
        "dataset": "synthetic",
        "split": "val",
        "scores": {"m": value},
        "primary": {"name": "m", "value": value, "higher_is_better": higher},
        "constant_baseline": {"m": 0.1},
        **extra,
    }
    return report_run(metrics, f"{backbone}-{task}.json")


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.heavy
def test_bar_chart_per_task_with_data_sorted_best_first(tmp_path: Path) -> None:
    runs = [
        _run("vit", "semantic", 0.3),
        _run("cnn", "semantic", 0.6),
        _run("vit", "depth", 0.9, higher=False),
        _run("cnn", "depth", 0.7, higher=False),
        _run("rnd", "depth", 1.2, higher=False),
    ]
    written = bar_charts(runs, tmp_path / "plots", tmp_path / "data")
    names = sorted(p.relative_to(tmp_path).as_posix() for p in written)
    assert names == [
        "data/scores/depth_synthetic.csv",
        "data/scores/semantic_synthetic.csv",
        "plots/bar_depth_synthetic.png",
        "plots/bar_semantic_synthetic.png",
    ]
    depth = _rows(tmp_path / "data/scores/depth_synthetic.csv")
    assert [r["run"] for r in depth] == ["cnn", "vit", "rnd"]  # lower RMSE first
    assert [float(r["value"]) for r in depth] == [0.7, 0.9, 1.2]
    assert {r["constant_baseline"] for r in depth} == {"0.1"}
    semantic = _rows(tmp_path / "data/scores/semantic_synthetic.csv")
    assert [r["run"] for r in semantic] == ["cnn", "vit"]
    pixels = _png(tmp_path / "plots/bar_depth_synthetic.png")
    assert pixels.shape[0] > 200 and pixels.shape[1] > 300
    assert pixels.std() > 10  # bars, text: not a blank canvas


def test_bar_chart_names_datasets_when_a_task_has_several(tmp_path: Path) -> None:
    runs = [_run("vit", "semantic", 0.3), _run("vit", "semantic", 0.4, dataset="voc")]
    written = bar_charts(runs, tmp_path, None)
    assert sorted(p.name for p in written) == [
        "bar_semantic_synthetic_val_m.png",
        "bar_semantic_voc_val_m.png",
    ]


def test_bar_labels_name_adapters_when_mixed(tmp_path: Path) -> None:
    runs = [_run("vit", "semantic", 0.3), _run("vit", "semantic", 0.5, adapter="linear")]
    bar_charts(runs, tmp_path / "plots", tmp_path / "data")
    assert [r["run"] for r in _rows(tmp_path / "data/scores/semantic_synthetic.csv")] == [
        "vit (linear)",
        "vit (maxa)",
    ]


def test_loss_curves_png_per_task_csv_per_run(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    metas = [
        checkpoint_meta("vit", "semantic", list(np.exp(-np.linspace(0, 3, 120)) + rng.uniform(0, 0.05, 120))),
        checkpoint_meta("cnn", "semantic", [1.0, 0.8, 0.5]),
        checkpoint_meta("cnn", "depth", [2.0, 1.0]),
        checkpoint_meta("old", "depth", []),  # nothing to draw
    ]
    written = loss_curves(metas, tmp_path / "plots", tmp_path / "data")
    names = sorted(p.relative_to(tmp_path).as_posix() for p in written)
    assert names == [
        "data/loss/cnn_depth_maxa.csv",
        "data/loss/cnn_semantic_maxa.csv",
        "data/loss/vit_semantic_maxa.csv",
        "plots/loss_depth.png",
        "plots/loss_semantic.png",
    ]
    rows = _rows(tmp_path / "data/loss/vit_semantic_maxa.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, 121))
    np.testing.assert_allclose([float(r["loss"]) for r in rows], metas[0].losses)
    assert _png(tmp_path / "plots/loss_semantic.png").std() > 10


def test_smooth_is_a_trailing_mean() -> None:
    values = np.arange(10, dtype=float) ** 2
    out = smooth(values, 3)
    expected = [values[max(0, i - 2) : i + 1].mean() for i in range(10)]
    np.testing.assert_allclose(out, expected)
    np.testing.assert_array_equal(smooth(values, 1), values)
    assert smooth([], 5).size == 0


def test_colors_stable_and_distinct() -> None:
    first = backbone_colors(["vit", "cnn", "rnd"])
    again = backbone_colors(["rnd", "vit", "cnn", "vit"])
    assert first == again
    assert len(set(first.values())) == 3


def test_slug_is_file_name_safe() -> None:
    assert slug("semantic", "coco/stuff", "") == "semantic_coco-stuff"
    assert slug("vit_b", "a b?c") == "vit_b_a-b-c"


def test_bar_chart_draws_error_bars_from_intervals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bars get the interval as asymmetric error bars (none without intervals); the CSV has them."""
    from matplotlib.axes import Axes

    drawn: list[Any] = []
    bar = Axes.bar

    def recording(self: Axes, *args: Any, **kwargs: Any) -> Any:
        drawn.append(kwargs.get("yerr"))
        return bar(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "bar", recording)
    with_ci = [
        _run("a", "semantic", 0.5, uncertainty={"m": {"mean": 0.5, "low": 0.3, "high": 0.8}}),
        _run("b", "semantic", 0.4),
    ]
    bar_charts(with_ci, tmp_path / "ci", tmp_path / "ci_data")
    bar_charts([_run("a", "semantic", 0.5), _run("b", "semantic", 0.4)], tmp_path / "plain")
    rows = _rows(tmp_path / "ci_data/scores/semantic_synthetic.csv")
    assert [(r["run"], r["low"], r["high"]) for r in rows] == [("a", "0.3", "0.8"), ("b", "", "")]
    assert np.allclose(drawn[0], [[0.2, 0.0], [0.3, 0.0]])  # below / above each bar, best first
    assert drawn[1] is None
