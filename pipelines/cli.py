"""The `maxa` command: one subcommand per pipeline stage (each is also a DVC stage)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from maxa.core.errors import MaxaError
from maxa.core.provenance import FeatureProvenance
from maxa.pipelines import stages as layout
from maxa.pipelines.errors import DEBUG_ENV, user_errors
from maxa.pipelines.params import ROLES, load_for_stage
from maxa.pipelines.run_commands import PipelineCommand
from maxa.pipelines.stages import STAGES

UPDATE_HELP = (
    "Bring --out up to date with these inputs, as the generated DVC stages do: resume it when it was started "
    "from the same inputs (maxa's fingerprints decide), replace it when they differ (DVC's cache keeps the "
    "earlier version)."
)


def _update_option() -> Any:
    return click.option("--update", is_flag=True, help=UPDATE_HELP)


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
@click.version_option(package_name="maxa", prog_name="maxa")
@click.option(
    "--debug", is_flag=True, help="Show the traceback of any failure (also MAXA_DEBUG=1) instead of one line."
)
@click.option(
    "--storage-options",
    default=None,
    metavar="JSON",
    help='fsspec options for every object-store URL, e.g. \'{"endpoint_url": "http://minio:9000"}\' '
    "(over params.yaml `storage`; credentials belong in the environment: docs/store.md).",
)
def cli(debug: bool, storage_options: str | None) -> None:
    """Cache frozen-backbone patch features once, then probe them many times.

    Stages: prepare -> extract -> probe -> evaluate -> report (chained by `dvc repro`; `maxa pipeline`
    writes the dvc.yaml from params.yaml). Each stage runs from its entry of params.yaml
    (`--params params.yaml --data/--backbone/--run NAME`) or from options alone.
    """
    if debug:
        os.environ[DEBUG_ENV] = "1"
    if storage_options is not None:
        from maxa.pipelines import storage

        try:
            storage.override(storage.parse(storage_options, "--storage-options"))
        except MaxaError as exc:
            raise click.BadParameter(str(exc), param_hint="--storage-options") from None


@cli.command()
@STAGES["prepare"].options
@click.option("--role", type=click.Choice(ROLES), default=None, help="Which split of the --data entry.")
@STAGES["prepare"].config_options()
@click.option(
    "-o",
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Reader option, e.g. -o num_images=200 -o image_size=128 (repeatable; adds to the entry's; "
    "each reader's options: `maxa plugins --markdown`).",
)
@click.option("--out", required=True, type=click.Path(), help="Target store path or URL.")
@click.option("--overwrite", is_flag=True, help="Replace an existing store made from different inputs.")
@_update_option()
@click.option(
    "--skip-bad",
    is_flag=True,
    help="Leave out samples that fail to load (corrupt image, inconsistent annotation) instead of stopping; "
    "their ids and reasons are recorded in the store (costs one extra decoding pass).",
)
@click.pass_context
@user_errors
def prepare(
    ctx: click.Context,
    params_file: str | None,
    data: str | None,
    role: str | None,
    out: str,
    overwrite: bool,
    update: bool,
    skip_bad: bool,
    **values: Any,
) -> None:
    """Write a dataset split's targets (and small RGB previews) to a target store."""
    from maxa.core import store as st
    from maxa.extract.targets import prepare as run_prepare

    if (data is None) != (role is None):
        raise MaxaError("--data and --role go together (the entry and which of its splits)")
    stage = STAGES["prepare"]
    path = stage.selected(params_file, data)
    base = None
    if path is not None and data is not None and role is not None:
        base = stage.entry(load_for_stage(path), data, path).prepare_config(role)
    values["options"] = {**(base.options if base is not None else {}), **_parse_options(values["options"])}
    config = stage.build(ctx, values, base)
    if config.root is not None and not Path(config.root).exists():
        raise MaxaError(f"--root {config.root} does not exist")
    with st.manifest_while_writing(out):  # a crash leaves no manifest: the store does not count as finished
        store = run_prepare(config, out, overwrite=overwrite or update, skip_bad=skip_bad)
    st.write_manifest(store)
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
@_update_option()
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Run on a dask LocalCluster of N worker processes; on a GPU machine each worker gets its own GPU "
    "(CUDA_VISIBLE_DEVICES).",
)
@click.option("--scheduler", default=None, help="Run on a dask.distributed scheduler, e.g. tcp://host:8786.")
@click.option(
    "--root",
    type=click.Path(),
    default=None,
    help="Dataset folder on this machine, when not where the target store was prepared "
    "(every image is checked against the content digests prepare recorded).",
)
@STAGES["extract"].options
@STAGES["extract"].config_options(required=False)
@click.pass_context
@user_errors
def extract(
    ctx: click.Context,
    targets_url: str,
    out: str,
    overwrite: bool,
    update: bool,
    workers: int | None,
    scheduler: str | None,
    root: str | None,
    params_file: str | None,
    backbone: str | None,
    **values: Any,
) -> None:
    """Run a frozen timm backbone once over a prepared split and store its patch features.

    Give the backbone as `--params params.yaml --backbone NAME` or as `--model NAME` and options.
    """
    from maxa.core import store as st
    from maxa.extract.features import extract as run_extract

    stage = STAGES["extract"]
    path = stage.selected(params_file, backbone)
    base = None
    if path is not None and backbone is not None:
        base = stage.entry(load_for_stage(path), backbone, path)
    if base is None and values.get("model") is None:
        raise MaxaError("give --model (or --params params.yaml --backbone NAME)")
    config = stage.build(ctx, values, base)
    overwrite = overwrite or update  # a store's fingerprint decides: same inputs resume, others replace
    if root is not None and (workers is not None or scheduler is not None):
        raise MaxaError("--root cannot be combined with --workers/--scheduler yet; run without them")
    with st.manifest_while_writing(out):  # written again once every shard is done (what DVC tracks)
        if workers is not None or scheduler is not None:
            from maxa.extract.distributed import extract_distributed

            store = extract_distributed(
                config, targets_url, out, workers=workers, scheduler=scheduler, overwrite=overwrite
            )
        else:
            try:
                store = run_extract(config, targets_url, out, overwrite=overwrite, root=root)
            except KeyboardInterrupt:
                click.echo(
                    f"interrupted; the finished shards of {out} are kept: re-run the same command to resume",
                    err=True,
                )
                sys.exit(130)
    st.write_manifest(store)
    prov = FeatureProvenance.of(store)
    click.echo(
        f"features: {store.url} ({store.num_items} images, {prov.feature_shapes}, "
        f"backbone {prov.model} {prov.backbone_params or 0:,} params)"
    )


