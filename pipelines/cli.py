"""The `maxa` command: one subcommand per pipeline stage (each is also a DVC stage)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from maxa.extract.config import ExtractConfig
from maxa.extract.errors import MaxaError
from maxa.extract.targets import PrepareConfig
from maxa.extract.version import __version__
from maxa.pipelines.errors import user_errors
from maxa.pipelines.options import build_config, config_options
from maxa.probe.train import ProbeConfig


def _parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """`-o key=value` pairs; values parsed as YAML scalars (so 128 is an int, true a bool)."""
    import yaml

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--option")
        options[key.strip()] = yaml.safe_load(value)
    return options


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="maxa")
def cli() -> None:
    """Cache frozen-backbone patch features once, then probe them many times.

    Stages: prepare -> extract -> probe -> evaluate -> report (chained by `dvc repro`).
    """


@cli.command()
@click.option("--dataset", default="synthetic", show_default=True, help="Registered dataset reader.")
@click.option("--split", default="train", show_default=True)
@click.option("--root", type=click.Path(), default=None, help="Dataset folder (not needed for synthetic).")
@click.option(
    "-o",
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Reader option, e.g. -o num_images=200 -o image_size=128 (repeatable).",
)
@click.option(
    "--label-size", default=64, show_default=True, help="Square label resolution of the stored targets."
)
@click.option("--shard-size", default=64, show_default=True, help="Images per Zarr shard.")
@click.option("--out", required=True, type=click.Path(), help="Target store path or URL.")
@click.option("--overwrite", is_flag=True, help="Replace an existing store made from different inputs.")
@click.option(
    "--skip-bad",
    is_flag=True,
    help="Leave out samples that fail to load (corrupt image, inconsistent annotation) instead of stopping; "
    "their ids and reasons are recorded in the store (costs one extra decoding pass).",
)
@user_errors
def prepare(
    dataset: str,
    split: str,
    root: str | None,
    options: tuple[str, ...],
    label_size: int,
    shard_size: int,
    out: str,
    overwrite: bool,
    skip_bad: bool,
) -> None:
    """Write a dataset split's targets (and small RGB previews) to a target store."""
    from maxa.extract.targets import prepare as run_prepare

    if root is not None and not Path(root).exists():
        raise MaxaError(f"--root {root} does not exist")
    config = PrepareConfig(
        dataset=dataset,
        split=split,
        label_size=label_size,
        shard_size=shard_size,
        root=root,
        options=_parse_options(options),
    )
    store = run_prepare(config, out, overwrite=overwrite, skip_bad=skip_bad)
    click.echo(f"targets: {store.url} ({store.num_items} samples, arrays: {', '.join(store.array_names())})")
    skipped = store.meta.get("extra", {}).get("skipped") or {}
    if skipped:
        click.echo(
            f"skipped {len(skipped)} unreadable samples (ids and reasons in the store attribute "
            f"'skipped'), e.g. {next(iter(skipped.values()))}",
            err=True,
        )


@cli.command()
@click.option("--targets", "targets_url", required=True, help="Target store written by `maxa prepare`.")
@click.option("--out", required=True, help="Feature store path or URL.")
@click.option("--overwrite", is_flag=True, help="Replace an existing store made from different inputs.")
@click.option("--workers", type=int, default=None, help="Run on a dask LocalCluster of N worker processes.")
@click.option("--scheduler", default=None, help="Run on a dask.distributed scheduler, e.g. tcp://host:8786.")
@config_options(ExtractConfig)
@user_errors
def extract(
    targets_url: str, out: str, overwrite: bool, workers: int | None, scheduler: str | None, **values: Any
) -> None:
    """Run a frozen timm backbone once over a prepared split and store its patch features."""
    from maxa.extract.features import extract as run_extract

    config = build_config(ExtractConfig, values)
    if workers is not None or scheduler is not None:
        from maxa.extract.distributed import extract_distributed

        store = extract_distributed(
            config, targets_url, out, workers=workers, scheduler=scheduler, overwrite=overwrite
        )
    else:
        store = run_extract(config, targets_url, out, overwrite=overwrite)
    prov = store.provenance
    click.echo(
        f"features: {store.url} ({store.num_items} images, {prov['feature_shapes']}, "
        f"backbone {prov['model']} {prov['backbone_params']:,} params)"
    )


