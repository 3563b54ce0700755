"""`maxa pipeline run`: the DVC DAG with independent stages in parallel, each stage run by DVC.

Every stage is `dvc repro --single-item STAGE` in the workspace, so dvc.lock, the cache, `.gitignore`
entries and the skip-if-unchanged decision stay DVC's. What makes concurrent runs safe is DVC's own
(DVC 3.67, read in dvc/repo/reproduce.py, dvc/stage/run.py, dvc/rwlock.py): `repro` holds the repo lock
(`.dvc/tmp/lock`) while it checks, hashes, commits and writes dvc.lock, and gives it up only while the
stage's command runs; a per-path rwlock refuses two writers of one output. So dvc.lock writes are
serialized by DVC. Left alone, a `repro` whose command finished while another one hashed a large store
for over 3 s fails to take the lock back and records nothing; hence `--wait-for-lock` on every stage.
This runner only orders stages (a stage starts once its upstream stages succeeded) and refuses a second
runner on the same workspace.

Workers are dask.distributed: a local cluster with one worker per GPU (each pinned with
CUDA_VISIBLE_DEVICES, as distributed extraction does), or the workers of `--scheduler`. Each worker
offers one `device` slot and one `cpu_stage` slot, so a GPU runs one device stage while a report or plot
runs beside it. A worker that dies mid-stage has its stage re-run by dask elsewhere; the orphaned
command of the dead attempt is killed first (its process group is recorded), and the re-run resumes
from the outputs it left where the stage keeps them (`persist`; maxa's fingerprints decide resume or
replace). A stage counts once, however many attempts it took.

Across machines the workspace must be one shared folder whose file system honours fcntl locks (DVC's
repo lock); DVC's rwlock judges a holder by its PID on the reading host, and an orphan is killed only
on its own host, so a dead worker's stage is safe to re-run elsewhere once its machine's command ended.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maxa.core.errors import MaxaError
from maxa.pipelines import dag, timeline
from maxa.pipelines.run_progress import Progress

if TYPE_CHECKING:
    from dask.distributed import Client

RUN_DIR = Path(".dvc/tmp/maxa-run")
"""Runner state inside the workspace (DVC git-ignores .dvc/tmp): logs, process records, the run lock."""
DEVICE_RESOURCE, CPU_RESOURCE = "device", "cpu_stage"
WORKER_RESOURCES = {DEVICE_RESOURCE: 1, CPU_RESOURCE: 1}
WORKER_HELP = (
    'start each worker with `dask worker ADDRESS --nthreads 2 --resources "device=1 cpu_stage=1"` '
    "(one per GPU, with CUDA_VISIBLE_DEVICES naming it)"
)


@dataclass(frozen=True)
class StageResult:
    name: str
    returncode: int
    seconds: float
    ran: bool  # DVC ran the command (False: up to date, or restored from the run cache)
    worker: str
    log: str
    error: str = ""  # the first error line of the attempt's output (maxa's `Error:` before DVC's `ERROR:`)
    start: float = 0.0  # seconds since the epoch on the worker's clock
    end: float = 0.0
    cpu_seconds: float = 0.0  # user + system of `dvc repro` and every process it waited for


def _safe_name(stage: str) -> str:
    return "".join(c if c.isalnum() or c in "@-_." else "_" for c in stage)


def log_path(root: Path, stage: str) -> Path:
    return root / RUN_DIR / "logs" / f"{_safe_name(stage)}.log"


def _record_path(root: Path, stage: str) -> Path:
    return root / RUN_DIR / "procs" / f"{_safe_name(stage)}.json"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the stage's `dvc` dies when the worker thread that started it dies (PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def reap(root: Path, stage: str) -> bool:
    """Kill what an earlier attempt of `stage` on this host left running (its worker died); True if any."""
    record = _record_path(root, stage)
    try:
        info = json.loads(record.read_text())
    except (OSError, ValueError):
        return False
    if info.get("host") != socket.gethostname():
        return False  # another machine's process: DVC's rwlock keeps the outputs from two writers
    pgid = int(info["pgid"])
    killed = False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, signal.SIGKILL)
            killed = True
        except ProcessLookupError:
            break
        except PermissionError:
            break
        time.sleep(0.05)
    record.unlink(missing_ok=True)
    return killed


WORKER_SET_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_")
"""What a dask nanny sets in its worker (`distributed.nanny.pre-spawn-environ`: one thread each). A stage
gets the runner's own values instead, so torch uses as many threads as under `dvc repro` from the same
shell, and a CPU run's floating-point sums (its outputs) are the same."""


def caller_environ() -> dict[str, str | None]:
    """The runner's values of WORKER_SET_VARS (None: unset), handed to every stage."""
    return {name: os.environ.get(name) for name in WORKER_SET_VARS}


