"""What `maxa pipeline run` says while it runs and when it ends: stages done / running / left, device time.

One line per event (a stage starts, ends, fails or is skipped), so the output reads the same in a
terminal, a log file or a batch system; the summary names every failed stage with its log.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from maxa.pipelines.dag import DEVICE, GATE

WAITING, RUNNING, DONE, FAILED, NOT_RUN = "waiting", "running", "done", "failed", "not run"


class Outcome(Protocol):
    name: str
    seconds: float
    ran: bool
    worker: str
    log: str


def clock_text(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class Progress:
    """The state of every stage of one run, and the lines that report it."""

    def __init__(
        self,
        kinds: Mapping[str, str],
        *,
        echo: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kinds = dict(kinds)
        self.state = dict.fromkeys(self.kinds, WAITING)
        self.echo = echo
        self.clock = clock
        self.began = clock()
        self.started_at: dict[str, float] = {}
        self.device_seconds = 0.0
        self.reasons: dict[str, str] = {}
        self.logs: dict[str, str] = {}
        self.up_to_date: set[str] = set()

    # -- queries
    def _names(self, state: str) -> list[str]:
        return [name for name, now in self.state.items() if now == state]

    def waiting(self) -> list[str]:
        return self._names(WAITING)

    def running(self) -> list[str]:
        return self._names(RUNNING)

    def failures(self) -> list[str]:
        return self._names(FAILED)

    def succeeded(self, name: str) -> bool:
        return self.state.get(name) == DONE

    def gate_open(self) -> bool:
        """Whether every gate stage (the dvc.yaml check) has passed."""
        return all(self.state[name] == DONE for name, kind in self.kinds.items() if kind == GATE)

    @property
    def ok(self) -> bool:
        return not self._names(FAILED) and not self._names(NOT_RUN)

    def device_time(self) -> float:
        """Device-stage seconds so far: finished attempts plus the running ones' elapsed time."""
        now = self.clock()
        live = sum(now - self.started_at[n] for n in self.running() if self.kinds[n] == DEVICE)
        return self.device_seconds + live

    def line(self) -> str:
        total = len(self.state)
        done = len(self._names(DONE))
        left = len(self._names(WAITING))
        extra = "".join(
            f" | {label} {len(self._names(state))}"
            for state, label in ((FAILED, "failed"), (NOT_RUN, "not run"))
            if self._names(state)
        )
        return (
            f"[{done}/{total} done | {len(self.running())} running | {left} left{extra} | "
            f"device time {clock_text(self.device_time())} | wall {clock_text(self.clock() - self.began)}]"
        )

    # -- events
    def begin(self) -> None:
        if not self.state:
            self.echo("nothing to run: every stage is up to date")
            return
        devices = sum(kind == DEVICE for kind in self.kinds.values())
        self.echo(
            f"{len(self.state)} stages to run ({devices} on devices, {len(self.state) - devices} beside them)"
        )

    def started(self, name: str) -> None:
        self.state[name] = RUNNING
        self.started_at[name] = self.clock()
        self.echo(f"{self.line()} started {name}")

    def _stop(self, name: str) -> float:
        seconds = self.clock() - self.started_at.get(name, self.clock())
        if self.kinds[name] == DEVICE:
            self.device_seconds += seconds
        return seconds

    def finished(self, result: Outcome) -> None:
        self._stop(result.name)
        self.state[result.name] = DONE
        self.logs[result.name] = result.log
        what = "ran" if result.ran else "up to date"
        if not result.ran:
            self.up_to_date.add(result.name)
        self.echo(f"{self.line()} {what} {result.name} in {result.seconds:.1f} s on worker {result.worker}")

    def failed(self, name: str, reason: str, result: Outcome | None) -> None:
        self._stop(name)
        self.state[name] = FAILED
        self.reasons[name] = reason
        if result is not None:
            self.logs[name] = result.log
        where = f"; log: {result.log}" if result is not None else ""
        self.echo(f"{self.line()} FAILED {name} ({reason}){where}")

    def cancel(self, names: Iterable[str], because: str) -> None:
        """Stages that will not run because `because` failed (only those still waiting)."""
        dropped = [name for name in names if self.state.get(name) == WAITING]
        for name in dropped:
            self.state[name] = NOT_RUN
            self.reasons[name] = f"{because} failed"
        if dropped:
            self.echo(f"{self.line()} not running {', '.join(sorted(dropped))}: they need {because}")

    def cancel_all(self, because: str) -> None:
        self.cancel(self.waiting(), because)

    def end(self) -> None:
        self.echo(self.summary())

    def summary(self) -> str:
        done = self._names(DONE)
        ran = len(done) - len(self.up_to_date & set(done))
        lines = [
            f"{len(done)}/{len(self.state)} stages done ({ran} ran, {len(done) - ran} were up to date) in "
            f"{clock_text(self.clock() - self.began)} wall, {clock_text(self.device_seconds)} device time"
        ]
        for name in self.failures():
            log = self.logs.get(name)
            lines.append(f"FAILED {name}: {self.reasons[name]}" + (f"; log: {log}" if log else ""))
        not_run = self._names(NOT_RUN)
        if not_run:
            lines.append(f"not run ({len(not_run)}, an upstream stage failed): {', '.join(sorted(not_run))}")
        return "\n".join(lines)
