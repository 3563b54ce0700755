"""Versions of the protocol code: the rules that turn data into a published number.

An upgrade of maxa that changes a rule (a target rule, the preprocessing, a local test's definition) bumps
that rule's version here; a task's two rules (its loss, its decoding and scoring) are versioned by its
registry entry (`TaskSpec.objective_version` / `metric_version`, probe/task_specs.py), a plugin's task
too. `maxa pipeline` writes the table (`versions`) into protocols.yaml beside dvc.yaml and every generated
stage tracks the entries of the code it runs, so `dvc repro` after the upgrade (and `maxa pipeline`)
re-runs exactly the stages whose protocol changed, and a leaderboard never mixes results of two versions
of one rule. The tests pin each of maxa's entries to the code it names (COVERS): a change to that code
without a bump fails them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

from maxa.core.errors import MaxaError

STORES: dict[str, int] = {"targets": 1, "features": 1}
"""How a target store and a feature store are made from the data."""

LOCAL_TESTS: dict[str, int] = {
    "knn": 1,
    "retrieval": 2,  # 2: intervals (a bootstrap over source images) in the record, scores unchanged
    "propagate": 2,  # 2: intervals (a bootstrap over videos) in the record, scores unchanged
}
"""`maxa local <test>` -> the version of the parameter-free test."""


class VersionedTask(Protocol):
    """What `versions` reads of a task's registry entry (probe/task_specs.py TaskSpec)."""

    @property
    def name(self) -> str: ...

    @property
    def objective_version(self) -> int: ...

    @property
    def metric_version(self) -> int: ...


def versions(tasks: Iterable[VersionedTask]) -> dict[str, int]:
    """Protocol -> version, for the registered `tasks` (maxa's own and plugins'). `objective.<task>`: what
    a probe of the task learns (targets encoding, loss); `metric.<task>`: how its predictions are decoded
    and scored; `local.<test>`: a parameter-free test."""
    tasks = list(tasks)
    return {
        **STORES,
        **{f"objective.{task.name}": task.objective_version for task in tasks},
        **{f"metric.{task.name}": task.metric_version for task in tasks},
        **{f"local.{test}": version for test, version in LOCAL_TESTS.items()},
    }


COVERS: dict[str, tuple[str, ...]] = {
    "targets": (
        "maxa.extract.targets:label_shape",
        "maxa.extract.targets:_label_arrays",
        "maxa.extract.transforms:resize_nearest",
        "maxa.extract.transforms:boundary_window",
        "maxa.extract.transforms:instance_boundaries",
    ),
    "features": (
        "maxa.extract.transforms:resize_image",
        "maxa.extract.transforms:normalize",
        "maxa.extract.features:_Images",
    ),
    "objective.semantic": ("maxa.probe.tasks:SemanticSegmentation", "maxa.probe.task_specs:SemanticOptions"),
    "objective.depth": ("maxa.probe.tasks:Depth", "maxa.probe.task_specs:DepthOptions"),
    "objective.boundary": ("maxa.probe.tasks:Boundary",),
    "objective.instance": (
        "maxa.probe.tasks:InstanceDiscrimination",
        "maxa.probe.tasks:InstanceHead",
        "maxa.probe.tasks:dense_instance_ids",
        "maxa.probe.task_specs:InstanceOptions",
    ),
    "objective.centers": (
        "maxa.probe.tasks:Centers",
        "maxa.probe.centernet",
        "maxa.probe.task_specs:CentersOptions",
    ),
    "metric.semantic": ("maxa.evaluate.run:SemanticEvaluator", "maxa.evaluate.metrics:ConfusionMatrix"),
    "metric.depth": ("maxa.evaluate.run:DepthEvaluator", "maxa.evaluate.metrics:DepthMetrics"),
    "metric.boundary": ("maxa.evaluate.run:BoundaryEvaluator", "maxa.evaluate.metrics:BinaryMetrics"),
    "metric.instance": (
        "maxa.evaluate.run:InstanceEvaluator",
        "maxa.evaluate.metrics:InstanceARI",
        "maxa.evaluate.metrics:cluster_instances",
    ),
    "metric.centers": ("maxa.evaluate.run:CentersEvaluator", "maxa.evaluate.metrics:BoxAP"),
    "local.knn": ("maxa.evaluate.local.knn", "maxa.probe.patch_labels"),
    "local.retrieval": ("maxa.evaluate.local.retrieval",),
    "local.propagate": ("maxa.evaluate.local.propagation", "maxa.evaluate.local.jf"),
}
"""Protocol -> the code whose rules it versions (`module` or `module:object`): maxa's own protocols."""


def nested(versions: Mapping[str, int]) -> dict[str, object]:
    """`{"objective.semantic": 1}` -> `{"objective": {"semantic": 1}}`: the layout of protocols.yaml,
    whose dotted keys DVC tracks one by one."""
    out: dict[str, object] = {}
    for name, value in versions.items():
        head, _, tail = name.partition(".")
        if tail:
            group = out.setdefault(head, {})
            assert isinstance(group, dict)
            group[tail] = value
        else:
            out[head] = value
    return out


FILE = "protocols.yaml"
"""Where `maxa pipeline` writes the table, beside dvc.yaml (committed: the versions of the results)."""

HEADER = (
    "# Generated by `maxa pipeline`: the protocol versions this maxa runs (maxa.core.protocols).\n"
    "# Each stage of dvc.yaml tracks the entries of the code it runs; an upgrade that changes a rule\n"
    "# bumps its entry, and `maxa pipeline` + `dvc repro` re-run exactly the stages that use it."
)


def render(versions: Mapping[str, int]) -> str:
    """protocols.yaml: the versions of this maxa (`versions`)."""
    import yaml

    return f"{HEADER}\n{yaml.safe_dump(nested(versions), sort_keys=False)}"


def check_written(path: Path, params_path: Path, versions: Mapping[str, int]) -> None:
    """Refuse to run a stage whose protocols.yaml (`path`, generated by `maxa pipeline`) names other
    versions than this maxa runs (`versions`): after an upgrade its results would be recorded under the old
    versions. A missing or hand-written file is not maxa's to judge."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise MaxaError(f"cannot read {path}: {exc}") from exc
    if text.startswith(HEADER.splitlines()[0]) and text != render(versions):
        raise MaxaError(
            f"{path} does not hold this maxa's protocol versions (an upgrade changed a rule); "
            f"run `maxa pipeline {params_path}` and commit it: `dvc repro` then re-runs what changed"
        )