@cli.command()
@click.option("--features", "features_url", required=True, help="Training-split feature store.")
@click.option("--targets", "targets_url", required=True, help="Training-split target store.")
@click.option("--out", required=True, type=click.Path(), help="Checkpoint path (.pt).")
@STAGES["probe"].options
@click.option(
    "--overwrite", is_flag=True, help="Replace a finished checkpoint at --out (never replaced otherwise)."
)
@_update_option()
@STAGES["probe"].config_options()
@click.pass_context
@user_errors
def probe(
    ctx: click.Context,
    features_url: str,
    targets_url: str,
    out: str,
    params_file: str | None,
    run: str | None,
    overwrite: bool,
    update: bool,
    **values: Any,
) -> None:
    """Train an adapter (MAXA or linear) for one task, or build a k-NN memory bank, from the stores alone.

    No backbone runs. `--params params.yaml --run NAME` takes the settings of that run (the `probe`
    section and the run's entry). `--layer 9,11` concatenates layers along channels; `--resume`
    continues an interrupted run from `<out>.resume` to the same final weights.
    """
    from dataclasses import replace

    from maxa.probe.train import can_resume, train

    stage = STAGES["probe"]
    path = stage.selected(params_file, run)
    base = None
    if path is not None and run is not None:
        base = stage.entry(load_for_stage(path), run, path).config
    config = stage.build(ctx, values, base)
    if update:
        if overwrite or config.resume:
            raise MaxaError("--update resumes or replaces by itself; drop --overwrite and --resume")
        config, overwrite = replace(config, resume=can_resume(config, features_url, targets_url, out)), True
    try:
        meta = train(config, features_url, targets_url, out, overwrite=overwrite)
    except KeyboardInterrupt:
        from maxa.probe.train import resume_path

        state = resume_path(out)
        hint = f"state saved in {state}; add --resume to continue" if state.exists() else "nothing saved"
        click.echo(f"interrupted; {hint}", err=True)
        sys.exit(130)
    tail = meta.losses[-20:]
    done = (
        f"final loss {sum(tail) / len(tail):.4f}; "
        f"{meta.samples_per_second or 0:.0f} samples/s ({meta.loader} loader)"
        if tail
        else f"memory bank of {(meta.adapter_options or {}).get('bank_size', 0):,} patches"
    )
    pct = meta.adapter_pct_of_backbone
    size = f"{pct:.3f}% of the backbone ({meta.backbone_params:,})" if pct is not None else "no backbone"
    click.echo(f"{config.adapter} adapter: {meta.adapter_params:,} parameters = {size}; {done}; saved {out}")