def _stage_env(kind: str, caller: Mapping[str, str | None]) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in caller.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # this worker's maxa
    env.setdefault("DVC_NO_ANALYTICS", "1")
    if kind == dag.CPU:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the worker's GPU belongs to its device stage
    return env


def run_stage(root: str, stage: str, kind: str, caller: Mapping[str, str | None]) -> StageResult:
    """On a worker: `dvc repro --single-item STAGE` in the workspace, its output appended to its log."""
    from dask.distributed import get_worker

    try:
        worker = get_worker().name
    except ValueError:
        worker = "local"
    workspace = Path(root)
    reap(workspace, stage)
    log = log_path(workspace, stage)
    log.parent.mkdir(parents=True, exist_ok=True)
    record = _record_path(workspace, stage)
    record.parent.mkdir(parents=True, exist_ok=True)
    start, began = time.monotonic(), time.time()
    with log.open("ab") as out:
        offset = out.tell()
        out.write(f"--- maxa pipeline run: {stage} on {socket.gethostname()} worker {worker}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            [sys.executable, "-m", "dvc", "--wait-for-lock", "repro", "--single-item", stage],
            cwd=root,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_stage_env(kind, caller),
            start_new_session=True,  # the stage's command joins this group: one kill ends it all
            preexec_fn=_die_with_parent,  # prctl must run in the child
        )
        record.write_text(json.dumps({"host": socket.gethostname(), "pgid": proc.pid, "stage": stage}))
        returncode, cpu = wait_with_cpu(proc)
    seconds, ended = time.monotonic() - start, time.time()
    record.unlink(missing_ok=True)
    with log.open("rb") as done:
        done.seek(offset)
        text = done.read().decode(errors="replace")
    ran = f"Running stage '{stage}'" in text
    return StageResult(
        stage, returncode, seconds, ran, str(worker), str(log), first_error(text), began, ended, cpu
    )


