"""What `maxa pipeline run` reports: counts, device time, the summary's failures with their logs."""

from __future__ import annotations

from dataclasses import dataclass

from maxa.pipelines.dag import CPU, DEVICE
from maxa.pipelines.run_progress import Progress, clock_text


@dataclass
class Result:
    name: str
    seconds: float
    ran: bool = True
    worker: str = "0"
    log: str = ""


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_counts_and_device_time_follow_the_events() -> None:
    clock, lines = Clock(), []
    progress = Progress({"x": DEVICE, "y": DEVICE, "r": CPU}, echo=lines.append, clock=clock)
    progress.started("x")
    clock.now += 10
    progress.started("y")
    progress.started("r")
    clock.now += 5  # x has run 15 s, y 5 s: 20 device seconds; the CPU stage does not count
    assert progress.device_time() == 20
    assert "[0/3 done | 3 running | 0 left | device time 0:00:20 | wall 0:00:15]" in progress.line()
    progress.finished(Result("x", 15.0, log="x.log"))
    clock.now += 3
    assert progress.device_time() == 15 + 8
    progress.finished(Result("r", 8.0, ran=False))
    progress.failed("y", "`dvc repro` exit status 1", Result("y", 8.0, log="/w/.dvc/tmp/maxa-run/logs/y.log"))
    assert lines[-1].endswith("FAILED y (`dvc repro` exit status 1); log: /w/.dvc/tmp/maxa-run/logs/y.log")
    assert not progress.ok
    summary = progress.summary()
    assert summary.splitlines()[0].startswith("2/3 stages done (1 ran, 1 were up to date)")
    assert "0:00:23 device time" in summary
    assert "FAILED y: `dvc repro` exit status 1; log: /w/.dvc/tmp/maxa-run/logs/y.log" in summary


def test_a_cancelled_stage_is_named_and_never_runs() -> None:
    lines: list[str] = []
    progress = Progress({"a": DEVICE, "b": DEVICE, "c": CPU, "d": CPU}, echo=lines.append, clock=Clock())
    progress.started("a")
    progress.started("d")
    progress.failed("a", "KilledWorker", None)
    progress.cancel(["b", "c", "d"], "a")  # d is already running: it is not cancelled
    assert progress.waiting() == [] and progress.running() == ["d"]
    assert lines[-1].endswith("not running b, c: they need a")
    assert "not run (2, an upstream stage failed): b, c" in progress.summary()
    assert "FAILED a: KilledWorker" in progress.summary()


def test_nothing_to_run_is_said_and_ok() -> None:
    lines: list[str] = []
    progress = Progress({}, echo=lines.append)
    progress.begin()
    assert lines == ["nothing to run: every stage is up to date"] and progress.ok


def test_clock_text() -> None:
    assert [clock_text(s) for s in (0, 59.6, 3600 + 61)] == ["0:00:00", "0:01:00", "1:01:01"]
