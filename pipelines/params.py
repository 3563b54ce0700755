"""params.yaml -> the validated config each stage runs with (the same dataclasses the CLI builds).

One schema for the demo (params.yaml) and the paper matrix (pipelines/paper/params.yaml):

- named entries: `datasets.<name>` (a reader, its files, the train and test split), `backbones.<name>`
  (an ExtractConfig), `tasks.<run>` (a task, the dataset it is trained and scored on, ProbeConfig overrides);
- shared sections, one per stage: `extract` (ExtractConfig values every backbone starts from), `probe`
  (ProbeConfig values every run starts from), `evaluate` (EvaluateConfig), `plots`;
- `local.<name>`: a parameter-free local test (k-NN patch labelling, retrieval, DAVIS propagation) on a
  dataset's stores, for every backbone or those it lists, with the test's settings (its config dataclass).

A stage reads its entry through the stage table (pipelines/stages.py: what `maxa prepare|extract|probe
--params FILE --data|--backbone|--run NAME` does); defaults come from the dataclasses only, and every key
is a dataclass field, so no key can be accepted and then ignored.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import yaml

from maxa.core import protocols
from maxa.core.choices import check_choice
from maxa.core.errors import MaxaError
from maxa.evaluate.config import EvaluateConfig, PlotsParams
from maxa.evaluate.local.config import KnnConfig, PropagationConfig, RetrievalConfig
from maxa.extract.config import ExtractConfig, PrepareConfig
from maxa.extract.reader_specs import READERS
from maxa.pipelines.controls import control_config
from maxa.pipelines.options import field_type, parse_list
from maxa.pipelines.stages import STAGES
from maxa.pipelines.storage import check_recordable
from maxa.probe.config import ProbeConfig
from maxa.probe.task_specs import TASKS

ROLES = ("train", "test")
"""The two splits of every dataset entry: the adapter trains on one and is scored on the other."""

_PREPARE_CONFIG = STAGES["prepare"].config_class()
_PREPARE: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(_PREPARE_CONFIG)}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # entry names become file paths and DVC stage names


@dataclass
class DatasetEntry:
    """One `datasets.<name>` entry: a reader, its files and options, and the two splits a run uses."""

    dataset: str = field(metadata={"help": "Dataset reader.", "choices": READERS.names()})
    root: str | None = field(default=None, metadata={"help": "Dataset folder (not needed for synthetic)."})
    train_split: str = field(default="train", metadata={"help": "The reader's split adapters train on."})
    test_split: str = field(default="val", metadata={"help": "The reader's split adapters are scored on."})
    train_images: int | None = field(default=None, metadata={"help": "First N images of train_split."})
    test_images: int | None = field(default=None, metadata={"help": "First N images of test_split."})
    train_start: int = field(default=0, metadata={"help": "Skip the first K images of train_split."})
    test_start: int = field(default=0, metadata={"help": "Skip the first K images of test_split."})
    label_size: str | int = field(
        default=_PREPARE["label_size"],
        metadata={"help": "Square label resolution, or 'native' (one size per split)."},
    )
    shard_size: int = field(default=_PREPARE["shard_size"], metadata={"help": "Images per target shard."})
    options: dict[str, Any] = field(default_factory=dict, metadata={"help": "Reader options."})

    def __post_init__(self) -> None:
        for role in ROLES:
            count = getattr(self, f"{role}_images")
            if count is not None and count < 1:
                raise MaxaError(f"{role}_images must be >= 1 (or absent for the whole split), got {count}")
        if not isinstance(self.options, dict):
            raise MaxaError(f"options must be a mapping of reader options, got {self.options!r}")
        for role in ROLES:
            if getattr(self, f"{role}_start") < 0:
                raise MaxaError(f"{role}_start must be >= 0, got {getattr(self, f'{role}_start')}")
        for key, instead in (
            ("num_images", "train_images / test_images"),
            ("start", "train_start / test_start"),
        ):
            if key in self.options:
                raise MaxaError(f"options.{key}: set {instead} instead")
        for role in ROLES:
            self.prepare_config(role)  # PrepareConfig checks the reader name and the sizes

    def prepare_config(self, role: str) -> PrepareConfig:
        check_choice(role, ROLES, "--role")
        count, start = getattr(self, f"{role}_images"), getattr(self, f"{role}_start")
        config: PrepareConfig = _PREPARE_CONFIG(
            dataset=self.dataset,
            split=getattr(self, f"{role}_split"),
            label_size=self.label_size,
            shard_size=self.shard_size,
            root=self.root,
            options={
                **self.options,
                **({"num_images": count} if count is not None else {}),
                **({"start": start} if start else {}),
            },
        )
        return config


@dataclass
class TaskRun:
    """One `tasks.<run>` entry: the dataset it uses and the full probe config (shared section + entry)."""

    dataset: str
    config: ProbeConfig


LOCAL_TESTS: dict[str, type] = dict(STAGES["local"].configs)
"""`maxa local <test>` -> the dataclass of its settings (the keys of a `local.<name>` entry)."""

LocalConfig: typing.TypeAlias = KnnConfig | RetrievalConfig | PropagationConfig


@dataclass
class LocalRun:
    """One `local.<name>` entry: which test, the dataset whose held-out split it scores (k-NN's memory bank
    is the train split; retrieval's gallery, with `queries` the augmented copies), the backbones it runs
    on (None: every one) and the test's settings."""

    test: str
    dataset: str
    config: LocalConfig
    backbones: list[str] | None = None
    queries: str | None = None


LOCAL_KEYS = ("test", "dataset", "backbones", "queries")

SECTIONS = (
    "datasets", "backbones", "tasks", "local", "extract", "probe", "evaluate", "plots", "storage", "controls",
)  # fmt: skip


@dataclass
class Params:
    datasets: dict[str, DatasetEntry]
    backbones: dict[str, ExtractConfig]
    tasks: dict[str, TaskRun]
    local: dict[str, LocalRun] = field(default_factory=dict)
    extract: dict[str, Any] = field(default_factory=dict)  # as written; resolved into `backbones`
    probe: dict[str, Any] = field(default_factory=dict)  # as written; resolved into `tasks`
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    plots: PlotsParams = field(default_factory=PlotsParams)
    storage: dict[str, Any] = field(default_factory=dict)  # fsspec options for object-store URLs (no secrets)
    controls: bool = False  # noise and position-only control stores per feature shape (pipelines/controls.py)
    given: tuple[str, ...] = SECTIONS  # the sections the file spells out (DVC tracks only those)


REQUIRED = ("datasets", "backbones", "tasks")
_EXTRACT, _PROBE = STAGES["extract"].config_class(), STAGES["probe"].config_class()
EXTRACT_SHARED = tuple(f.name for f in dataclasses.fields(_EXTRACT) if f.name not in ("model", "name"))
BACKBONE_KEYS = tuple(f.name for f in dataclasses.fields(_EXTRACT) if f.name != "name")
PROBE_SHARED = tuple(f.name for f in dataclasses.fields(_PROBE) if f.name != "task")
RUN_KEYS = ("dataset", *(f.name for f in dataclasses.fields(_PROBE)))


def _mapping(values: Any, where: str) -> dict[str, Any]:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise MaxaError(f"params section {where} must be a mapping, got {type(values).__name__}")
    return values


def _check_keys(values: dict[str, Any], allowed: tuple[str, ...], where: str, hint: str = "") -> None:
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise MaxaError(f"params section {where}: unknown keys {unknown}{hint} (allowed: {sorted(allowed)})")


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    """Instantiate a config dataclass from YAML values; every problem names the section and key."""
    _check_keys(values, tuple(f.name for f in dataclasses.fields(cls)), where)
    hints = typing.get_type_hints(cls)
    coerced = dict(values)
    for key, value in values.items():
        kind, element = field_type(hints[key])
        if kind in (int, float) and isinstance(value, str):
            try:  # YAML reads 1e-3 (no dot) as a string
                coerced[key] = kind(value)
            except ValueError:
                raise MaxaError(f"params section {where}: {key} must be a number, got {value!r}") from None
        elif kind is list and value is not None:
            try:
                coerced[key] = parse_list(value, element)
            except click.BadParameter as exc:
                raise MaxaError(f"params section {where}.{key}: {exc.message}") from None
        elif key == "layer" and isinstance(value, int):
            coerced[key] = str(value)
    try:
        return cls(**coerced)
    except TypeError as exc:
        raise MaxaError(f"params section {where}: {exc}") from exc
    except MaxaError as exc:
        raise MaxaError(f"params section {where}: {exc}") from exc


def _entries(raw: Any, section: str) -> dict[str, dict[str, Any]]:
    entries = _mapping(raw, section)
    if not entries:
        raise MaxaError(f"params section {section} lists no entry")
    for name, entry in entries.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise MaxaError(
                f"params section {section}: entry name {name!r} must be letters, digits, '_', '.' or '-' "
                "(it names files and DVC stages)"
            )
        _mapping(entry, f"{section}.{name}")
    return {name: entry or {} for name, entry in entries.items()}


def _backbones(raw: Any, shared: dict[str, Any]) -> dict[str, ExtractConfig]:
    _check_keys(shared, EXTRACT_SHARED, "extract", " (backbones are listed under the top-level `backbones`)")
    backbones = {}
    for name, entry in _entries(raw, "backbones").items():
        _check_keys(entry, BACKBONE_KEYS, f"backbones.{name}", " (the entry's key is its name)")
        backbones[name] = _build(_EXTRACT, {**shared, **entry, "name": name}, f"backbones.{name}")
    return backbones


def _tasks(raw: Any, shared: dict[str, Any], datasets: dict[str, DatasetEntry]) -> dict[str, TaskRun]:
    _check_keys(shared, PROBE_SHARED, "probe", " (a task is set per run under `tasks`)")
    runs = {}
    for name, entry in _entries(raw, "tasks").items():
        where = f"tasks.{name}"
        _check_keys(entry, RUN_KEYS, where)
        missing = [k for k in ("task", "dataset") if k not in entry]
        if missing:
            raise MaxaError(
                f"params section {where}: missing {missing} (every run names its task and dataset)"
            )
        if entry["dataset"] not in datasets:
            raise MaxaError(
                f"params section {where}: dataset {entry['dataset']!r} is not in datasets "
                f"({sorted(datasets)})"
            )
        overrides = {k: v for k, v in entry.items() if k != "dataset"}
        runs[name] = TaskRun(
            dataset=str(entry["dataset"]), config=_build(_PROBE, {**shared, **overrides}, where)
        )
    return runs


def _dataset_of(entry: dict[str, Any], key: str, datasets: dict[str, DatasetEntry], where: str) -> str:
    name = entry.get(key)
    if name not in datasets:
        raise MaxaError(f"params section {where}: {key} {name!r} is not in datasets ({sorted(datasets)})")
    return str(name)


def _local(
    raw: Any, datasets: dict[str, DatasetEntry], backbones: dict[str, Any], tasks: dict[str, TaskRun]
) -> dict[str, LocalRun]:
    if raw is None:
        return {}
    runs = {}
    for name, entry in _entries(raw, "local").items():
        where = f"local.{name}"
        test = entry.get("test")
        if test not in LOCAL_TESTS:
            raise MaxaError(f"params section {where}: test must be one of {list(LOCAL_TESTS)}, got {test!r}")
        if name in tasks:
            raise MaxaError(
                f"params section {where}: tasks has a run of the same name (both would write metrics/{name})"
            )
        cls = LOCAL_TESTS[test]
        keys = [k for k in LOCAL_KEYS if k != "queries" or test == "retrieval"]
        _check_keys(entry, (*keys, *(f.name for f in dataclasses.fields(cls))), where)
        dataset = _dataset_of(entry, "dataset", datasets, where)
        queries = _dataset_of(entry, "queries", datasets, where) if test == "retrieval" else None
        if queries == dataset:
            raise MaxaError(f"params section {where}: queries must be another dataset (augmented copies)")
        chosen = entry.get("backbones")
        if chosen is not None:
            chosen = parse_list(chosen, str) if not isinstance(chosen, list) else [str(b) for b in chosen]
            unknown = [b for b in chosen if b not in backbones]
            if unknown or not chosen:
                raise MaxaError(
                    f"params section {where}: backbones {unknown or chosen} are not entries of backbones "
                    f"({sorted(backbones)})"
                )
        settings = {k: v for k, v in entry.items() if k not in LOCAL_KEYS}
        runs[name] = LocalRun(test, dataset, _build(cls, settings, where), chosen, queries)
    return runs


def _controls(value: Any, backbones: dict[str, ExtractConfig], path: Path) -> bool:
    if not isinstance(value, bool):
        raise MaxaError(f"{path}: controls must be true or false, got {value!r}")
    taken = [name for name in backbones if control_config(backbones, name) is not None]
    if value and taken:
        raise MaxaError(f"{path}: backbones {taken} are named like the control entries `controls: true` adds")
    return value


def _settings(stage: str, raw: dict[str, Any]) -> Any:
    """The shared section of a stage without entries (`evaluate`, `plots`), validated into its config."""
    section = STAGES[stage].shared[0]
    return _build(STAGES[stage].config_class(), _mapping(raw.get(section), section), section)


def load_params(path: Path) -> Params:
    """Parse and validate every section; unknown or mistyped keys are one-line errors naming them."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise MaxaError(f"cannot read {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise MaxaError(f"{path} must hold a mapping of sections")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise MaxaError(f"{path}: unknown sections {unknown} (allowed: {list(SECTIONS)})")
    missing = [s for s in REQUIRED if s not in raw]
    if missing:
        raise MaxaError(f"{path} lacks sections {missing}")
    datasets = {
        name: _build(DatasetEntry, entry, f"datasets.{name}")
        for name, entry in _entries(raw["datasets"], "datasets").items()
    }
    extract = dict(_mapping(raw.get("extract"), "extract"))
    probe = dict(_mapping(raw.get("probe"), "probe"))
    backbones = _backbones(raw["backbones"], extract)
    tasks = _tasks(raw["tasks"], probe, datasets)
    return Params(
        datasets=datasets,
        backbones=backbones,
        tasks=tasks,
        local=_local(raw.get("local"), datasets, backbones, tasks),
        extract=extract,
        probe=probe,
        evaluate=_settings("evaluate", raw),
        plots=_settings("plots", raw),
        storage=check_recordable(_mapping(raw.get("storage"), "storage"), f"{path} storage"),
        controls=_controls(raw.get("controls", False), backbones, path),
        given=tuple(s for s in SECTIONS if s in raw),
    )


def protocol_versions() -> dict[str, int]:
    """The protocol versions of this maxa: its fixed rules, and each registered task's (a plugin's too)."""
    return protocols.versions(TASKS.specs())


def load_for_stage(path: Path) -> Params:
    """The params a stage runs from, after checking that the protocols.yaml beside them holds this maxa's
    versions (whether dvc.yaml is current is the guard stage's check, made once before every stage)."""
    params = load_params(path)
    protocols.check_written(path.parent / protocols.FILE, path, protocol_versions())
    return params