def wait_with_cpu(proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    """Wait for `proc`; its exit status and the CPU seconds (user + system) of it and of every descendant
    it waited for (wait4's rusage: a stage's dvc, its shell and the maxa command)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait a second time
    return proc.returncode, usage.ru_utime + usage.ru_stime


def first_error(text: str) -> str:
    """The line that says why a stage failed: maxa's one-line `Error: ...`, else DVC's first `ERROR: ...`."""
    lines = [line.strip() for line in text.splitlines()]
    for prefix in ("Error: ", "ERROR: "):
        found = next((line for line in lines if line.startswith(prefix)), None)
        if found:
            return found
    return ""


@contextlib.contextmanager
def exclusive(root: Path) -> Iterator[None]:
    """One `maxa pipeline run` per workspace: a second one is refused, naming the first."""
    from filelock import FileLock, Timeout

    folder = root / RUN_DIR
    folder.mkdir(parents=True, exist_ok=True)
    owner = folder / "owner.json"
    lock = FileLock(str(folder / "run.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        try:
            who = json.loads(owner.read_text())
            by = f" (pid {who['pid']} on {who['host']}, since {who['started']})"
        except (OSError, ValueError, KeyError):
            by = ""
        raise MaxaError(
            f"another `maxa pipeline run` is running in {root}{by}; wait for it to finish "
            "(one runner per workspace: its stages would race this one's)"
        ) from None
    try:
        owner.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                }
            )
        )
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


@contextlib.contextmanager
def cluster(workers: int | None, scheduler: str | None) -> Iterator[tuple[Client, dict[str, int]]]:
    """A client and its stage slots per resource. Stages keep torch's own thread count (capping it
    would change a CPU run's floating-point sums, so its outputs would differ from `dvc repro`'s)."""
    from dask.distributed import Client

    from maxa.extract.distributed import connect, gpu_assignment, pinned_cluster

    if scheduler:
        with connect(scheduler) as client:
            slots = _slots(client)
            if not slots[DEVICE_RESOURCE] or not slots[CPU_RESOURCE]:
                raise MaxaError(
                    f"the workers of the scheduler at {scheduler} offer no device or cpu_stage slot; "
                    + WORKER_HELP
                )
            yield client, slots
        return
    if workers is not None and workers < 1:
        raise MaxaError(f"--workers must be >= 1, got {workers}")
    gpus = _gpus()
    count = workers or max(1, len(gpus))
    slots = {name: count * amount for name, amount in WORKER_RESOURCES.items()}
    with (
        pinned_cluster(gpu_assignment(count, gpus), nthreads=2, resources=WORKER_RESOURCES) as local,
        Client(local) as client,
    ):
        yield client, slots


def _cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS has one)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def _gpus() -> list[str]:
    """The GPUs this process may use (CUDA_VISIBLE_DEVICES entries); none without CUDA."""
    import torch

    from maxa.extract.distributed import visible_gpus

    return visible_gpus(os.environ, torch.cuda.device_count() if torch.cuda.is_available() else 0)


def _slots(client: Client) -> dict[str, int]:
    workers = client.scheduler_info().get("workers", {}).values()
    return {
        name: int(sum(w.get("resources", {}).get(name, 0) for w in workers))
        for name in (DEVICE_RESOURCE, CPU_RESOURCE)
    }


def _resource(kind: str) -> str:
    return DEVICE_RESOURCE if kind == dag.DEVICE else CPU_RESOURCE


def run_pipeline(
    root: Path,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    echo: Callable[[str], None] = print,
) -> Progress:
    """Run every stage `dvc repro` would, in parallel where the DAG allows; the progress holds the outcome."""
    root = root.resolve()
    if not (root / ".dvc").is_dir():
        raise MaxaError(f"{root} is not a DVC project (no .dvc folder); run `dvc init` there first")
    with exclusive(root):
        stages, changed = dag.read_dag(root)
        todo = dag.to_run(stages, changed)
        progress = Progress({name: stages[name].kind for name in stages if name in todo}, echo=echo)
        progress.begin()
        spans: list[timeline.Span] = []
        if todo:
            for name in todo:
                log_path(root, name).unlink(missing_ok=True)
            upstream = {name: stages[name].upstream & todo for name in todo}
            rank = timeline.priorities(upstream, timeline.read_seconds(root / RUN_DIR))
            caller = caller_environ()  # before the cluster: a local nanny sets them in this process too
            try:
                with cluster(workers, scheduler) as (client, slots):
                    _schedule(client, root, stages, progress, slots, caller, rank, spans)
            finally:
                if spans:
                    cores = 0 if scheduler else _cores()
                    summary = timeline.summarise(spans, upstream, cores)
                    files = timeline.write(root / RUN_DIR, spans, summary)
                    for line in [*summary.lines(), f"timeline: {files[0]}, {files[1]}"]:
                        echo(line)
        progress.end()
        return progress


def ready(
    stages: Mapping[str, dag.Stage], progress: Progress, rank: Mapping[str, float] | None = None
) -> list[str]:
    """Waiting stages whose upstream stages (among those to run) all succeeded, gates before all else;
    the longest remaining path first (`rank`, timeline.priorities), then in dvc.yaml order."""
    waiting = progress.waiting()
    if not progress.gate_open():
        return [name for name in waiting if stages[name].kind == dag.GATE]
    found = [
        name
        for name in waiting
        if all(progress.succeeded(up) for up in stages[name].upstream if up in progress.state)
    ]
    order = rank or {}
    return sorted(found, key=lambda name: -order.get(name, 0.0))  # stable: ties keep dvc.yaml order


def _schedule(
    client: Client,
    root: Path,
    stages: Mapping[str, dag.Stage],
    progress: Progress,
    slots: Mapping[str, int],
    caller: Mapping[str, str | None],
    rank: Mapping[str, float],
    spans: list[timeline.Span],
) -> None:
    """Hand ready stages to free slots, the longest remaining path first, until nothing is waiting; a
    failure stops its dependants only. Each attempt that returned adds its span to `spans`."""
    from dask.distributed import as_completed

    running: dict[Any, str] = {}
    busy = dict.fromkeys(slots, 0)
    pool = as_completed([])

    def submit() -> None:
        for name in ready(stages, progress, rank):
            kind = stages[name].kind
            resource = _resource(kind)
            if busy[resource] >= slots[resource]:
                continue
            future = client.submit(
                run_stage,
                str(root),
                name,
                kind,
                caller,
                key=f"stage-{name}",
                pure=False,
                resources={resource: 1},
                priority=rank.get(name, 0.0),  # where dask queues (a shared scheduler): the same order
            )
            busy[resource] += 1
            running[future] = name
            progress.started(name)
            pool.add(future)

    try:
        submit()
        for future in pool:
            name = running.pop(future)
            busy[_resource(stages[name].kind)] -= 1
            try:
                result: StageResult = future.result()
            except Exception as exc:  # its worker died too often, or dask failed it
                progress.failed(name, " ".join(str(exc).split()) or type(exc).__name__, None)
            else:
                spans.append(
                    timeline.Span(
                        name,
                        stages[name].kind,
                        f"{result.worker}/{_resource(stages[name].kind)}",
                        result.start,
                        result.end,
                        result.cpu_seconds,
                        result.ran,
                        result.returncode,
                    )
                )
                if result.returncode == 0:
                    progress.finished(result)
                else:
                    why = f": {result.error}" if result.error else ""
                    progress.failed(name, f"`dvc repro` exit status {result.returncode}{why}", result)
            if progress.state[name] == "failed":
                if stages[name].kind == dag.GATE:
                    progress.cancel_all(name)
                else:
                    progress.cancel(dag.downstream(stages, [name]) - {name}, name)
            submit()
    finally:
        for name in running.values():  # interrupted: leave no stage command running on this host
            reap(root, name)
