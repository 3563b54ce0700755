"""The stage table: one declaration per pipeline stage, read by the `maxa` commands and the dvc.yaml
generator.

A stage's entry names the `maxa` command that runs it, where `maxa pipeline run` runs it, the params entry
it reads (its section and the option that selects it) and the shared sections beside it. Its inputs and
outputs are spelled once, by the path layout below: the generator (pipelines/dvcgen.py) renders every
command line, dependency and output from it. Its config dataclass is declared here too: the command's
options are its fields, the command builds it (`Stage.build`), and the params loader (pipelines/params.py)
validates the stage's section into it. tests/pipelines/test_stages.py runs each generated command and checks
that what it writes is what the table declares, and that what each command builds is its declared class.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from maxa.core.errors import MaxaError
from maxa.core.paths import manifest_of
from maxa.evaluate.config import EvaluateConfig, PlotsParams
from maxa.evaluate.local.config import KnnConfig, PropagationConfig, RetrievalConfig
from maxa.extract.config import ExtractConfig, PrepareConfig
from maxa.pipelines.controls import control_config
from maxa.pipelines.options import config_options as options_from
from maxa.pipelines.options import resolve_config
from maxa.probe.config import ProbeConfig

if TYPE_CHECKING:  # the params loader reads the config classes off this table
    from maxa.pipelines.params import Params

F = TypeVar("F", bound=Callable[..., Any])

DEVICE, CPU, GATE = "device", "cpu", "gate"
"""Where `maxa pipeline run` runs a stage. device: one accelerator per stage (one per worker); cpu:
alongside the device stages; gate: before every other stage (a stale dvc.yaml stops the run, as it stops
`dvc repro`)."""

# The path layout, relative to the folder of dvc.yaml: the one place a stage's files are named.
PARAMS = "params.yaml"  # DVC's default params file, in the folder that holds dvc.yaml
METRICS = "metrics"  # every metrics record of the experiment, what `maxa report` reads
REPORTS = "reports"  # the leaderboard (`maxa report --out`)
PLOTS = f"{REPORTS}/plots"  # `maxa plots --out`: PNGs, one folder per dataset in the pipeline
PLOT_DATA = f"{REPORTS}/plot_data"  # `maxa plots --data-out`: what `dvc plots show` renders
LEADERBOARD = tuple(f"{REPORTS}/leaderboard.{ext}" for ext in ("md", "csv", "json"))


def targets(dataset: str, role: str) -> str:
    """`maxa prepare --out`: a dataset split's target store."""
    return f"data/targets/{dataset}/{role}.zarr"


def features(dataset: str, backbone: str, role: str | None = None) -> str:
    """`maxa extract --out`: a split's feature store; without a role, the folder of both (DVC's output)."""
    folder = f"data/features/{dataset}/{backbone}"
    return folder if role is None else f"{folder}/{role}.zarr"


def manifest(store: str) -> str:
    """The manifest `maxa prepare`/`extract` write beside a finished store (core/store/manifest.py): what a
    stage that reads the store depends on, so DVC hashes one small file, not every shard."""
    return manifest_of(store)


def features_pattern(dataset: str) -> str:
    """The feature stores of a dataset's held-out split as `maxa plots --features` takes them."""
    return features(dataset, "{backbone}", "test")


def features_dir(dataset: str) -> str:
    """Every feature store of a dataset (what `maxa plots` reads through `features_pattern`)."""
    return str(Path(features(dataset, "_")).parent)


def models_dir(run: str) -> str:
    """Every checkpoint of a run (`maxa plots --checkpoints`)."""
    return str(Path(model(run, "_")).parent)


def metrics_dir(run: str) -> str:
    """Every metrics record of a run (`maxa plots --metrics`)."""
    return str(Path(metrics(run, "_")).parent)


def model(run: str, backbone: str) -> str:
    """`maxa probe --out`: the checkpoint of a run on a backbone."""
    return f"models/{run}/{backbone}.pt"


def sweep(run: str, backbone: str) -> str:
    """The member checkpoints of a sweep beside its checkpoint (probe/sweep.py `sweep_dir`)."""
    return f"models/{run}/{backbone}.sweep"


