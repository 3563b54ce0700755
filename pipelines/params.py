"""params.yaml -> validated stage configs (the same dataclasses the CLI builds from its options).

Two layouts, told apart by a top-level `datasets` section:
- `Params` (params.yaml, the demo): one dataset (`prepare`), backbones x `probe.tasks`;
- `MatrixParams` (pipelines/paper/params.yaml): `datasets` x backbones x `tasks`, where each task entry
  names the dataset it is trained and scored on and overrides the shared `probe` settings.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from maxa.extract.config import ExtractConfig
from maxa.extract.errors import MaxaError
from maxa.extract.targets import PrepareConfig
from maxa.probe.train import ProbeConfig


@dataclass
class PrepareParams:
    dataset: str
    label_size: int
    shard_size: int
    splits: dict[str, int]
    options: dict[str, Any] = field(default_factory=dict)

    def configs(self) -> list[PrepareConfig]:
        return [
            PrepareConfig(
                dataset=self.dataset,
                split=split,
                label_size=self.label_size,
                shard_size=self.shard_size,
                options={**self.options, "num_images": n},
            )
            for split, n in self.splits.items()
        ]


@dataclass
class ExtractParams:
    batch_size: int
    shard_size: int
    backbones: dict[str, ExtractConfig]


@dataclass
class EvaluateParams:
    batch_size: int = 64


@dataclass
class PlotsParams:
    """The `plots` section: how many held-out images the qualitative panels and PCA maps show."""

    count: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.count <= 64:
            raise MaxaError(f"plots.count must be 1..64, got {self.count}")


@dataclass
class ProbeParams:
    """The `probe` section: the tasks every backbone is probed on, and the settings they share."""

    tasks: list[str]
    configs: dict[str, ProbeConfig]  # task -> what `maxa probe --task T` runs with


@dataclass
class Params:
    prepare: PrepareParams
    extract: ExtractParams
    probe: ProbeParams
    evaluate: EvaluateParams
    plots: PlotsParams = field(default_factory=PlotsParams)


@dataclass
class DatasetParams:
    """One dataset of an experiment matrix: its reader, files, label size and the two splits used."""

    dataset: str
    root: str | None
    label_size: int
    shard_size: int
    train_split: str
    test_split: str
    train_images: int
    test_images: int

    def configs(self) -> list[PrepareConfig]:
        return [
            PrepareConfig(
                dataset=self.dataset,
                split=split,
                label_size=self.label_size,
                shard_size=self.shard_size,
                root=self.root,
                options={"num_images": n},
            )
            for split, n in ((self.train_split, self.train_images), (self.test_split, self.test_images))
        ]


@dataclass
class TaskRunParams:
    """One `tasks` entry: the dataset it uses and the full probe config (shared settings + overrides)."""

    dataset: str
    config: ProbeConfig


@dataclass
class MatrixParams:
    datasets: dict[str, DatasetParams]
    extract: ExtractParams
    probe: dict[str, Any]
    tasks: dict[str, TaskRunParams]
    evaluate: EvaluateParams
    plots: PlotsParams = field(default_factory=PlotsParams)


def _build(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise MaxaError(f"params section {where} must be a mapping, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise MaxaError(f"params section {where}: unknown keys {unknown} (allowed: {sorted(names)})")
    hints = typing.get_type_hints(cls)
    coerced = {}
    for key, value in values.items():
        if hints[key] in (int, float) and isinstance(value, str):
            try:  # YAML reads 1e-3 (no dot) as a string
                value = hints[key](value)
            except ValueError:
                raise MaxaError(f"params section {where}: {key} must be a number, got {value!r}") from None
        coerced[key] = value
    try:
        return cls(**coerced)
    except TypeError as exc:
        raise MaxaError(f"params section {where}: {exc}") from exc


def _layers(value: Any) -> list[int]:
    return [int(v) for v in str(value).split(",")] if not isinstance(value, list) else [int(v) for v in value]


PROBE_SHARED = sorted({f.name for f in dataclasses.fields(ProbeConfig)} - {"task"})
TASK_KEYS = ("task", "dataset", "iterations", "query_grid")
"""What one `tasks` entry of a matrix sets (pipelines/paper/dvc.yaml reads exactly these)."""


def _probe_values(raw: Any, where: str, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """ProbeConfig keys other than `task` (plus `extra`), with `layer` as the string the CLI takes."""
    if not isinstance(raw, dict):
        raise MaxaError(f"params section {where} must be a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(PROBE_SHARED) - set(extra))
    if unknown:
        hint = " (list tasks under `tasks`)" if "task" in unknown else ""
        allowed = sorted([*PROBE_SHARED, *extra])
        raise MaxaError(f"params section {where}: unknown keys {unknown}{hint} (allowed: {allowed})")
    return {k: (str(v) if k == "layer" else v) for k, v in raw.items()}


def _probe(raw: Any) -> ProbeParams:
    values = _probe_values(raw, "probe", ("tasks",))
    tasks = values.pop("tasks", None)
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
        raise MaxaError(f"params section probe: tasks must be a non-empty list of task names, got {tasks!r}")
    if len(set(tasks)) != len(tasks):
        raise MaxaError(f"params section probe: tasks lists a task twice: {tasks}")
    configs = {task: _build(ProbeConfig, {**values, "task": task}, "probe") for task in tasks}
    return ProbeParams(tasks=list(tasks), configs=configs)


def _extract(raw: Any) -> ExtractParams:
    if not isinstance(raw, dict):
        raise MaxaError(f"params section extract must be a mapping, got {type(raw).__name__}")
    extract = dict(raw)
    backbones = {}
    for name, entry in (extract.pop("backbones", None) or {}).items():
        if not isinstance(entry, dict):
            raise MaxaError(f"params section extract.backbones.{name} must be a mapping")
        entry = {
            **entry,
            "name": name,
            "batch_size": extract.get("batch_size", 32),
            "shard_size": extract.get("shard_size", 32),
        }
        if "layers" in entry:
            try:
                entry["layers"] = _layers(entry["layers"])
            except ValueError as exc:
                raise MaxaError(
                    f"params section extract.backbones.{name}: layers must be comma-separated integers, "
                    f"got {entry['layers']!r}"
                ) from exc
        backbones[name] = _build(ExtractConfig, entry, f"extract.backbones.{name}")
    if not backbones:
        raise MaxaError("extract.backbones lists no backbone")
    return _build(ExtractParams, {**extract, "backbones": backbones}, "extract")


def _require(raw: dict[str, Any], sections: tuple[str, ...], path: Path) -> None:
    missing = [s for s in sections if s not in raw]
    if missing:
        raise MaxaError(f"{path} lacks sections {missing}")


def _datasets(raw: Any) -> dict[str, DatasetParams]:
    from maxa.extract.datasets import dataset_names

    if not isinstance(raw, dict) or not raw:
        raise MaxaError("params section datasets must map names to dataset entries")
    datasets = {}
    for name, entry in raw.items():
        where = f"datasets.{name}"
        params = _build(DatasetParams, entry, where)
        if params.dataset not in dataset_names():
            raise MaxaError(
                f"params section {where}: unknown dataset reader {params.dataset!r} "
                f"(known: {', '.join(dataset_names())})"
            )
        params.configs()  # PrepareConfig validates label and shard sizes
        if min(params.train_images, params.test_images) < 1:
            raise MaxaError(f"params section {where}: train_images and test_images must be >= 1")
        datasets[name] = params
    return datasets


def _tasks(raw: Any, shared: dict[str, Any], datasets: dict[str, DatasetParams]) -> dict[str, TaskRunParams]:
    if not isinstance(raw, dict) or not raw:
        raise MaxaError("params section tasks must map run names to task entries")
    runs = {}
    for name, entry in raw.items():
        where = f"tasks.{name}"
        if not isinstance(entry, dict):
            raise MaxaError(f"params section {where} must be a mapping, got {type(entry).__name__}")
        keys = sorted(entry)
        if keys != sorted(TASK_KEYS):
            raise MaxaError(
                f"params section {where}: has keys {keys}, expected exactly {sorted(TASK_KEYS)} "
                "(the keys dvc.yaml passes per task; the rest come from the probe section)"
            )
        dataset = entry["dataset"]
        if dataset not in datasets:
            raise MaxaError(
                f"params section {where}: dataset {dataset!r} is not in datasets ({sorted(datasets)})"
            )
        overrides = {k: v for k, v in entry.items() if k != "dataset"}
        config = _build(ProbeConfig, {**shared, **overrides}, where)
        runs[name] = TaskRunParams(dataset=str(dataset), config=config)
    return runs


def _load_matrix(raw: dict[str, Any], path: Path) -> MatrixParams:
    _require(raw, ("datasets", "extract", "probe", "tasks", "evaluate"), path)
    datasets = _datasets(raw["datasets"])
    shared = _probe_values(raw["probe"], "probe")
    per_task = sorted(set(shared) & set(TASK_KEYS))
    if per_task:
        raise MaxaError(f"params section probe: {per_task} are set per task in a matrix (under tasks.<run>)")
    return MatrixParams(
        datasets=datasets,
        extract=_extract(raw["extract"]),
        probe=shared,
        tasks=_tasks(raw["tasks"], shared, datasets),
        evaluate=_build(EvaluateParams, raw["evaluate"], "evaluate"),
        plots=_build(PlotsParams, raw.get("plots") or {}, "plots"),
    )


def load_params(path: Path) -> Params | MatrixParams:
    """Parse and validate every section; unknown or mistyped keys are one-line errors naming them."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise MaxaError(f"cannot read {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise MaxaError(f"{path} must hold a mapping of sections")
    if "datasets" in raw:
        return _load_matrix(raw, path)
    _require(raw, ("prepare", "extract", "probe", "evaluate"), path)
    return Params(
        prepare=_build(PrepareParams, raw["prepare"], "prepare"),
        extract=_extract(raw["extract"]),
        probe=_probe(raw["probe"]),
        evaluate=_build(EvaluateParams, raw["evaluate"], "evaluate"),
        plots=_build(PlotsParams, raw.get("plots") or {}, "plots"),
    )