@cli.command()
@click.option("--checkpoint", required=True, type=click.Path(), help="Checkpoint from `maxa probe`.")
@click.option("--features", "features_url", required=True, help="Held-out feature store.")
@click.option("--targets", "targets_url", required=True, help="Held-out target store.")
@click.option("--out", required=True, type=click.Path(), help="Metrics JSON path.")
@click.option(
    "--allow-training-split",
    is_flag=True,
    help="Score stores of the split the checkpoint was trained on (refused otherwise; the metrics record "
    "then says evaluated_on_training_split).",
)
@STAGES["evaluate"].options
@STAGES["evaluate"].config_options()
@click.pass_context
@user_errors
def evaluate(
    ctx: click.Context,
    checkpoint: str,
    features_url: str,
    targets_url: str,
    out: str,
    allow_training_split: bool,
    params_file: str | None,
    **values: Any,
) -> None:
    """Score a trained adapter on the held-out split (metrics JSON for `dvc metrics show`).

    With a sweep checkpoint, every seed of the chosen member is scored (mean, std, t-interval);
    a single run gets a bootstrap interval over test images.
    """
    from maxa.core.records import check_writable, write_metrics
    from maxa.evaluate.intervals import evaluate_with_uncertainty as run_evaluate

    check_writable(out, "metrics file")  # before any work
    stage = STAGES["evaluate"]
    base = stage.settings(load_for_stage(Path(params_file))) if params_file is not None else None
    config = stage.build(ctx, values, base)
    metrics = write_metrics(
        run_evaluate(
            checkpoint,
            features_url,
            targets_url,
            batch_size=config.batch_size,
            device=config.device,
            allow_training_split=allow_training_split,
            protocol_name=config.protocol,
        ),
        out,
    )
    summary = {k: metrics[k] for k in ("backbone", "task", "adapter")}
    summary[metrics["primary"]["name"]] = metrics["primary"]["value"]
    summary["constant_baseline"] = metrics["constant_baseline"][metrics["primary"]["name"]]
    click.echo(json.dumps(summary))


@cli.command()
@click.argument("metrics", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--out",
    "out_dir",
    default=layout.REPORTS,
    show_default=True,
    type=click.Path(),
    help="Folder for leaderboard.md/.csv/.json.",
)
@user_errors
def report(metrics: tuple[str, ...], out_dir: str) -> None:
    """Build the leaderboard from metrics JSON files (or folders of them) and print it."""
    from maxa.core.headline import full_records
    from maxa.core.records import check_writable
    from maxa.evaluate.report import write_report

    check_writable(Path(out_dir) / "leaderboard.md", "report folder")  # before any work
    paths: list[Path] = []
    for item in map(Path, metrics):
        paths.extend(full_records(sorted(item.rglob("*.json"))) if item.is_dir() else [item])
    click.echo(write_report(paths, Path(out_dir)))


@cli.command()
@click.argument("params_file", default="params.yaml", type=click.Path(exists=True))
@user_errors
def params(params_file: str) -> None:
    """Validate a params.yaml and print the resolved values.

    Checks what can be checked without running a stage: the keys and values, that dataset roots and
    weights files exist (`~` and $VARS expanded), the reader takes its options, models are known and
    their layers exist."""
    from dataclasses import asdict

    from maxa.pipelines.checks import check
    from maxa.pipelines.params import load_params

    resolved = load_params(Path(params_file))
    check(resolved, Path(params_file))
    click.echo(json.dumps(asdict(resolved), indent=2, default=str))


@cli.command(cls=PipelineCommand)  # and `maxa pipeline run` (pipelines/run_commands.py)
@click.argument("params_file", default="params.yaml", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--out",
    default=None,
    type=click.Path(dir_okay=False),
    help="dvc.yaml to write [default: beside PARAMS_FILE].",
)
@click.option(
    "--check",
    is_flag=True,
    help="Write nothing; exit 1 when --out differs from what would be written or when `maxa params` "
    "finds a problem (the guard stage of `dvc repro`).",
)
@click.option(
    "--guard",
    is_flag=True,
    help="What the guard stage of dvc.yaml runs: --check, then write the copy of PARAMS_FILE whose keys the "
    "other stages track (params_tracked.json beside --out).",
)
@user_errors
def pipeline(params_file: str, out: str | None, check: bool, guard: bool) -> None:
    """Write the experiment's dvc.yaml from its params.yaml (re-run after adding a dataset or a task run).

    Every stage is `maxa <stage> --params params.yaml` plus the entry it runs; dvc.yaml lists the params
    each stage reads so `dvc repro` re-runs exactly what a change affects.
    """
    from maxa.pipelines import dvcgen, gitignore
    from maxa.pipelines.checks import check as check_params
    from maxa.pipelines.params import load_params

    target = Path(out) if out is not None else Path(params_file).parent / "dvc.yaml"
    params = load_params(Path(params_file))
    same = dvcgen.write(params, target, check=check or guard)
    if check or guard:
        if not same:
            raise MaxaError(f"{target} is out of date with {params_file}; run `maxa pipeline {params_file}`")
        check_params(params, Path(params_file))  # the guard stage: fail before hours of stages
        if guard:
            dvcgen.write_tracked(Path(params_file), target.parent / dvcgen.TRACKED)
        click.echo(f"{target} is up to date")
    else:
        click.echo(f"{target} {'unchanged' if same else 'written'}")
        written = gitignore.write_for(dvcgen.pipeline(params), Path(params_file), target.parent)
        if written:
            click.echo(f"{len(written)} .gitignore file(s) hold the outputs' entries, sorted (commit them)")


# Commands that live in their own modules: each module exposes `command` (a click command or group).
# Adding one means appending its module name here.
COMMAND_MODULES: list[str] = [
    "maxa.pipelines.local_commands",
    "maxa.pipelines.report_commands",
    "maxa.pipelines.backbone_commands",
    "maxa.pipelines.store_commands",
    "maxa.pipelines.compare_commands",
    "maxa.pipelines.estimate_commands",
    "maxa.pipelines.plugin_commands",
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
