"""The DVC DAG as `maxa pipeline run` schedules it: stages, their upstream stages, where each runs.

Read through DVC's own index (the graph `dvc repro` and `dvc dag` use), so a stage's address, command
and edges are exactly DVC's. Which stages need running is DVC's answer too (`dvc status`): a changed
stage and everything downstream of it; each is then run by `dvc repro --single-item`, which skips it
when its inputs turned out unchanged.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maxa.core.errors import MaxaError
from maxa.pipelines.stages import CPU, DEVICE, GATE, STAGES

STAGE_KINDS: dict[str, str] = {
    # maxa subcommand -> where its stage runs: the stage table's, and commands a hand-written stage may run
    **{stage.command: stage.kind for stage in STAGES.values()},
    "compare": CPU,
    "params": CPU,
}
UNKNOWN_KIND = DEVICE
"""A command that is not `maxa <stage>` may use a device: it takes a device slot (the safe side)."""

_SEPARATORS = {"&&", "||", ";", "|"}
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Stage:
    name: str  # DVC's address: `probe_semantic@vit_tiny`, or `sub/dvc.yaml:name` outside the root
    cmd: str
    kind: str
    upstream: frozenset[str]


def _maxa_subcommands(cmd: str) -> list[str | None]:
    """The maxa subcommand of each simple command in a shell line (None: not a maxa command)."""
    try:
        tokens = shlex.split(cmd, posix=True)
    except ValueError:
        return [None]
    parts: list[list[str]] = [[]]
    for token in tokens:
        if token in _SEPARATORS:
            parts.append([])
        else:
            parts[-1].append(token)
    found: list[str | None] = []
    for part in filter(None, parts):
        words = list(part)
        while words and _ASSIGNMENT.match(words[0]):  # `FOO=1 maxa probe ...`
            words.pop(0)
        program = Path(words[0]).name if words else ""
        if program != "maxa":
            found.append(None)
            continue
        found.append(next((w for w in words[1:] if not w.startswith("-")), None))
    return found


def stage_kind(cmd: str | Iterable[str]) -> str:
    """Where a stage runs, from its command(s) and STAGE_KINDS: device if any part needs a device."""
    lines = [cmd] if isinstance(cmd, str) else list(cmd)
    kinds = {
        STAGE_KINDS.get(sub, UNKNOWN_KIND) if sub else UNKNOWN_KIND
        for line in lines
        for sub in _maxa_subcommands(line)
    }
    for kind in (DEVICE, GATE, CPU):
        if kind in kinds:
            return kind
    return UNKNOWN_KIND


def read_dag(root: Path) -> tuple[dict[str, Stage], set[str]]:
    """Every stage with a command in the DVC project at `root` (keyed by its address from `root`, as
    `dvc repro` there takes it), and the ones `dvc status` reports changed (own deps, params, outs, cmd)."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            graph = repo.index.graph
            address = {stage: _address(stage, root) for stage in graph.nodes}
            stages = {
                address[stage]: Stage(
                    address[stage],
                    _cmd_text(stage.cmd),
                    stage_kind(stage.cmd),
                    frozenset(address[up] for up in graph.successors(stage) if up.cmd),
                )
                for stage in graph.nodes
                if stage.cmd  # a `.dvc` file's data: nothing to run
            }
            by_dvc_name = {stage.addressing: address[stage] for stage in graph.nodes}
            changed = {by_dvc_name.get(name, name) for name, changes in repo.status().items() if changes}
    except DvcException as exc:
        raise MaxaError(f"cannot read the DVC pipeline in {root}: {_one_line(exc)}") from exc
    return stages, changed & set(stages)


def _address(stage: Any, root: Path) -> str:
    """`name` for a stage of root/dvc.yaml, `sub/dvc.yaml:name` for another dvc.yaml, the path for a
    `.dvc` file: DVC's own addressing, relative to `root` instead of the current directory."""
    relative = os.path.relpath(stage.path, root)
    name = getattr(stage, "name", None)
    if name is None:
        return relative
    return name if relative == "dvc.yaml" else f"{relative}:{name}"


def _cmd_text(cmd: str | list[str]) -> str:
    return cmd if isinstance(cmd, str) else " && ".join(cmd)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def downstream(stages: Mapping[str, Stage], names: Iterable[str]) -> set[str]:
    """`names` and every stage that depends on one of them, directly or not."""
    below: dict[str, set[str]] = {name: set() for name in stages}
    for stage in stages.values():
        for up in stage.upstream:
            below.setdefault(up, set()).add(stage.name)
    out: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in out:
            out.add(name)
            todo.extend(below.get(name, ()))
    return out


def to_run(stages: Mapping[str, Stage], changed: Iterable[str]) -> set[str]:
    """What `dvc repro` would consider: changed stages and everything downstream of them."""
    return downstream(stages, [name for name in changed if name in stages])