@cli.command()
@click.option("--features", "features_url", required=True, help="Training-split feature store.")
@click.option("--targets", "targets_url", required=True, help="Training-split target store.")
@click.option("--out", required=True, type=click.Path(), help="Checkpoint path (.pt).")
@config_options(ProbeConfig)
@user_errors
def probe(features_url: str, targets_url: str, out: str, **values: Any) -> None:
    """Train an adapter (MAXA or linear) for one task, or build a k-NN memory bank, from the stores alone.

    No backbone runs. `--layer 9,11` concatenates layers along channels; `--resume` continues an
    interrupted run from `<out>.resume` to the same final weights.
    """
    from maxa.probe.train import train

    config = build_config(ProbeConfig, values)
    try:
        meta = train(config, features_url, targets_url, out)
    except KeyboardInterrupt:
        from maxa.probe.train import resume_path

        state = resume_path(out)
        hint = f"state saved in {state}; add --resume to continue" if state.exists() else "nothing saved"
        click.echo(f"interrupted; {hint}", err=True)
        sys.exit(130)
    tail = meta["losses"][-20:]
    done = (
        f"final loss {sum(tail) / len(tail):.4f}; "
        f"{meta['samples_per_second']:.0f} samples/s ({meta['loader']} loader)"
        if tail
        else f"memory bank of {meta['adapter_options'].get('bank_size', 0):,} patches"
    )
    click.echo(
        f"{config.adapter} adapter: {meta['adapter_params']:,} parameters = "
        f"{meta['adapter_pct_of_backbone']:.3f}% of the backbone ({meta['backbone_params']:,}); "
        f"{done}; saved {out}"
    )


@cli.command()
@click.option("--checkpoint", required=True, type=click.Path(), help="Checkpoint from `maxa probe`.")
@click.option("--features", "features_url", required=True, help="Held-out feature store.")
@click.option("--targets", "targets_url", required=True, help="Held-out target store.")
@click.option("--out", required=True, type=click.Path(), help="Metrics JSON path.")
@click.option("--batch-size", default=32, show_default=True)
@click.option("--device", default="auto", show_default=True)
@user_errors
def evaluate(
    checkpoint: str, features_url: str, targets_url: str, out: str, batch_size: int, device: str
) -> None:
    """Score a trained adapter on the held-out split (metrics JSON for `dvc metrics show`).

    With a sweep checkpoint, every seed of the chosen member is scored (mean, std, t-interval);
    a single run gets a bootstrap interval over test images.
    """
    from maxa.evaluate.intervals import evaluate_with_uncertainty as run_evaluate
    from maxa.evaluate.run import write_metrics

    metrics = run_evaluate(checkpoint, features_url, targets_url, batch_size=batch_size, device=device)
    write_metrics(metrics, out)
    summary = {k: metrics[k] for k in ("backbone", "task", "adapter")}
    summary[metrics["primary"]["name"]] = metrics["primary"]["value"]
    summary["constant_baseline"] = metrics["constant_baseline"][metrics["primary"]["name"]]
    click.echo(json.dumps(summary))


@cli.command()
@click.argument("metrics", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--out",
    "out_dir",
    default="reports",
    show_default=True,
    type=click.Path(),
    help="Folder for leaderboard.md/.csv/.json.",
)
@user_errors
def report(metrics: tuple[str, ...], out_dir: str) -> None:
    """Build the leaderboard from metrics JSON files (or folders of them) and print it."""
    from maxa.evaluate.report import write_report

    paths: list[Path] = []
    for item in map(Path, metrics):
        paths.extend(sorted(item.rglob("*.json")) if item.is_dir() else [item])
    click.echo(write_report(paths, Path(out_dir)))


@cli.command()
@click.argument("params_file", default="params.yaml", type=click.Path(exists=True))
@user_errors
def params(params_file: str) -> None:
    """Validate a params.yaml against the stage configs and print the resolved values."""
    from dataclasses import asdict

    from maxa.pipelines.params import load_params

    resolved = load_params(Path(params_file))
    click.echo(json.dumps(asdict(resolved), indent=2, default=str))


# Commands that live in their own modules: each module exposes `command` (a click command or group).
# Adding one means appending its module name here.
COMMAND_MODULES: list[str] = [
    "maxa.pipelines.local_commands",
    "maxa.pipelines.report_commands",
    "maxa.pipelines.backbone_commands",
    "maxa.pipelines.store_commands",
    "maxa.pipelines.compare_commands",
]


def _register_commands() -> None:
    import importlib

    for name in COMMAND_MODULES:
        cli.add_command(importlib.import_module(name).command)


_register_commands()


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "0")
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("interrupted; re-run the same command to resume", err=True)
        sys.exit(130)
