"""The dependency rule, read from the source: which stage may import which, and whose internals stay home.

Dependencies point one way (pipelines -> evaluate -> probe -> extract, all of them -> core; core imports
no stage). On top of the direction, a stage reaches the store contract, the records, layer naming and the
choice checks through maxa.core, never through another stage: probe imports nothing of extract's target
code, dataset readers or store, and evaluate imports no dataset reader, no target code and no store of
extract. Every import counts, also one inside a function (lazy imports are still dependencies).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("core", "extract", "probe", "evaluate", "pipelines")

ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "extract": {"core"},
    "probe": {"core", "extract"},
    "evaluate": {"core", "extract", "probe"},
    "pipelines": {"core", "extract", "probe", "evaluate"},
}
"""The stages each stage may import (besides itself)."""

FORBIDDEN: dict[str, tuple[str, ...]] = {
    "probe": ("maxa.extract.targets", "maxa.extract.datasets", "maxa.extract.store"),
    "evaluate": ("maxa.extract.targets", "maxa.extract.datasets", "maxa.extract.store"),
}
"""Modules (and everything under them) a stage may not import although their stage is allowed."""


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file; `from a import b` counts as both `a` and `a.b` (b may
    be a submodule)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return found


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "maxa" and parts[1] in STAGES else None


def violations(stage: str, root: Path = ROOT) -> list[str]:
    found = []
    for path in sorted((root / stage).rglob("*.py")):
        for line, module in imported_modules(path):
            other = stage_of(module)
            if other is None or other == stage:
                continue
            where = f"{path.relative_to(root)}:{line} imports {module}"
            if other not in ALLOWED[stage]:
                found.append(f"{where} ({stage} may import only {sorted(ALLOWED[stage])})")
            elif any(module == f or module.startswith(f + ".") for f in FORBIDDEN.get(stage, ())):
                found.append(f"{where} (another stage's internals: move what it needs to maxa.core)")
    return found


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_imports_only_what_the_dependency_rule_allows(stage: str) -> None:
    assert violations(stage) == []


def test_the_scan_finds_lazy_upward_and_sideways_imports(tmp_path: Path) -> None:
    (tmp_path / "probe" / "sub").mkdir(parents=True)
    (tmp_path / "probe" / "sub" / "m.py").write_text(
        "from maxa.core import store as st\n"
        "from maxa.extract import backbones\n"
        "def f():\n"
        "    from maxa.evaluate.run import evaluate\n"
        "    import maxa.extract.datasets.nyu\n"
        "from maxa.extract import targets\n"
    )
    found = violations("probe", tmp_path)
    assert sorted(v.split(" (")[0] for v in found) == [
        "probe/sub/m.py:4 imports maxa.evaluate.run",
        "probe/sub/m.py:4 imports maxa.evaluate.run.evaluate",
        "probe/sub/m.py:5 imports maxa.extract.datasets.nyu",
        "probe/sub/m.py:6 imports maxa.extract.targets",
    ]
