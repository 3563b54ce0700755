"""Protocol versions (core/protocols.py): every rule is covered, and a change to a rule's code without a
version bump fails here.

Each protocol is pinned to a digest of the syntax tree of the code it covers (docstrings, comments and
formatting left out, so only a change of what runs trips it). When this test fails, decide: if the change
can alter any number the protocol produces, bump its entry in core/protocols.py VERSIONS (dvc repro then
re-runs exactly its stages); either way, update its pin below to the values the failure prints.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import textwrap

import pytest

from maxa.core import protocols

PINS: dict[str, tuple[int, str]] = {
    "targets": (1, "01e974e603a0"),
    "features": (1, "8ba1d6a14fa2"),  # normalize imports torch lazily (same numbers)
    "objective.semantic": (1, "f07a1314452e"),
    "objective.depth": (1, "155b4210f958"),
    "objective.boundary": (1, "8308ace0e051"),
    "objective.instance": (1, "b6c1e090ff54"),
    "objective.centers": (1, "79dc70ff6df6"),
    "metric.semantic": (1, "38c3fcfbfe99"),
    "metric.depth": (1, "505b6fca2954"),
    "metric.boundary": (1, "67b96d322b9b"),
    "metric.instance": (2, "b99e2641fe6b"),
    "metric.centers": (1, "f716cb4f2cbe"),
    "local.knn": (1, "760e47dc5096"),
    "local.retrieval": (1, "c43ade23b38d"),
    "local.propagate": (1, "256c0507bbfd"),
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
    assert set(protocols.VERSIONS) == set(protocols.COVERS) == set(PINS)


@pytest.mark.parametrize("name", list(protocols.VERSIONS))
def test_a_rule_changes_only_with_its_version(name: str) -> None:
    version, pinned = PINS[name]
    digest = code_digest(name)
    current = protocols.VERSIONS[name]
    assert (current, digest) == (version, pinned), (
        f"the code of protocol {name} ({', '.join(protocols.COVERS[name])}) is not what its pin says: if "
        f"the change can alter a result, bump VERSIONS[{name!r}] in core/protocols.py (now {current}); then "
        f'set PINS[{name!r}] in tests/core/test_protocols.py to ({current}, "{digest}") with that version'
    )


def test_the_tables_name_every_task_and_local_test() -> None:
    from maxa.pipelines.local_commands import command as local
    from maxa.probe.config import TASK_NAMES

    assert protocols.TASKS == TASK_NAMES
    assert set(protocols.LOCAL_TESTS) == set(local.commands)


def test_nested_layout_of_protocols_yaml() -> None:
    assert protocols.nested({"targets": 1, "objective.depth": 2, "objective.semantic": 3}) == {
        "targets": 1,
        "objective": {"depth": 2, "semantic": 3},
    }
