"""`maxa local ...`: the parameter-free local-feature tests, run from the feature stores alone.

Registered through COMMAND_MODULES in maxa.pipelines.cli. Heavy modules (torch, the tests
themselves) are imported inside the commands so `maxa --help` stays fast.
"""

from __future__ import annotations

import json
from typing import Any

import click

from maxa.core.errors import MaxaError
from maxa.evaluate.local.config import KnnConfig, PropagationConfig, RetrievalConfig
from maxa.pipelines.errors import user_errors
from maxa.pipelines.params import load_for_stage
from maxa.pipelines.stages import STAGES

STAGE = STAGES["local"]


def _config(test: str, values: dict[str, Any]) -> Any:
    """The settings of the `local.<NAME>` entry (`--params P --run NAME`, what the generated DVC stages
    pass), with the options given on the command line over them."""

    ctx = click.get_current_context()
    params_file, run = values.pop("params_file"), values.pop("run")
    path = STAGE.selected(params_file, run)
    base = None
    if path is not None and run is not None:
        entry = STAGE.entry(load_for_stage(path), run, path)
        if entry.test != test:
            raise MaxaError(
                f"{path}: local.{run} is a {entry.test} test; run it with `maxa local {entry.test}`"
            )
        base = entry.config
    return STAGE.build(ctx, values, base, sub=test)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _finish(metrics: dict[str, Any], out: str, table: str) -> None:
    from maxa.core.records import write_metrics

    write_metrics(metrics, out)
    primary = metrics["primary"]
    click.echo(table)
    click.echo(
        f"{metrics['backbone']} {metrics['task']}: {primary['name']} = {_fmt(primary['value'])}; wrote {out}"
    )


@click.group(name="local")
def command() -> None:
    """Parameter-free local-feature tests (k-NN patch labelling, instance retrieval, video propagation).

    After "Analyzing Local Representations of Self-supervised Vision Transformers": nothing is
    trained and no backbone runs; every number comes from the cached feature stores.
    """


@command.command()
@click.option("--train-features", required=True, help="Feature store of the labelled (memory-bank) split.")
@click.option("--train-targets", required=True, help="Target store of the labelled split.")
@click.option("--features", "features_url", required=True, help="Feature store of the held-out split.")
@click.option("--targets", "targets_url", required=True, help="Target store of the held-out split.")
@click.option("--out", required=True, type=click.Path(), help="Metrics JSON path.")
@STAGE.config_options("knn")
@STAGE.options
@user_errors
def knn(
    train_features: str, train_targets: str, features_url: str, targets_url: str, out: str, **values: Any
) -> None:
    """k-NN patch labelling per layer: mIoU on the patch grid and at label resolution."""
    from maxa.evaluate.local.knn import evaluate_knn

    config: KnnConfig = _config("knn", values)
    metrics = evaluate_knn(config, train_features, train_targets, features_url, targets_url)
    rows = [
        [layer, k, _fmt(s["patch_miou"]), _fmt(s["miou"]), _fmt(s["pixel_accuracy"])]
        for layer, per_k in metrics["scores"]["layers"].items()
        for k, s in per_k.items()
    ]
    _finish(metrics, out, _table(["layer", "k", "patch mIoU", "mIoU", "pixel acc"], rows))


@command.command()
@click.option("--gallery", "gallery_url", required=True, help="Feature store of the original images.")
@click.option("--queries", "queries_url", required=True, help="Feature store of their augmented copies.")
@click.option("--out", required=True, type=click.Path(), help="Metrics JSON path.")
@STAGE.config_options("retrieval")
@STAGE.options
@user_errors
def retrieval(gallery_url: str, queries_url: str, out: str, **values: Any) -> None:
    """Instance retrieval of augmented copies (prepare them with `--dataset augmented`): recall@k, mAP."""
    from maxa.evaluate.local.retrieval import evaluate_retrieval

    config: RetrievalConfig = _config("retrieval", values)
    metrics = evaluate_retrieval(config, gallery_url, queries_url)
    names = [f"recall@{k}" for k in config.recall_at] + ["map"]
    rows = [[layer, *(_fmt(s[n]) for n in names)] for layer, s in metrics["scores"]["layers"].items()]
    _finish(metrics, out, _table(["layer", *names], rows))


@command.command()
@click.option(
    "--features", "features_url", required=True, help="Feature store of a video split (e.g. DAVIS)."
)
@click.option("--targets", "targets_url", required=True, help="Its target store (instance ids per frame).")
@click.option("--out", required=True, type=click.Path(), help="Metrics JSON path.")
@STAGE.config_options("propagate")
@STAGE.options
@user_errors
def propagate(features_url: str, targets_url: str, out: str, **values: Any) -> None:
    """Video label propagation (DINO's DAVIS protocol) from frame 0's annotation, scored by J&F.

    On DAVIS stores DINO's protocol is the default: targets prepared with `--label-size native`, features
    extracted with `--input-size 480x832` (DINO's frame size) and `--norm`; stores made otherwise are
    refused with the commands that make them, or scored with `--davis-protocol any` (the record says
    which). `--masks-dir` writes the masks for the official davis2017-evaluation (docs/davis.md).
    """
    from maxa.evaluate.local.propagation import evaluate_propagation
    from maxa.extract.targets import reader_of

    config: PropagationConfig = _config("propagate", values)
    metrics = evaluate_propagation(config, features_url, targets_url, reader=reader_of)
    scores = metrics["scores"]
    names = ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
    _finish(metrics, out, json.dumps({n: scores[n] for n in names}))
    if config.masks_dir:
        click.echo(
            f"masks: {config.masks_dir}/<sequence>/<frame>.png (DAVIS format; see docs/davis.md for the "
            "official evaluator)"
        )
    if not metrics["protocol"]["scored_at_native_resolution"]:
        click.echo(
            f"note: scored at the {'x'.join(map(str, metrics['protocol']['label_size']))} label map, not the "
            "annotations' own size; prepare the targets with --label-size native for DAVIS's numbers",
            err=True,
        )