def metrics(run: str, backbone: str) -> str:
    """`maxa evaluate --out` / `maxa local --out`: the metrics record of a run on a backbone."""
    return f"{METRICS}/{run}/{backbone}.json"


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: its command, the params it reads and the config dataclass it runs with."""

    command: str  # `maxa <command>`; `local` is a group of one command per local test
    kind: str  # DEVICE, CPU or GATE
    section: str | None = None  # the params section of its entries (None: no entry of its own)
    selector: str | None = None  # the option naming the entry
    shared: tuple[str, ...] = ()  # shared sections it reads besides its entry
    verb: str = "run"  # what the stage does with its entry (the selector's help)
    derived: Callable[[Params, str], Any] | None = None  # entries not in the section (e.g. controls)
    config: type[Any] | None = None
    """The dataclass the command builds (its options are the command's options; params.yaml's entry or
    shared section validates into it); None: the stage has no settings of its own."""
    configs: Mapping[str, type[Any]] = field(default_factory=dict)
    """A group's config per sub-command (`maxa local <test>`), in place of `config`."""

    @property
    def reads_params(self) -> bool:
        return self.section is not None or bool(self.shared)

    def config_class(self, sub: str | None = None) -> type[Any]:
        """The config dataclass of the command (of sub-command `sub` in a group)."""
        found = self.config if sub is None else self.configs.get(sub)
        if found is None:
            raise KeyError(f"stage {self.command} declares no config{f' for {sub}' if sub else ''}")
        return found

    def config_options(self, sub: str | None = None, *, required: bool = True) -> Callable[[F], F]:
        """One click option per field of the config dataclass (pipelines/options.py)."""
        return options_from(self.config_class(sub), required=required)

    def build(self, ctx: click.Context, values: dict[str, Any], base: Any, sub: str | None = None) -> Any:
        """The command's config: `base` (its params entry, or None) with the options given laid over it."""
        return resolve_config(self.config_class(sub), ctx, values, base)

    def tracked(self, name: str | None = None) -> list[str]:
        """The params keys the stage reads for entry `name`, as DVC tracks them (shared ones after)."""
        own = [] if self.section is None or name is None else [f"{self.section}.{name}"]
        return [*own, *self.shared]

    def command_line(self, name: str | None, *args: str, sub: str | None = None) -> str:
        """`maxa <command> [SUB] --params params.yaml <selector> <name> ARGS...`, as generated stages run."""
        words = ["maxa", self.command, *([sub] if sub else [])]
        words += [f"--params {PARAMS}"] if self.reads_params else []
        words += [f"{self.selector} {name}"] if self.selector is not None and name is not None else []
        return " ".join([*words, *args])

    def entry(self, params: Params, name: str, path: Path) -> Any:
        """Entry `name` of the stage's section in `params` (read from `path`)."""
        assert self.section is not None, f"{self.command} has no entry"
        found = self.derived(params, name) if self.derived is not None else None
        if found is not None:
            return found
        entries = getattr(params, self.section)
        if name not in entries:
            raise MaxaError(f"{path}: {self.section} has no entry {name!r} (entries: {', '.join(entries)})")
        return entries[name]

    def settings(self, params: Params) -> Any:
        """The stage's shared section in `params` (a stage without an entry of its own)."""
        return getattr(params, self.shared[0])

    def options(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """`--params FILE` and the selector (`--run NAME`): what the generated stages pass."""
        if self.selector is not None:
            func = click.option(
                self.selector,
                default=None,
                help=f"The {self.section}.<NAME> entry of --params to {self.verb}.",
            )(func)
        needs = f" Needs {self.selector}." if self.selector is not None else ""
        return click.option(
            "--params",
            "params_file",
            type=click.Path(dir_okay=False),
            default=None,
            help="Read the settings from this params.yaml (see `maxa params`); options given on the command "
            f"line override them.{needs}",
        )(func)

    def selected(self, params_file: str | None, name: str | None) -> Path | None:
        """The params file when `--params` and the selector are given together; None when neither is."""
        if (params_file is None) != (name is None):
            given, missing = ("--params", self.selector) if name is None else (self.selector, "--params")
            raise MaxaError(f"{given} needs {missing} (e.g. --params params.yaml {self.selector} NAME)")
        return None if params_file is None else Path(params_file)


def _control(params: Params, name: str) -> ExtractConfig | None:
    """With `controls: true`, a control entry `control_<kind>.<backbone>` (pipelines/controls.py)."""
    return control_config(params.backbones, name) if params.controls else None


STAGES: dict[str, Stage] = {
    "pipeline": Stage("pipeline", GATE),
    "prepare": Stage("prepare", CPU, "datasets", "--data", verb="prepare", config=PrepareConfig),
    "extract": Stage(
        "extract", DEVICE, "backbones", "--backbone", ("extract",), derived=_control, config=ExtractConfig
    ),
    "probe": Stage("probe", DEVICE, "tasks", "--run", ("probe",), verb="train", config=ProbeConfig),
    "evaluate": Stage("evaluate", DEVICE, shared=("evaluate",), config=EvaluateConfig),
    "local": Stage(
        "local",
        DEVICE,
        "local",
        "--run",
        configs={"knn": KnnConfig, "retrieval": RetrievalConfig, "propagate": PropagationConfig},
    ),
    "report": Stage("report", CPU),
    "plots": Stage("plots", CPU, shared=("plots",), config=PlotsParams),
}
"""Every stage of a generated dvc.yaml, by the `maxa` command that runs it."""
