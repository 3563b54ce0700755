"""The run's timeline arithmetic (critical path, priorities, busy fractions) against brute force, and the
runner's order: the stage heading the longest remaining path is handed out first."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from maxa.pipelines import dag
from maxa.pipelines.run_progress import Progress
from maxa.pipelines.runner import ready
from maxa.pipelines.timeline import Span, critical_path, priorities, read_seconds, summarise, write


def _random_dag(seed: int, size: int = 9) -> dict[str, set[str]]:
    rng = random.Random(seed)
    names = [f"s{i}" for i in range(size)]
    return {n: {names[j] for j in range(i) if rng.random() < 0.35} for i, n in enumerate(names)}


def _paths(upstream: dict[str, set[str]]) -> list[list[str]]:
    """Every chain of the DAG, upstream first (brute force: each stage extended by each upstream)."""
    out: list[list[str]] = []

    def grow(chain: list[str]) -> None:
        out.append(chain[::-1])
        for up in upstream[chain[-1]]:
            grow([*chain, up])

    for name in upstream:
        grow([name])
    return out


@pytest.mark.parametrize("seed", range(6))
def test_critical_path_and_priorities_equal_brute_force(seed: int) -> None:
    upstream = _random_dag(seed)
    rng = random.Random(100 + seed)
    seconds = {name: rng.uniform(0.5, 5.0) for name in upstream}
    chains = _paths(upstream)
    longest = max(chains, key=lambda chain: sum(seconds[n] for n in chain))
    total, path = critical_path(seconds, upstream)
    assert total == pytest.approx(sum(seconds[n] for n in longest))
    assert path in chains and sum(seconds[n] for n in path) == pytest.approx(total)
    rank = priorities(upstream, seconds)
    for name in upstream:  # own time plus the longest chain below it
        assert rank[name] == pytest.approx(
            max(sum(seconds[n] for n in chain) for chain in chains if chain[0] == name)
        )


def test_priorities_without_a_timeline_count_stages_and_unknown_stages_get_the_median() -> None:
    upstream = {"a": set(), "b": {"a"}, "c": {"b"}, "x": set()}
    assert priorities(upstream, {}) == {"a": 3.0, "b": 2.0, "c": 1.0, "x": 1.0}
    rank = priorities(upstream, {"a": 10.0, "b": 2.0, "x": 4.0})  # c unknown: median of 10, 2, 4
    assert rank == {"a": 16.0, "b": 6.0, "c": 4.0, "x": 4.0}


def _spans() -> list[Span]:
    return [
        Span("prep", "cpu", "0/cpu_stage", 100.0, 102.0, 1.5, True, 0),
        Span("long", "device", "0/device", 102.0, 110.0, 12.0, True, 0),
        Span("short", "device", "1/device", 102.5, 104.0, 2.0, True, 0),
        Span("end", "cpu", "1/cpu_stage", 110.0, 111.0, 0.5, False, 0),
    ]


def test_summary_numbers_and_files(tmp_path: Path) -> None:
    spans = _spans()
    upstream = {"prep": set(), "long": {"prep"}, "short": {"prep"}, "end": {"long", "short"}}
    summary = summarise(spans, upstream, cores=2)
    assert summary.wall == 11.0 and summary.work == 12.5 and summary.cpu == 16.0
    assert summary.busy == pytest.approx(
        {"0/cpu_stage": 2 / 11, "0/device": 8 / 11, "1/device": 1.5 / 11, "1/cpu_stage": 1 / 11}
    )
    assert summary.critical_path == ["prep", "long", "end"] and summary.critical_seconds == 11.0
    assert summary.bound() == 11.0  # the critical path beats CPU-s / cores (8 s)
    assert summarise(spans, upstream, cores=1).bound() == 16.0
    remote = summarise(spans, upstream, cores=0)  # a remote cluster's cores are unknown: the path alone
    assert remote.bound() == 11.0 and remote.lines()[-1] == "bound: 11.0 s (the critical path)"
    as_json, as_csv = write(tmp_path, spans, summary)
    record = json.loads(as_json.read_text())
    assert [s["stage"] for s in record["spans"]] == [s.stage for s in spans]
    assert record["summary"]["bound"] == 11.0
    rows = as_csv.read_text().splitlines()
    assert rows[0].split(",")[:3] == ["stage", "kind", "lane"] and len(rows) == 5
    assert read_seconds(tmp_path) == {"prep": 2.0, "long": 8.0, "short": 1.5}  # ran only
    (tmp_path / "timeline.json").write_text("{not json")
    assert read_seconds(tmp_path) == {}


def test_ready_hands_out_the_longest_remaining_path_first() -> None:
    """A DAG where dvc.yaml lists three short independent stages before the head of a long chain: the
    head must come first, or the chain finishes last on an idle cluster."""
    names = ["short1", "short2", "short3", "head", "middle", "tail"]
    ups = {"middle": {"head"}, "tail": {"middle"}}
    stages = {n: dag.Stage(n, "cmd", dag.DEVICE, frozenset(ups.get(n, ()))) for n in names}
    progress = Progress({n: dag.DEVICE for n in names}, echo=lambda _: None)
    upstream = {n: set(stages[n].upstream) for n in names}
    assert ready(stages, progress) == ["short1", "short2", "short3", "head"]  # dvc.yaml order
    order = ready(stages, progress, priorities(upstream, {}))
    assert order[0] == "head" and order[1:] == ["short1", "short2", "short3"]
    # measured durations win over stage counts: a long independent stage goes before a short chain
    rank = priorities(upstream, {"short2": 30.0, "head": 1.0, "middle": 1.0, "tail": 1.0})
    assert ready(stages, progress, rank)[:2] == ["short2", "head"]
