"""When and where each stage of a `maxa pipeline run` ran, and what bounds the run's wall time.

Every stage attempt that returned leaves a span: start and end (wall clock of its worker), the slot
it held (a worker's `device` or `cpu_stage` slot: one stage at a time each) and the CPU seconds of its
process tree (`dvc repro`, the shell and the maxa command: the child's rusage from wait4, which holds
every descendant it waited for). `summarise` turns the spans into the numbers that say whether more
workers could help: each slot's busy fraction, the critical path (the longest chain of measured stage
durations through the DAG: no schedule can beat it) and the total CPU over the cores (nor that, on a
machine whose stages are CPU-bound). The run writes them beside its logs (`timeline.json`,
`timeline.csv`); the next run orders stages by them (`priorities`).
"""

from __future__ import annotations

import csv
import json
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

FILE_JSON, FILE_CSV = "timeline.json", "timeline.csv"


@dataclass(frozen=True)
class Span:
    stage: str
    kind: str
    lane: str  # `<worker>/<slot>`: one stage at a time
    start: float  # seconds since the epoch, on the worker's clock
    end: float
    cpu_seconds: float  # user + system of the stage's process tree
    ran: bool  # DVC ran the command (False: up to date)
    returncode: int

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Summary:
    wall: float  # first start to last end
    work: float  # sum of stage durations
    cpu: float  # sum of stage CPU seconds
    busy: dict[str, float]  # lane -> fraction of `wall` it ran a stage
    critical_path: list[str]  # stages, upstream first
    critical_seconds: float
    cores: int

    def bound(self) -> float:
        """No schedule on `cores` can finish these stages faster: the critical path, and the CPU the
        stages needed spread over every core (cores 0: unknown, as on a remote cluster; the path alone)."""
        return max(self.critical_seconds, self.cpu / self.cores if self.cores else 0.0)

    def lines(self) -> list[str]:
        busy = ", ".join(f"{lane} {fraction:.0%}" for lane, fraction in sorted(self.busy.items()))
        return [
            f"timeline: {self.wall:.1f} s wall; stages {self.work:.1f} s in all, {self.cpu:.1f} CPU-s "
            f"({self.cpu / self.wall if self.wall else 0:.2f} cores busy on average"
            + (f" of {self.cores})" if self.cores else ")"),
            f"busy: {busy}",
            f"critical path {self.critical_seconds:.1f} s: {' -> '.join(self.critical_path)}",
            f"bound: {self.bound():.1f} s ("
            + (
                f"max of the critical path and CPU-s / {self.cores} cores)"
                if self.cores
                else "the critical path)"
            ),
        ]


def critical_path(
    seconds: Mapping[str, float], upstream: Mapping[str, Iterable[str]]
) -> tuple[float, list[str]]:
    """The longest chain of `seconds` through the DAG (edges among the stages in `seconds` only)."""
    finish: dict[str, float] = {}
    before: dict[str, str | None] = {}

    def longest(name: str) -> float:
        if name not in finish:
            ups = [up for up in upstream.get(name, ()) if up in seconds]
            best = max(ups, key=longest, default=None)
            before[name] = best
            finish[name] = seconds[name] + (longest(best) if best is not None else 0.0)
        return finish[name]

    if not seconds:
        return 0.0, []
    last = max(sorted(seconds), key=longest)
    path = [last]
    while (up := before[path[-1]]) is not None:
        path.append(up)
    return finish[last], path[::-1]


def summarise(spans: list[Span], upstream: Mapping[str, Iterable[str]], cores: int) -> Summary:
    """The run's numbers from its spans (the last attempt of each stage)."""
    if not spans:
        return Summary(0.0, 0.0, 0.0, {}, [], 0.0, cores)
    wall = max(s.end for s in spans) - min(s.start for s in spans)
    busy: dict[str, float] = {}
    for span in spans:
        busy[span.lane] = busy.get(span.lane, 0.0) + span.seconds
    total, path = critical_path({s.stage: s.seconds for s in spans}, upstream)
    return Summary(
        wall=wall,
        work=sum(s.seconds for s in spans),
        cpu=sum(s.cpu_seconds for s in spans),
        busy={lane: (t / wall if wall else 0.0) for lane, t in busy.items()},
        critical_path=path,
        critical_seconds=total,
        cores=cores,
    )


def write(folder: Path, spans: list[Span], summary: Summary) -> tuple[Path, Path]:
    """timeline.json (spans and summary) and timeline.csv (one row per span) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    as_json, as_csv = folder / FILE_JSON, folder / FILE_CSV
    record = {"spans": [asdict(s) for s in spans], "summary": {**asdict(summary), "bound": summary.bound()}}
    as_json.write_text(json.dumps(record, indent=1) + "\n")
    with as_csv.open("w", newline="") as out:
        table = csv.writer(out)
        table.writerow([f.name for f in fields(Span)] + ["seconds"])
        for span in sorted(spans, key=lambda s: s.start):
            table.writerow([*asdict(span).values(), f"{span.seconds:.3f}"])
    return as_json, as_csv


def read_seconds(folder: Path) -> dict[str, float]:
    """Each stage's duration in the last run's timeline (nothing when there is none or it is unreadable:
    it only orders stages)."""
    try:
        spans = json.loads((folder / FILE_JSON).read_text())["spans"]
        return {str(s["stage"]): float(s["end"]) - float(s["start"]) for s in spans if s.get("ran")}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def priorities(
    upstream: Mapping[str, Iterable[str]], seconds: Mapping[str, float], default: float | None = None
) -> dict[str, float]:
    """Each stage's longest remaining path: its own estimate plus the longest chain of estimates below
    it. Starting the highest first is the critical-path rule (HLFET): the stages that hold up the end
    start first, and a worker never waits while another stage is ready. A stage the last timeline does
    not hold counts `default` seconds (by default the median of those it holds, else 1: with no timeline
    at all, the number of stages on its longest chain)."""
    if default is None:
        default = statistics.median(seconds.values()) if seconds else 1.0
    below: dict[str, list[str]] = {name: [] for name in upstream}
    for name, ups in upstream.items():
        for up in ups:
            if up in below:
                below[up].append(name)
    rank: dict[str, float] = {}

    def remaining(name: str) -> float:
        if name not in rank:
            own = seconds.get(name, default)
            rank[name] = own + max((remaining(n) for n in below[name]), default=0.0)
        return rank[name]

    for name in upstream:
        remaining(name)
    return rank
