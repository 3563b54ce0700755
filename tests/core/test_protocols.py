"""Protocol versions (core/protocols.py): every rule is covered, and a change to a rule's code without a
version bump fails here.

Each protocol is pinned to a digest of the syntax tree of the code it covers (docstrings, comments and
formatting left out, so only a change of what runs trips it). When this test fails, decide: if the change
can alter any number the protocol produces, bump its version (a task's in its registry entry,
probe/task_specs.py; the others in core/protocols.py; dvc repro then re-runs exactly its stages); either
way, update its pin below to the values the failure prints.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import textwrap

import pytest

from maxa.core import protocols
from maxa.probe.task_specs import TASKS

VERSIONS = protocols.versions(TASKS.specs())
"""maxa's own protocols (this test process loads no plugin)."""

PINS: dict[str, tuple[int, str]] = {
    "targets": (1, "01e974e603a0"),
    "features": (1, "8ba1d6a14fa2"),  # normalize imports torch lazily (same numbers)
    # objective.* and metric.*: declared in probe/task_specs.py, evaluators looked up there (same numbers)
    "objective.semantic": (1, "6d6fa9dcf453"),  # patch_labels imported from its own module (same rule)
    "objective.depth": (1, "64c417c294ea"),
    "objective.boundary": (1, "bb20dcecc858"),
    "objective.instance": (1, "b8eab44877bd"),
    "objective.centers": (1, "449dd24539f4"),  # NMS against the live boxes only (same kept boxes)
    "metric.semantic": (1, "3803828be594"),
    "metric.depth": (1, "1583b257a91a"),  # Eigen crop from maxa.core.dataset_facts (same mask)
    "metric.boundary": (1, "8e8739ab4e72"),
    "metric.instance": (2, "481a45e2b959"),
    "metric.centers": (1, "ea6857adfab6"),
    "local.knn": (1, "cafaf95e88d8"),  # the store contract from maxa.core; covers probe/patch_labels.py
    "local.retrieval": (2, "581efa942d29"),  # 2: intervals over source images
    "local.propagate": (2, "7c7176d1d54c"),  # 2: intervals over videos
}


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return tree


def code_digest(name: str) -> str:
    """Digest of the code a protocol covers: the docstring-free syntax trees of its modules/objects."""
    parts = []
    for target in protocols.COVERS[name]:
        module_name, _, attr = target.partition(":")
        obj = importlib.import_module(module_name)
        if attr:
            obj = getattr(obj, attr)
        tree = _strip_docstrings(ast.parse(textwrap.dedent(inspect.getsource(obj))))
        parts.append(f"{target}\n{ast.dump(tree, annotate_fields=False)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def test_every_protocol_is_covered_and_pinned() -> None:
    assert set(VERSIONS) == set(protocols.COVERS) == set(PINS)


def _where(name: str) -> str:
    head, _, task = name.partition(".")
    if head in ("objective", "metric"):
        return f"{head}_version of the {task!r} TaskSpec in probe/task_specs.py"
    return "its entry in core/protocols.py"


@pytest.mark.parametrize("name", list(VERSIONS))
def test_a_rule_changes_only_with_its_version(name: str) -> None:
    version, pinned = PINS[name]
    digest = code_digest(name)
    current = VERSIONS[name]
    assert (current, digest) == (version, pinned), (
        f"the code of protocol {name} ({', '.join(protocols.COVERS[name])}) is not what its pin says: if "
        f"the change can alter a result, bump {_where(name)} (now {current}); then "
        f'set PINS[{name!r}] in tests/core/test_protocols.py to ({current}, "{digest}") with that version'
    )


def test_every_task_and_local_test_has_its_versions() -> None:
    """A task's two versions come from its registry entry; the local tests are those `maxa local` runs."""
    from maxa.pipelines.local_commands import command as local

    for spec in TASKS.specs():
        assert VERSIONS[f"objective.{spec.name}"] == spec.objective_version
        assert VERSIONS[f"metric.{spec.name}"] == spec.metric_version
    assert set(protocols.LOCAL_TESTS) == set(local.commands)


def test_a_task_declares_versions_of_at_least_one() -> None:
    from dataclasses import replace

    with pytest.raises(ValueError, match="metric_version must be an integer >= 1, got 0"):
        replace(TASKS.get("depth"), metric_version=0)


def test_nested_layout_of_protocols_yaml() -> None:
    assert protocols.nested({"targets": 1, "objective.depth": 2, "objective.semantic": 3}) == {
        "targets": 1,
        "objective": {"depth": 2, "semantic": 3},
    }
