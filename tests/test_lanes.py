"""The fast lane (`make test-fast`: every test not marked slow or heavy) keeps tests in every test folder,
so the edit-test loop exercises every stage. Read from the test files' source as pytest's marks are spelled
here (`@pytest.mark.slow`, `pytestmark = ...`, a module name bound to a mark), without importing them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
LANE_MARKS = {"slow", "heavy"}


def _is_lane_mark(node: ast.expr, aliases: set[str]) -> bool:
    """Whether `node` is pytest.mark.slow/heavy, a name bound to one, or a list of marks holding one."""
    if isinstance(node, ast.List | ast.Tuple):
        return any(_is_lane_mark(element, aliases) for element in node.elts)
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return node.attr in LANE_MARKS and ast.unparse(node.value).endswith("mark")
    return isinstance(node, ast.Name) and node.id in aliases


def fast_tests(source: str) -> list[str]:
    """The test functions of a module's source that the fast lane runs."""
    tree = ast.parse(source)
    aliases: set[str] = set()
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and _is_lane_mark(statement.value, aliases):
            names = {target.id for target in statement.targets if isinstance(target, ast.Name)}
            if "pytestmark" in names:
                return []
            aliases |= names
    return [
        statement.name
        for statement in tree.body
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef)
        and statement.name.startswith("test")
        and not any(_is_lane_mark(decorator, aliases) for decorator in statement.decorator_list)
    ]


def test_lane_marks_are_read_as_pytest_applies_them() -> None:
    source = """
import pytest
SLOW = pytest.mark.slow

def test_plain(): ...
@pytest.mark.heavy
def test_heavy(): ...
@SLOW
def test_alias(): ...
@pytest.mark.parametrize("x", [1])
@pytest.mark.slow
def test_stacked(x): ...
@pytest.mark.parametrize("x", [1])
def test_parametrized(x): ...
def helper(): ...
"""
    assert fast_tests(source) == ["test_plain", "test_parametrized"]
    assert fast_tests("import pytest\npytestmark = [pytest.mark.heavy]\ndef test_a(): ...") == []
    assert fast_tests("import pytest\npytestmark = pytest.mark.slow\ndef test_a(): ...") == []


FOLDERS = sorted({path.parent for path in TESTS.rglob("test_*.py")})


@pytest.mark.parametrize("folder", FOLDERS, ids=[str(f.relative_to(TESTS.parent)) for f in FOLDERS])
def test_every_test_folder_has_fast_tests(folder: Path) -> None:
    fast = {path.name: fast_tests(path.read_text()) for path in sorted(folder.glob("test_*.py"))}
    assert any(fast.values()), f"{folder}: every test is marked slow or heavy; `make test-fast` skips it all"
