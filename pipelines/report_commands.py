"""`maxa plots`: bar charts, loss curves, qualitative panels and PCA maps from a finished experiment."""

from __future__ import annotations

from pathlib import Path

import click

from maxa.core.errors import MaxaError
from maxa.pipelines import stages as layout
from maxa.pipelines.errors import user_errors
from maxa.pipelines.params import load_for_stage
from maxa.pipelines.stages import STAGES

PLACEHOLDER = "{backbone}"


def expand(items: tuple[str, ...], suffix: str) -> list[Path]:
    """Files as given, folders searched recursively for `*<suffix>` (metrics headlines left out)."""
    from maxa.core.headline import full_records

    paths: list[Path] = []
    for item in map(Path, items):
        paths.extend(full_records(sorted(item.rglob(f"*{suffix}"))) if item.is_dir() else [item])
    return paths


def features_for(template: str, backbone: str, count: int) -> str:
    if PLACEHOLDER in template:
        return template.replace(PLACEHOLDER, backbone)
    if count > 1:
        raise MaxaError(
            f"--features {template} has no {PLACEHOLDER} placeholder, but the checkpoints come from "
            f"{count} backbones; e.g. --features 'data/features/{PLACEHOLDER}/val.zarr'"
        )
    return template


def make_plots(
    *,
    metrics: list[Path],
    checkpoints: list[Path],
    features: str | None,
    targets: str | None,
    count: int,
    out_dir: Path,
    data_dir: Path | None,
) -> list[Path]:
    """Every plot the inputs allow: bars (metrics), losses (checkpoints), panels and PCA (+ stores)."""
    from maxa.evaluate.plots import bar_charts, loss_curves
    from maxa.evaluate.report import load_runs
    from maxa.probe.checkpoint import read_meta

    written: list[Path] = []
    if metrics:
        runs, _ = load_runs(metrics)
        written += bar_charts(runs, out_dir, data_dir)
    metas = [(path, read_meta(path)) for path in checkpoints]
    if metas:
        written += loss_curves([m for _, m in metas], out_dir, data_dir)
    backbones = sorted({m.backbone for _, m in metas})
    if features is not None and metas and targets is not None:
        from maxa.evaluate.qualitative import Source, qualitative_panel

        by_task: dict[str, list[Source]] = {}
        for path, meta in sorted(metas, key=lambda pm: (pm[1].backbone, str(pm[0]))):
            label = meta.backbone
            if len({m.adapter for _, m in metas}) > 1:
                label += f" ({meta.adapter})"
            url = features_for(features, meta.backbone, len(backbones))
            by_task.setdefault(meta.task, []).append(Source(label, path, url))
        for task, sources in sorted(by_task.items()):
            written.append(qualitative_panel(task, sources, targets, out_dir, count))
    if features is not None:
        from maxa.evaluate.pca import FeatureSource, pca_figure

        layers = {m.backbone: m.layers for _, m in metas}
        if backbones:
            sources = [
                FeatureSource(b, features_for(features, b, len(backbones)), layers[b]) for b in backbones
            ]
        elif PLACEHOLDER in features:
            raise MaxaError(f"--features {features} has a {PLACEHOLDER} placeholder: give --checkpoints too")
        else:
            sources = [FeatureSource(Path(features.rstrip("/")).parent.name or features, features)]
        written.append(pca_figure(sources, targets, out_dir / "pca.png", count))
    return written


@click.command("plots")
@click.option(
    "--metrics",
    multiple=True,
    type=click.Path(exists=True),
    help="Metrics JSON files or folders: a bar chart per task across backbones.",
)
@click.option(
    "--checkpoints",
    multiple=True,
    type=click.Path(exists=True),
    help="Checkpoints (.pt) or folders: training-loss curves; with --features and --targets, panels.",
)
@click.option(
    "--features",
    default=None,
    help="Held-out feature store; {backbone} is replaced by each checkpoint's backbone name. "
    "Gives PCA-RGB maps, and qualitative panels with --checkpoints and --targets.",
)
@click.option("--targets", default=None, help="Held-out target store (ground truth and image previews).")
@click.option(
    "--count", default=None, type=click.IntRange(1, 64), help="Images per panel [default: 4, or the params']."
)
@click.option(
    "--params",
    "params_path",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="params.yaml whose `plots` section sets --count (what the generated dvc.yaml passes).",
)
@click.option("--out", "out_dir", default=layout.PLOTS, show_default=True, type=click.Path(), help="PNGs.")
@click.option(
    "--data-out",
    "data_dir",
    default=layout.PLOT_DATA,
    show_default=True,
    type=click.Path(),
    help="CSV data of the plots (what `dvc plots show` renders).",
)
@user_errors
def command(
    metrics: tuple[str, ...],
    checkpoints: tuple[str, ...],
    features: str | None,
    targets: str | None,
    count: int | None,
    params_path: str | None,
    out_dir: str,
    data_dir: str,
) -> None:
    """PNG plots of an experiment: per-task bars, loss curves, image|truth|prediction panels, PCA maps.

    \b
    maxa plots --metrics metrics --checkpoints models \\
        --features 'data/features/{backbone}/val.zarr' --targets data/targets/val.zarr
    """
    if not (metrics or checkpoints or features):
        raise MaxaError("nothing to plot: give --metrics, --checkpoints and/or --features")
    if params_path is not None:
        if count is not None:
            raise MaxaError("--count and --params both set the panel count; give one")
        count = STAGES["plots"].settings(load_for_stage(Path(params_path))).count
    from maxa.core.records import check_writable

    check_writable(Path(out_dir) / "plot.png", "plots folder")  # before any work
    check_writable(Path(data_dir) / "plot.csv", "plot data folder")
    written = make_plots(
        metrics=expand(metrics, ".json"),
        checkpoints=expand(checkpoints, ".pt"),
        features=features,
        targets=targets,
        count=4 if count is None else count,
        out_dir=Path(out_dir),
        data_dir=Path(data_dir),
    )
    for path in written:
        click.echo(str(path))
