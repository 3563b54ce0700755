"""Versions of the protocol code: the rules that turn data into a published number.

An upgrade of maxa that changes a rule (a target rule, the preprocessing, a task's loss or decoding, a
metric, a local test's definition) bumps that rule's version here. `maxa pipeline` writes the table into
protocols.yaml beside dvc.yaml and every generated stage tracks the entries of the code it runs, so
`dvc repro` after the upgrade (and `maxa pipeline`) re-runs exactly the stages whose protocol changed,
and a leaderboard never mixes results of two versions of one rule. The tests pin each entry to the code
it names (COVERS): a change to that code without a bump fails them.
"""

from __future__ import annotations

from collections.abc import Mapping

TASKS = ("semantic", "depth", "boundary", "instance", "centers")
LOCAL_TESTS = ("knn", "retrieval", "propagate")

VERSIONS: dict[str, int] = {
    "targets": 1,
    "features": 1,
    **{f"objective.{task}": 1 for task in TASKS},
    **{f"metric.{task}": 1 for task in TASKS},
    "metric.instance": 2,  # 2: the ARI variants ari_fg and pair_auc beside ARI (its value unchanged)
    **{f"local.{test}": 1 for test in LOCAL_TESTS},
}
"""Protocol -> version. `objective.<task>`: what a probe of the task learns (targets encoding, loss);
`metric.<task>`: how its predictions are decoded and scored; `local.<test>`: a parameter-free test."""

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
    "objective.semantic": ("maxa.probe.tasks:SemanticSegmentation",),
    "objective.depth": ("maxa.probe.tasks:Depth",),
    "objective.boundary": ("maxa.probe.tasks:Boundary",),
    "objective.instance": (
        "maxa.probe.tasks:InstanceDiscrimination",
        "maxa.probe.tasks:InstanceHead",
        "maxa.probe.tasks:dense_instance_ids",
    ),
    "objective.centers": ("maxa.probe.tasks:Centers", "maxa.probe.centernet"),
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
"""Protocol -> the code whose rules it versions (`module` or `module:object`)."""


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
