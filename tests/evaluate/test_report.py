"""Tests for `maxa report` (evaluate/report.py): metrics JSON files -> leaderboard.{md,csv,json}."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from maxa.core.errors import MaxaError
from maxa.evaluate.report import build_leaderboard, load_runs, write_report
from tests.kit.records import report_run


def _record(
    backbone: str, task: str, params: int, pct: float, iterations: int, **fields: Any
) -> dict[str, Any]:
    """A metrics file of a MAXA run on synthetic/val: the fields every record here shares, `fields` (the
    scores, in either format) between its names and its sizes."""
    return {
        "backbone": backbone,
        "model": f"{backbone}_model",
        "weights": "random-init",
        "task": task,
        "adapter": "maxa",
        "dataset": "synthetic",
        "split": "val",
        **fields,
        "adapter_params": params,
        "backbone_params": 5717416,
        "adapter_pct_of_backbone": pct,
        "protocol": {
            "input_size": [128, 128],
            "feature_grid": [8, 8],
            "layer": "layer_11",
            "iterations": iterations,
        },
    }


def _legacy(backbone: str, miou: float, **overrides: Any) -> dict[str, Any]:
    """A semantic metrics file as written before `scores`/`primary` existed."""
    scores = {
        "miou": miou,
        "pixel_accuracy": 0.5 + miou / 2,
        "ce": 1.25,
        "per_class_iou": {"a": miou, "b": None},
    }
    baseline = {"miou": 0.1111, "pixel_accuracy": 0.4, "ce": 1.5}
    return {
        **_record(backbone, "semantic", 12345, 0.2159, 400, **scores, constant_baseline=baseline),
        **overrides,
    }


def _scored(
    backbone: str, task: str, name: str, value: float, higher: bool, **overrides: Any
) -> dict[str, Any]:
    """A metrics file in the current contract: `scores` and `primary`."""
    scores = {"scores": {name: value, "extra": value * 2}}
    scores["primary"] = {"name": name, "value": value, "higher_is_better": higher}
    scores["constant_baseline"] = {name: 1.5 if not higher else 0.05}
    return {**_record(backbone, task, 20000, 0.35, 300, **scores), **overrides}


def _write(root: Path, *all_metrics: Any) -> list[Path]:
    paths = []
    for i, metrics in enumerate(all_metrics):
        name = (
            f"{metrics['backbone']}_{metrics['task']}"
            if isinstance(metrics, dict) and "task" in metrics
            else "x"
        )
        path = root / "metrics" / f"{i}_{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(metrics))
        paths.append(path)
    return paths


def _table(markdown: str) -> list[list[str]]:
    """The leaderboard table (the first Markdown table) as cells."""
    lines = markdown.split("\n\n")[1].splitlines()
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines if not set(line) <= {"|", "-"}]


@pytest.fixture
def matrix(tmp_path: Path) -> tuple[str, Path]:
    """Three backbones x two tasks; semantic in the old format, depth (lower is better) in the new."""
    paths = _write(
        tmp_path,
        _legacy("vit", 0.25),
        _legacy("convnext", 0.40),
        _legacy("resnet", 0.31),
        _scored("vit", "depth", "rmse", 0.90, higher=False),
        _scored("convnext", "depth", "rmse", 1.10, higher=False),
        _scored("resnet", "depth", "rmse", 0.70, higher=False),
    )
    out = tmp_path / "reports"
    return write_report(paths, out), out


def test_writes_all_three_files(matrix: tuple[str, Path]) -> None:
    markdown, out = matrix
    assert sorted(p.name for p in out.iterdir()) == ["leaderboard.csv", "leaderboard.json", "leaderboard.md"]
    assert (out / "leaderboard.md").read_text() == markdown


def test_wide_table_one_row_per_backbone_one_column_per_task(matrix: tuple[str, Path]) -> None:
    markdown, _ = matrix
    header, *rows = _table(markdown)
    assert "semantic mIoU ↑" in header and "depth RMSE ↓" in header
    assert "adapter params" in header and "backbone params" in header and "mean rank" in header
    by_name = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    assert set(by_name) == {"vit", "convnext", "resnet", "*constant baseline*"}
    # Best per column in bold: highest mIoU, lowest RMSE.
    assert by_name["convnext"]["semantic mIoU ↑"] == "**0.400**"
    assert by_name["resnet"]["depth RMSE ↓"] == "**0.700**"
    assert by_name["vit"]["semantic mIoU ↑"] == "0.250"
    assert by_name["convnext"]["depth RMSE ↓"] == "1.100"
    # Mean rank: resnet (2, 1) = 1.5, convnext (1, 3) = 2.0, vit (3, 2) = 2.5; rows sorted by it.
    assert [r[0] for r in rows[:3]] == ["resnet", "convnext", "vit"]
    assert by_name["resnet"]["mean rank"] == "1.5"
    assert by_name["vit"]["mean rank"] == "2.5"
    assert by_name["*constant baseline*"]["semantic mIoU ↑"] == "0.111"
    assert by_name["*constant baseline*"]["depth RMSE ↓"] == "1.500"
    # Adapter size differs per task: shown as a range; backbone size once.
    assert by_name["vit"]["adapter params"] == "12.3k–20.0k"
    assert by_name["vit"]["backbone params"] == "5.72M"
    assert by_name["vit"]["input"] == "128x128"


def test_protocol_section_records_settings(matrix: tuple[str, Path]) -> None:
    markdown, _ = matrix
    protocol = markdown.split("## Protocol")[1]
    lines = [line for line in protocol.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {
        r[0]: dict(zip(header, r, strict=True))
        for r in ([c.strip() for c in x.strip("|").split("|")] for x in lines[1:])
    }
    assert rows["semantic mIoU ↑"]["iterations"] == "400"
    assert rows["depth RMSE ↓"]["iterations"] == "300"
    assert rows["depth RMSE ↓"]["split"] == "val"
    assert rows["depth RMSE ↓"]["layer"] == "layer_11"
    assert rows["depth RMSE ↓"]["input"] == "128x128"
    assert rows["depth RMSE ↓"]["runs"] == "3"


def test_long_csv_one_row_per_run_best_first(matrix: tuple[str, Path]) -> None:
    _, out = matrix
    rows = list(csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())))
    assert len(rows) == 6
    assert [(r["task"], r["backbone"]) for r in rows] == [
        ("depth", "resnet"),
        ("depth", "vit"),
        ("depth", "convnext"),
        ("semantic", "convnext"),
        ("semantic", "resnet"),
        ("semantic", "vit"),
    ]
    first = rows[0]
    assert first["primary_metric"] == "rmse" and float(first["primary_value"]) == 0.7
    assert first["higher_is_better"] == "False"
    assert float(first["score_extra"]) == pytest.approx(1.4)
    assert first["score_miou"] == ""  # depth has no mIoU
    semantic = rows[3]
    assert float(semantic["score_miou"]) == 0.4 and float(semantic["score_ce"]) == 1.25
    assert float(semantic["baseline_miou"]) == 0.1111
    assert semantic["adapter_params"] == "12345" and semantic["iterations"] == "400"
    assert semantic["input_size"] == "128x128" and semantic["feature_grid"] == "8x8"
    assert semantic["source"].endswith("1_convnext_semantic.json")


def test_json_holds_table_and_runs(matrix: tuple[str, Path]) -> None:
    _, out = matrix
    data = json.loads((out / "leaderboard.json").read_text())
    assert [c["header"] for c in data["columns"]] == ["depth RMSE ↓", "semantic mIoU ↑"]
    assert data["columns"][0]["higher_is_better"] is False
    assert data["columns"][1]["constant_baseline"] == 0.1111
    assert [r["backbone"] for r in data["leaderboard"]] == ["resnet", "convnext", "vit"]
    assert data["leaderboard"][0]["scores"] == {"depth RMSE ↓": 0.7, "semantic mIoU ↑": 0.31}
    assert len(data["runs"]) == 6
    legacy = next(r for r in data["runs"] if r["backbone"] == "vit" and r["task"] == "semantic")
    assert legacy["primary"] == {"name": "miou", "value": 0.25, "higher_is_better": True}
    assert legacy["per_class_iou"] == {"a": 0.25, "b": None}


def test_normalize_derives_scores_of_old_files() -> None:
    run = report_run(_legacy("vit", 0.5), "a.json")
    assert run["scores"] == {"miou": 0.5, "pixel_accuracy": 0.75, "ce": 1.25}
    assert run["primary"]["name"] == "miou"
    current = report_run(_scored("vit", "depth", "rmse", 0.8, higher=False), "b.json")
    assert current["scores"] == {"rmse": 0.8, "extra": 1.6}
    assert current["primary"] == {"name": "rmse", "value": 0.8, "higher_is_better": False}


def test_missing_keys_leave_cells_empty(tmp_path: Path) -> None:
    bare = {"backbone": "vit", "task": "semantic", "miou": 0.2}
    markdown = write_report(_write(tmp_path, bare), tmp_path / "out")
    header, row = _table(markdown)
    cells = dict(zip(header, row, strict=True))
    assert cells["semantic mIoU ↑"] == "0.200"  # one row: nothing to bold
    assert cells["adapter params"] == "" and cells["input"] == ""
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "leaderboard.csv").read_text())))
    assert rows[0]["dataset"] == "?" and rows[0]["iterations"] == ""


def test_run_without_primary_only_in_long_format(tmp_path: Path) -> None:
    odd = {"backbone": "vit", "task": "mystery", "adapter": "maxa", "scores": {"q": 3.0}}
    paths = _write(tmp_path, _legacy("vit", 0.3), odd)
    markdown = write_report(paths, tmp_path / "out")
    assert not any("mystery" in cell for cell in _table(markdown)[0])
    assert "No primary metric" in markdown and paths[1].name in markdown
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "leaderboard.csv").read_text())))
    assert {r["task"] for r in rows} == {"semantic", "mystery"}
    assert next(r for r in rows if r["task"] == "mystery")["score_q"] == "3.0"


def test_nan_primary_is_blank_not_best(tmp_path: Path) -> None:
    paths = _write(
        tmp_path,
        _legacy("vit", 0.3),
        _scored("cnn", "semantic", "miou", math.nan, higher=True, adapter="maxa"),
    )
    header, *rows = _table(write_report(paths, tmp_path / "out"))
    cells = {r[0]: dict(zip(header, r, strict=True)) for r in rows}
    assert cells["cnn"]["semantic mIoU ↑"] == ""
    assert cells["vit"]["semantic mIoU ↑"] == "**0.300**"


def test_ties_are_all_bold(tmp_path: Path) -> None:
    paths = _write(tmp_path, _legacy("a", 0.5), _legacy("b", 0.5), _legacy("c", 0.1))
    header, *rows = _table(write_report(paths, tmp_path / "out"))
    col = header.index("semantic mIoU ↑")
    assert [r[col] for r in rows[:3]] == ["**0.500**", "**0.500**", "0.100"]


def test_values_that_round_alike_are_all_bold(tmp_path: Path) -> None:
    paths = _write(tmp_path, _legacy("a", 0.4004), _legacy("b", 0.4001), _legacy("c", 0.39))
    header, *rows = _table(write_report(paths, tmp_path / "out"))
    col = header.index("semantic mIoU ↑")
    assert [r[col] for r in rows[:3]] == ["**0.400**", "**0.400**", "0.390"]


def test_adapters_are_separate_rows(tmp_path: Path) -> None:
    paths = _write(tmp_path, _legacy("vit", 0.5), _legacy("vit", 0.3, adapter="linear"))
    board = build_leaderboard(load_runs(paths)[0])
    assert [(r.backbone, r.adapter) for r in board.rows] == [("vit", "maxa"), ("vit", "linear")]
    assert len(board.columns) == 1


def test_local_tests_fill_the_row_of_the_backbones_maxa_probe(tmp_path: Path) -> None:
    """Parameter-free columns belong to the backbone: in its maxa row (else its first trained adapter's),
    never a row of their own beside it; a backbone with local tests only keeps a `none` row."""
    knn = {"adapter": "none", "model": "m"}
    runs = [
        _scored("vit", "semantic", "miou", 0.5, True, adapter="linear"),
        _scored("vit", "semantic", "miou", 0.6, True),
        _scored("vit", "knn", "miou", 0.3, True, **knn),
        _scored("cnn", "semantic", "miou", 0.4, True, adapter="linear"),
        _scored("cnn", "knn", "miou", 0.2, True, **knn),
        _scored("solo", "knn", "miou", 0.1, True, **knn),
    ]
    for run in runs[:2]:  # the demo: probes record the protocol name params.yaml gives, local tests none
        run["protocol"]["name"] = "maxa"
    board = build_leaderboard(load_runs(_write(tmp_path, *runs))[0])
    knn_column = next(c for c in board.columns if c.task == "knn")
    holding = sorted((r.backbone, r.adapter) for r in board.rows if knn_column in r.values)
    assert holding == [("cnn", "linear"), ("solo", "none"), ("vit", "maxa")]
    assert len(board.rows) == 4  # vit maxa, vit linear, cnn linear, solo


def test_several_datasets_name_them_in_headers(tmp_path: Path) -> None:
    paths = _write(tmp_path, _legacy("vit", 0.5), _legacy("vit", 0.4, dataset="voc"))
    header = _table(write_report(paths, tmp_path / "out"))[0]
    assert "semantic mIoU ↑ (synthetic/val)" in header and "semantic mIoU ↑ (voc/val)" in header


def test_files_that_are_not_runs_are_skipped_and_named(tmp_path: Path) -> None:
    paths = _write(tmp_path, _legacy("vit", 0.5), {"runs": []}, {"hello": "world"})
    markdown = write_report(paths, tmp_path / "out")
    assert "Skipped:" in markdown and paths[1].name in markdown and paths[2].name in markdown
    with pytest.raises(MaxaError, match="no metrics files") as info:
        write_report(paths[1:], tmp_path / "out2")
    assert paths[1].name in str(info.value)


def test_files_the_metrics_reader_refuses_stop_the_report(tmp_path: Path) -> None:
    """report reads through read_metrics: a newer format or a non-object is refused, naming the file."""
    good = _write(tmp_path, _legacy("vit", 0.5))
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps(_legacy("convnext", 0.4, format=999)))
    with pytest.raises(MaxaError, match=r"newer\.json has format 999.*upgrade maxa"):
        write_report([*good, newer], tmp_path / "out")
    listed = tmp_path / "listed.json"
    listed.write_text("[1, 2, 3]")
    with pytest.raises(MaxaError, match=r"listed\.json must hold one JSON object"):
        write_report([*good, listed], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_duplicate_runs_name_both_files(tmp_path: Path) -> None:
    paths = _write(tmp_path, _legacy("vit", 0.5), _legacy("vit", 0.4))
    with pytest.raises(MaxaError, match="remove one") as info:
        write_report(paths, tmp_path / "out")
    assert paths[0].name in str(info.value) and paths[1].name in str(info.value)


def test_unreadable_json_names_file(tmp_path: Path) -> None:
    good = _write(tmp_path, _legacy("vit", 0.2))
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(MaxaError, match=r"broken\.json"):
        write_report([*good, bad], tmp_path / "out")
    with pytest.raises(MaxaError, match=r"missing\.json"):
        write_report([tmp_path / "missing.json"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_no_metrics_files_refused(tmp_path: Path) -> None:
    with pytest.raises(MaxaError, match="no metrics files"):
        write_report([], tmp_path / "out")


def _with_interval(backbone: str, value: float, low: float, high: float) -> dict[str, Any]:
    record = {"mean": value, "std": 0.01, "low": low, "high": high, "n": 3, "method": "seeds", "level": 0.95}
    run = _scored(backbone, "semantic", "miou", value, True, uncertainty={"miou": record})
    run["protocol"]["selection"] = {
        "swept": {"lrs": [0.001, 0.003], "seeds": [0, 1, 2], "layers": ["-1"]},
        "chosen": {"lr": 0.001, "layer": "-1"},
        "val_fraction": 0.1,
        "val_seed": 0,
    }
    return run


def test_intervals_print_as_mean_plus_minus_and_overlaps_with_the_best_are_bold(tmp_path: Path) -> None:
    runs = [
        _with_interval("best", 0.60, 0.55, 0.65),
        _with_interval("close", 0.56, 0.50, 0.62),  # overlaps the best's interval
        _with_interval("far", 0.40, 0.35, 0.45),
    ]
    markdown = write_report(_write(tmp_path, *runs), tmp_path / "out", published=None)
    lines = {
        line.split(" | ")[0].strip("| "): line for line in markdown.splitlines() if line.startswith("| ")
    }
    assert "**0.600 ± 0.050**" in lines["best"]
    assert "**0.560 ± 0.060**" in lines["close"]
    assert "0.400 ± 0.050" in lines["far"] and "**" not in lines["far"]
    assert "lr 0.001/0.003 -> 0.001; 3 seeds; val 10% (seed 0)" in markdown
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out/leaderboard.csv").read_text())))
    assert {r["backbone"]: (r["primary_low"], r["primary_high"]) for r in rows}["far"] == ("0.35", "0.45")


PROTOCOL = (
    "{input_size: 128, label_size: [64, 64], layer: layer_11, norm: false, iterations: 300, eval_start: 0, "
    "eval_samples: 32}"
)


def _entry(source: str, model: str, value: float, **protocol: Any) -> str:
    fields = yaml.safe_load(PROTOCOL) | protocol
    return (
        f"  - {{source: {source!r}, checked: test, models: [{model}], weights: random-init, adapter: maxa, "
        f"task: semantic, dataset: synthetic, split: val, metric: miou, value: {value}, scale: 0.01, "
        f"tolerance: 0.05, protocol: {json.dumps(fields)}}}\n"
    )


def _full(run: dict[str, Any]) -> dict[str, Any]:
    run["protocol"].update(label_size=[64, 64], norm=False, eval_start=0, eval_samples=32)
    return run


def test_published_values_pair_only_where_every_protocol_field_matches(tmp_path: Path) -> None:
    published = tmp_path / "published.yaml"
    published.write_text(
        "entries:\n"
        + _entry("Paper T1", "vit_model", 50.0)
        + _entry("Paper T2", "vit_model", 90.0, layer="layer_5")
        + _entry("Paper T3", "cnn_model", 20.0)
        + _entry("Paper T4", "other_model", 20.0)
    )
    runs = [
        _full(_scored("vit", "semantic", "miou", 0.53, True)),
        _full(_scored("cnn", "semantic", "miou", 0.40, True)),
    ]
    markdown = write_report(_write(tmp_path, *runs), tmp_path / "out", published=published)
    section = markdown.split("## Published values")[1]
    assert "Paper T1" in section and "+0.030 |" in section  # within tolerance: no mark
    assert "not paired: layer: maxa layer_11, published layer_5" in section  # T2 names the field
    assert "Paper T3" in section and "+0.200 ⚠" in section
    assert "Paper T4" not in section  # another model: not the same measurement at all
    board = json.loads((tmp_path / "out/leaderboard.json").read_text())
    assert [(m["source"], m["run"], m["paired"], m["beyond_tolerance"]) for m in board["published"]] == [
        ("Paper T1", "vit/maxa/semantic", True, False),  # run_key: no run_id, so backbone/adapter/task
        ("Paper T2", "vit/maxa/semantic", False, False),
        ("Paper T3", "cnn/maxa/semantic", True, True),
    ]
    published.write_text("entries:\n  - {source: x}\n")
    with pytest.raises(MaxaError, match="entry 0 lacks"):
        write_report(_write(tmp_path, *runs), tmp_path / "out", published=published)


def test_shipped_published_values_load() -> None:
    from maxa.evaluate.published import PUBLISHED, load_published

    entries = load_published(PUBLISHED)
    assert any(e["metric"] == "J&F-Mean" for e in entries) and all(e["scale"] > 0 for e in entries)


def test_shipped_published_values_are_package_data() -> None:
    """A non-editable install carries published.yaml where report looks for it (maxa/pipelines/paper/)."""
    import tomllib

    from maxa.evaluate.report import PUBLISHED

    root = Path(__file__).resolve().parents[2]
    tool = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    package = "maxa.pipelines.paper"  # a declared package (no setuptools warning), holding only data
    assert package in tool["packages"]
    folder = tool["package-dir"][package]
    shipped = [root / folder / name for name in tool["package-data"][package]]
    assert PUBLISHED.relative_to(PUBLISHED.parents[2]).as_posix() == "pipelines/paper/published.yaml"
    assert root / folder / "published.yaml" in shipped and all(p.is_file() for p in shipped)


def test_missing_published_values_are_refused_in_one_line(tmp_path: Path, monkeypatch: Any) -> None:
    import maxa.evaluate.report as report

    paths = _write(tmp_path, _legacy("vit", 0.25))
    gone = tmp_path / "gone.yaml"
    with pytest.raises(MaxaError, match=r"gone\.yaml do not exist; check the path"):
        write_report(paths, tmp_path / "out", published=gone)
    monkeypatch.setattr(report, "PUBLISHED", gone)  # the default, as a broken install would lack it
    with pytest.raises(MaxaError, match=r"gone\.yaml do not exist; it ships with maxa as package data"):
        write_report(paths, tmp_path / "out", published=gone)
    assert not (tmp_path / "out").exists()


def test_a_run_whose_primary_metric_is_undefined_is_named_with_the_reason(tmp_path: Path) -> None:
    """A null primary (e.g. AP_large on a split without large objects) gets no cell, but the report says
    which run it is and why, instead of dropping the task silently."""
    why = "no ground-truth box in COCO's large range (area >= 9216 original-image pixels²)"
    undefined = _scored("vit", "centers", "ap_large", 0.1, higher=True)
    undefined["scores"]["ap_large"] = undefined["primary"]["value"] = None
    undefined["nulls"] = {"primary.value": why}
    paths = _write(tmp_path, _legacy("vit", 0.25), undefined)
    markdown = write_report(paths, tmp_path / "reports")
    header, *_ = _table(markdown)
    assert not any("AP" in cell for cell in header)
    note = next(line for line in markdown.splitlines() if line.startswith("No value to rank"))
    assert str(paths[1]) in note and f"ap_large: {why}" in note


def test_an_unnamed_backbone_joins_its_named_row(tmp_path: Path) -> None:
    """k-NN from params.yaml's `vit_tiny` and propagation on a store extracted with `--model` alone
    (name = the timm model) are one backbone: one row, under the params name."""
    knn = _scored("vit_tiny", "knn", "miou", 0.3, True, model="vit_tiny_patch16_224", adapter="none")
    prop = _scored(
        "vit_tiny_patch16_224",
        "propagation",
        "j_and_f",
        0.4,
        True,
        model="vit_tiny_patch16_224",
        adapter="none",
    )
    trained = _scored("vit_tiny", "semantic", "miou", 0.5, True, model="vit_tiny_patch16_224")
    other = _scored("resnet18", "knn", "miou", 0.2, True, model="resnet18", adapter="none")  # no named twin
    write_report(_write(tmp_path, knn, prop, trained, other), tmp_path / "out", published=None)
    board = json.loads((tmp_path / "out/leaderboard.json").read_text())
    rows = sorted((r["backbone"], r["adapter"]) for r in board["leaderboard"])
    assert rows == [("resnet18", "none"), ("vit_tiny", "maxa")]  # probes and local tests: one row
    vit = next(r for r in board["leaderboard"] if r["backbone"] == "vit_tiny")
    assert {k: v for k, v in vit["scores"].items() if v is not None} == {
        "knn mIoU ↑": 0.3,
        "propagation j_and_f ↑": 0.4,
        "semantic mIoU ↑": 0.5,
    }
    two_names = _scored("vit_b", "knn", "miou", 0.3, True, model="m", adapter="none")
    named_again = _scored("vit_c", "knn", "miou", 0.3, True, model="m", adapter="none", split="test")
    unnamed = _scored("m", "propagation", "j_and_f", 0.4, True, model="m", adapter="none")
    write_report(_write(tmp_path, two_names, named_again, unnamed), tmp_path / "o2", published=None)
    board = json.loads((tmp_path / "o2/leaderboard.json").read_text())
    assert sorted(r["backbone"] for r in board["leaderboard"]) == ["m", "vit_b", "vit_c"]  # ambiguous: kept


def test_protocol_selection_names_each_backbones_choice(tmp_path: Path) -> None:
    a = _with_interval("vit", 0.6, 0.55, 0.65)
    b = _with_interval("cnn", 0.5, 0.45, 0.55)
    b["protocol"]["selection"]["chosen"]["lr"] = 0.003
    markdown = write_report(_write(tmp_path, a, b), tmp_path / "out", published=None)
    protocol = markdown.split("## Protocol")[1]
    assert "vit: lr 0.001/0.003 -> 0.001; 3 seeds" in protocol
    assert "cnn: lr 0.001/0.003 -> 0.003; 3 seeds" in protocol
    same = _with_interval("cnn", 0.5, 0.45, 0.55)
    markdown = write_report(_write(tmp_path / "s", a, same), tmp_path / "o2", published=None)
    assert "vit:" not in markdown.split("## Protocol")[1]  # one text when every backbone chose alike


def test_each_row_names_its_protocol_and_protocols_are_not_mixed(tmp_path: Path) -> None:
    def named(value: float, name: str) -> dict[str, Any]:
        run = _scored("vit", "semantic", "miou", value, True)
        run["protocol"]["name"] = name
        return run

    markdown = write_report(
        _write(tmp_path / "runs", named(0.5, "deap"), named(0.4, "equal-grid")),
        tmp_path / "out",
        published=None,
    )
    board = json.loads((tmp_path / "out/leaderboard.json").read_text())
    lines = [line for line in markdown.splitlines() if line.startswith("| vit ")]
    assert len(lines) == 2  # one row per protocol, never one row averaging both
    assert any("| deap |" in line and "0.500" in line for line in lines)
    assert any("| equal-grid |" in line and "0.400" in line for line in lines)
    assert len(board["runs"]) == 2


def test_boundary_precision_and_recall_sit_beside_its_iou(tmp_path: Path) -> None:
    """IoU 0.03 alone cannot say whether few boundaries were found precisely (issue 20's 128-px labels:
    precision 0.51, recall 0.03): both sit in their own cells after the boundary column, unranked."""
    loose = _scored("vit", "boundary", "iou", 0.03, True)
    loose["scores"].update(precision=0.51, recall=0.0312)
    other = _scored("cnn", "boundary", "iou", 0.2, True)
    other["scores"].update(precision=0.25, recall=0.5)
    semantic = _scored("vit", "semantic", "miou", 0.5, True)
    header, *rows = _table(write_report(_write(tmp_path, loose, other, semantic), tmp_path / "out"))
    at = header.index("boundary IoU ↑")
    assert header[at + 1 : at + 3] == ["boundary precision", "boundary recall"]
    cells = {row[0]: row for row in rows}
    assert cells["vit"][at : at + 3] == ["0.030", "0.510", "0.031"]
    assert cells["cnn"][at : at + 3] == ["**0.200**", "0.250", "0.500"]
    assert cells["*constant baseline*"][at + 1 : at + 3] == ["", ""]
    assert header[-1] == "mean rank" and cells["vit"][-1] == "1.5"  # ranks: boundary and semantic only
