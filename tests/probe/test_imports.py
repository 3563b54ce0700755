"""The probe package's modules import each other without a cycle, lazy (function-level) imports included."""

from __future__ import annotations

import ast
from pathlib import Path

PROBE = Path(__file__).resolve().parents[2] / "probe"


def _imports(path: Path) -> set[str]:
    """The probe modules `path` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = (
                [node.module] if node.module != "maxa.probe" else [f"maxa.probe.{a.name}" for a in node.names]
            )
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        found |= {n.split(".")[2] for n in names if n.startswith("maxa.probe.")}
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` (depth-first search), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (found := visit(dep)) is not None:
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_the_cycle_finder_finds_a_lazy_cycle(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("from maxa.probe.b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from maxa.probe import a\n")
    graph = {p.stem: _imports(p) for p in tmp_path.glob("*.py")}
    assert _cycle(graph) == ["a", "b", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_probe_module_imports_itself_through_others() -> None:
    graph = {p.stem: _imports(p) for p in PROBE.glob("*.py")}
    assert {"train", "engine", "sweep", "member"} <= graph.keys()
    assert "record" in graph["train"] and "member" in graph["engine"]  # the graph is read, not empty
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph) or [])}"
