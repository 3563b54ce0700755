"""`maxa pipeline run` on toy DVC projects: stages in parallel, failures contained, dead workers, one
runner per workspace, and DVC's dvc.lock after concurrent stages equal to what `dvc status` accepts."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import yaml
from click.testing import CliRunner

from maxa.core.errors import MaxaError
from maxa.pipelines.cli import cli
from maxa.pipelines.runner import _stage_env, exclusive, first_error, run_pipeline
from tests.kit.cli import command_env
from tests.pipelines.test_dvc import _shrink

SLOW = pytest.mark.slow  # runs DVC and a dask cluster (tens of seconds)

PY = sys.executable


def _dvc(root: Path, *args: str) -> str:
    done = subprocess.run(
        [PY, "-m", "dvc", *args], cwd=root, env=command_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _project(root: Path, stages: dict, scripts: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in (scripts or {}).items():
        (root / name).write_text(textwrap.dedent(text))
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    _dvc(root, "init", "-q")
    return root


def _write(out: str, text: str, seconds: float = 0.0) -> str:
    """A stage command writing `text` to `out` after `seconds`, logging its start and end times."""
    code = (
        f"import time,pathlib; s=time.time(); time.sleep({seconds}); p=pathlib.Path({out!r}); "
        f"p.parent.mkdir(exist_ok=True); p.write_text({text!r}); "
        f"open('times.log','a').write('{out} %f %f\\n' % (s, time.time()))"
    )
    return f'{PY} -c "{code}"'


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@SLOW
def test_failure_stops_its_dependants_only_and_concurrent_stages_all_land_in_dvc_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    independent = {
        f"part{i}": {"cmd": _write(f"out/part{i}.txt", f"part {i}", 1.5), "outs": [f"out/part{i}.txt"]}
        for i in range(4)
    }
    stages = {
        **independent,
        "bad": {
            "cmd": f"{PY} -c \"print('Error: no such table'); raise SystemExit(3)\"",
            "outs": ["out/bad.txt"],
        },
        "after_bad": {
            "cmd": _write("out/after.txt", "never"),
            "deps": ["out/bad.txt"],
            "outs": ["out/after.txt"],
        },
        "join": {
            "cmd": _write("out/join.txt", "joined"),
            "deps": [f"out/part{i}.txt" for i in range(4)],
            "outs": ["out/join.txt"],
        },
    }
    root = _project(tmp_path / "w", stages)
    monkeypatch.chdir(root)
    result = CliRunner().invoke(cli, ["pipeline", "run", "--workers", "2"])
    assert result.exit_code == 1, result.output
    log = root / ".dvc/tmp/maxa-run/logs/bad.log"
    assert re.search(
        r"\nFAILED bad: `dvc repro` exit status [1-9][0-9]*: Error: no such table; "
        rf"log: {re.escape(str(log))}\n",
        result.output,
    )
    assert "Error: no such table" in log.read_text()
    assert "not run (1, an upstream stage failed): after_bad" in result.output
    assert "5/7 stages done (5 ran, 0 were up to date)" in result.output
    assert not (root / "out/after.txt").exists()
    assert (root / "out/join.txt").read_text() == "joined"

    # Two stages really ran at once (each logs its start and end).
    spans = sorted(
        tuple(map(float, line.split()[1:])) for line in (root / "times.log").read_text().splitlines()
    )
    assert any(spans[i + 1][0] < spans[i][1] for i in range(len(spans) - 1)), spans
    _check_timeline(root, {*independent, "join", "bad"})

    # DVC recorded every concurrent stage: dvc.lock has each output's hash, `dvc status` is clean.
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert set(lock) == {*independent, "join"}
    for name, entry in lock.items():
        out = entry["outs"][0]
        assert out["md5"] == _md5(root / out["path"]), name
    assert "up to date" in _dvc(root, "status", *independent, "join")

    # Run again: only the failed stage and its dependant are tried; the rest is up to date.
    again = CliRunner().invoke(cli, ["pipeline", "run", "--workers", "2"])
    assert "2 stages to run" in again.output and again.exit_code == 1


VICTIM = """\
import os, pathlib, signal, sys, time
import psutil

out, first = pathlib.Path("out/victim.txt"), pathlib.Path(sys.argv[1])
if not first.exists():  # first attempt: leave a partial output, then kill the dask worker running us
    out.parent.mkdir(exist_ok=True)
    out.write_text("part one\\n")
    first.write_text(str(os.getpid()))
    dvc = next(p for p in psutil.Process().parents() if "repro" in p.cmdline())
    os.kill(dvc.ppid(), signal.SIGKILL)
    time.sleep(60)  # an orphan now: the re-run must end it
    out.write_text(out.read_text() + "orphan wrote this\\n")
else:
    out.write_text(out.read_text() + "part two\\n")
"""


@SLOW
def test_a_dead_worker_has_its_stage_rerun_and_resumed_once(tmp_path: Path) -> None:
    marker = tmp_path / "first-attempt"
    stages = {
        "victim": {"cmd": f"{PY} victim.py {marker}", "outs": [{"out/victim.txt": {"persist": True}}]},
        "after": {
            "cmd": _write("out/after.txt", "after"),
            "deps": ["out/victim.txt"],
            "outs": ["out/after.txt"],
        },
        "other": {"cmd": _write("out/other.txt", "other", 1.0), "outs": ["out/other.txt"]},
    }
    root = _project(tmp_path / "w", stages, {"victim.py": VICTIM})
    lines: list[str] = []
    progress = run_pipeline(root, workers=2, echo=lines.append)
    assert progress.ok, "\n".join(lines)
    # resumed from the partial output the dead attempt left (persist), and the orphan was ended
    assert (root / "out/victim.txt").read_text() == "part one\npart two\n"
    orphan = int(marker.read_text())
    assert not psutil.pid_exists(orphan) or psutil.Process(orphan).status() == psutil.STATUS_ZOMBIE
    # counted once
    assert sum(line.split("] ")[-1].startswith("ran victim ") for line in lines) == 1
    assert lines[-1].startswith("3/3 stages done (3 ran, 0 were up to date)")
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert lock["victim"]["outs"][0]["md5"] == _md5(root / "out/victim.txt")
    assert "up to date" in _dvc(root, "status")


@SLOW
def test_a_second_runner_on_one_workspace_is_refused(tmp_path: Path) -> None:
    root = _project(tmp_path / "w", {"one": {"cmd": _write("one.txt", "1"), "outs": ["one.txt"]}})
    holder = subprocess.Popen(
        [
            PY,
            "-c",
            "import sys, time, pathlib; from maxa.pipelines.runner import exclusive\n"
            f"with exclusive(pathlib.Path({str(root)!r})):\n print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(
            MaxaError, match=rf"another `maxa pipeline run` is running in {root} \(pid {holder.pid} on"
        ):
            run_pipeline(root, workers=1, echo=lambda _: None)
        assert not (root / "one.txt").exists()
    finally:
        holder.kill()
        holder.wait()
    with exclusive(root):  # released with its holder's death
        pass


@SLOW
def test_an_unreachable_scheduler_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dask.config
    import dask.distributed  # its config defaults first: see below

    root = _project(tmp_path / "w", {"one": {"cmd": _write("one.txt", "1"), "outs": ["one.txt"]}})
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.chdir(root)
    start = time.monotonic()
    # dask.config.set restores what it found: had `distributed` not been imported yet, its exit would drop
    # the whole `distributed` section that the import adds inside, and a later cluster in this process fails.
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        result = CliRunner().invoke(cli, ["pipeline", "run", "--scheduler", f"tcp://127.0.0.1:{port}"])
    assert result.exit_code == 1
    error = result.output.strip().splitlines()[-1]
    assert error.startswith(f"Error: cannot reach the dask scheduler at tcp://127.0.0.1:{port} within 2 s")
    assert time.monotonic() - start < 30
    assert not (root / "one.txt").exists()


def test_not_a_dvc_project(tmp_path: Path) -> None:
    with pytest.raises(
        MaxaError, match=r"is not a DVC project \(no .dvc folder\); run `dvc init` there first"
    ):
        run_pipeline(tmp_path, workers=1)


@SLOW
def test_a_stage_runs_with_the_environment_dvc_repro_gives_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No thread limit from dask's nanny (it sets OMP_NUM_THREADS=1 in its workers and in this process)."""
    names = ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_"]
    for name in names:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")  # one the user set is kept
    code = f"import os, json; json.dump({{k: os.environ.get(k) for k in {names!r}}}, open('env.json', 'w'))"
    root = _project(tmp_path / "w", {"env": {"cmd": f'{PY} -c "{code}"', "outs": ["env.json"]}})
    assert run_pipeline(root, workers=1, echo=lambda _: None).ok
    seen = json.loads((root / "env.json").read_text())
    assert seen == {**dict.fromkeys(names), "OPENBLAS_NUM_THREADS": "3"}


def _check_timeline(root: Path, stages: set[str]) -> list[dict]:
    """The run's timeline.json: every stage tried once, end >= start, one stage at a time per worker
    slot, each span around its command's own start and end (times.log, written by the command)."""
    spans = json.loads((root / ".dvc/tmp/maxa-run/timeline.json").read_text())["spans"]
    assert sorted(s["stage"] for s in spans) == sorted(stages)
    assert all(s["end"] >= s["start"] and s["cpu_seconds"] > 0 for s in spans), spans
    by_lane: dict[str, list[tuple[float, float]]] = {}
    for span in spans:
        by_lane.setdefault(span["lane"], []).append((span["start"], span["end"]))
    for lane, times in by_lane.items():
        times.sort()
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(times)), (lane, times)
    commands = {}
    for line in (root / "times.log").read_text().splitlines():
        out, start, end = line.split()[:3]
        commands[out] = (float(start), float(end))
    outs = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    for span in spans:
        out = outs[span["stage"]]["outs"][0]
        out = out if isinstance(out, str) else next(iter(out))
        if out in commands:
            start, end = commands[out]
            assert span["start"] <= start <= end <= span["end"], span
    return spans


BURN = (
    "import time; t=time.process_time(); x=0\n"
    "while time.process_time() - t < 0.8: x += 1\n"
    "open('burn.cpu','w').write(str(time.process_time()))\n"
)


@SLOW
def test_the_critical_path_starts_first_and_the_timeline_counts_each_stage(tmp_path: Path) -> None:
    """dvc.yaml lists three short independent stages before a chain head -> middle -> tail: the head
    starts first on one worker, then the middle before any short stage; the timeline holds every stage
    once, and the head's CPU time counts its command's (a grandchild of the stage's `dvc`)."""
    stages = {
        **{
            f"short{i}": {"cmd": _write(f"out/short{i}.txt", "s"), "outs": [f"out/short{i}.txt"]}
            for i in range(3)
        },
        "head": {"cmd": f"{PY} burn.py && " + _write("out/head.txt", "h"), "outs": ["out/head.txt"]},
        "middle": {
            "cmd": _write("out/middle.txt", "m"),
            "deps": ["out/head.txt"],
            "outs": ["out/middle.txt"],
        },
        "tail": {"cmd": _write("out/tail.txt", "t"), "deps": ["out/middle.txt"], "outs": ["out/tail.txt"]},
    }
    root = _project(tmp_path / "w", stages, {"burn.py": BURN})
    lines: list[str] = []
    assert run_pipeline(root, workers=1, echo=lines.append).ok, "\n".join(lines)
    spans = sorted(_check_timeline(root, set(stages)), key=lambda s: s["start"])
    order = [s["stage"] for s in spans]
    assert order[:2] == ["head", "middle"], order
    assert order.index("tail") > order.index("middle")
    head = next(s for s in spans if s["stage"] == "head")
    assert head["cpu_seconds"] >= float((root / "burn.cpu").read_text())
    assert any(line.startswith("critical path ") and "head -> middle -> tail" in line for line in lines), (
        lines
    )
    assert any(line.startswith("busy: ") for line in lines)


@SLOW
def test_nothing_to_do_starts_no_cluster(tmp_path: Path) -> None:
    root = _project(tmp_path / "w", {"one": {"cmd": _write("one.txt", "1"), "outs": ["one.txt"]}})
    _dvc(root, "repro")
    lines: list[str] = []
    assert run_pipeline(root, workers=1, echo=lines.append).ok
    assert lines[0] == "nothing to run: every stage is up to date"
    assert json.loads(json.dumps(lines))  # plain text lines


def _files(path: Path) -> dict[str, bytes]:
    """A file's bytes, or every file's bytes under a folder, by relative path."""
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


TIMINGS = frozenset({"train_seconds", "load_seconds", "samples_per_second"})
"""What a checkpoint records of how long its run took: differs between any two runs of the same inputs."""


def _scrub(value: object, parent: str = "") -> object:
    """What two runs of the same inputs must agree on: everything but a run's durations and the
    checkpoint fingerprint that hashes them (tensors as dtype, shape and bytes)."""
    import torch

    if isinstance(value, dict):
        return {
            k: _scrub(v, k)
            for k, v in value.items()
            if k not in TIMINGS and not (parent == "checkpoint" and k == "fingerprint")
        }
    if isinstance(value, (list, tuple)):
        return [_scrub(v, parent) for v in value]
    if isinstance(value, torch.Tensor):
        return (str(value.dtype), tuple(value.shape), value.numpy().tobytes())
    return value


def _content(file: Path) -> object:
    import torch

    if file.suffix in (".pt", ".pth"):
        return _scrub(torch.load(file, weights_only=True))
    if file.suffix == ".json":
        return _scrub(json.loads(file.read_text()))
    return file.read_bytes()


def _tree(path: Path) -> dict[str, object]:
    """An output's files (one, or every file under a folder) by relative path, as _content reads them."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(f.relative_to(path)): _content(f) for f in files}


def _entries(lock: dict) -> list[dict]:
    return [e for stage in lock["stages"].values() for e in stage.get("deps", []) + stage.get("outs", [])]


def _unhashed(lock: dict, paths: set[str]) -> dict:
    """dvc.lock with the hashes of `paths` left out (everything else, stages, commands, params, kept)."""
    copy = json.loads(json.dumps(lock))
    for entry in _entries(copy):
        if entry["path"] in paths:
            for key in ("md5", "size", "nfiles"):
                entry.pop(key, None)
    return copy


def _small_demo(params: dict) -> dict:
    """test_dvc's small demo matrix (both backbones, semantic probe and evaluation, report, plots), with a
    one-member sweep and a few iterations: the runner's result must not depend on how much work a stage is."""
    params = _shrink(params)
    params["probe"].update(iterations=3, sweep_lrs="0.001", sweep_seeds="0")
    return params


@SLOW
def test_the_demo_on_two_workers_equals_serial_dvc_repro(tmp_path: Path) -> None:
    """The same dvc.lock and outputs as `dvc repro` (creation times fixed by SOURCE_DATE_EPOCH; a
    checkpoint's recorded durations are the one thing two runs never share), and `dvc status` clean."""
    repo = Path(__file__).resolve().parents[2]
    params = _small_demo(yaml.safe_load((repo / "params.yaml").read_text()))
    env = command_env(SOURCE_DATE_EPOCH="1767225600")
    roots = {}
    for name in ("serial", "parallel"):
        root = tmp_path / name
        root.mkdir()
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        for args in (
            [str(Path(PY).parent / "maxa"), "pipeline", "params.yaml"],
            ["git", "init", "-q"],
            [PY, "-m", "dvc", "init", "-q"],
        ):
            subprocess.run(args, cwd=root, env=env, check=True, capture_output=True)
        roots[name] = root
    for root, args in (
        (roots["serial"], [PY, "-m", "dvc", "repro"]),
        (roots["parallel"], [str(Path(PY).parent / "maxa"), "pipeline", "run", "--workers", "2"]),
    ):
        done = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    serial, parallel = (yaml.safe_load((roots[n] / "dvc.lock").read_text()) for n in ("serial", "parallel"))
    # The hashes that differ are exactly those of a run's durations: each checkpoint (`.pt` and its
    # sweep's member files record train/load seconds), the model folders holding them (the plots stage's
    # deps), the metrics records citing a checkpoint's fingerprint (a hash of its bytes), the metrics
    # folders holding those (report and plots deps) and the leaderboard's json that cites them again.
    # Every store and every .gitignore is byte-identical (`maxa pipeline` wrote the entries, sorted).
    hashes = [{e["path"]: e.get("md5") for e in _entries(lock)} for lock in (serial, parallel)]
    volatile = {path for path, md5 in hashes[0].items() if hashes[1].get(path) != md5}
    runs = [e["path"] for e in _entries(serial) if re.fullmatch(r"models/[^/]+/[^/]+\.(pt|sweep)", e["path"])]
    assert runs, "no checkpoint in dvc.lock"
    durations = {
        *runs,
        *{path.rsplit("/", 1)[0] for path in runs},  # models/<task>
        *{re.sub(r"^models/(.+)\.(pt|sweep)$", r"metrics/\1.json", path) for path in runs},
        *{"metrics/" + path.split("/")[1] for path in runs},
        "metrics",
        "reports/leaderboard.json",
    }
    assert volatile <= durations, sorted(volatile - durations)
    assert {p for p in runs if p.endswith(".pt")} <= volatile  # the durations are really there
    for path in volatile:  # equal less the durations
        trees = [_tree(roots[name] / path) for name in ("serial", "parallel")]
        assert trees[0] == trees[1], path
    ignores = [
        {str(p.relative_to(roots[name])): p.read_bytes() for p in roots[name].rglob(".gitignore")}
        for name in ("serial", "parallel")
    ]
    assert ignores[0] == ignores[1] and "data/features/synthetic/.gitignore" in ignores[0]
    assert _unhashed(parallel, volatile) == _unhashed(serial, volatile)
    outs = {e["path"] for stage in serial["stages"].values() for e in stage.get("outs", [])}
    assert len(outs) >= 10 and any(path.startswith("data/features/") for path in outs - volatile)
    for out in sorted(outs):  # every output file: equal bytes, or equal content less the durations
        trees = [_tree(roots[name] / out) for name in ("serial", "parallel")]
        assert trees[0] == trees[1] and trees[0], out
        if out not in volatile:
            assert _files(roots["serial"] / out) == _files(roots["parallel"] / out), out
    # The parallel run's timeline holds every stage it ran, once (timeline.json beside its logs).
    spans = json.loads((roots["parallel"] / ".dvc/tmp/maxa-run/timeline.json").read_text())["spans"]
    assert sorted(span["stage"] for span in spans) == sorted(
        _dvc(roots["serial"], "stage", "list", "--name-only").split()
    )
    assert "Data and pipelines are up to date." in _dvc(roots["parallel"], "status")


def test_a_stage_gets_the_runners_thread_settings_not_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """dask's nanny sets OMP_NUM_THREADS=1 in its workers; a stage gets the runner's values back."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as inside a dask worker
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    caller = {"OMP_NUM_THREADS": None, "MKL_NUM_THREADS": "4"}  # the runner: OMP unset, MKL 4
    device = _stage_env("device", caller)
    assert "OMP_NUM_THREADS" not in device and device["MKL_NUM_THREADS"] == "4"
    assert device["CUDA_VISIBLE_DEVICES"] == "3"  # the worker's GPU
    assert device["PATH"].split(os.pathsep)[0] == str(Path(PY).parent)  # this environment's maxa and dvc
    assert _stage_env("cpu", caller)["CUDA_VISIBLE_DEVICES"] == ""  # a CPU stage leaves the GPU alone


def test_first_error_prefers_maxas_line() -> None:
    text = (
        "Running stage 'x':\n> maxa probe\nError: store a.zarr is missing\nERROR: failed to reproduce 'x'\n"
    )
    assert first_error(text) == "Error: store a.zarr is missing"
    assert first_error("ERROR: failed to reproduce 'x': exit 2\n") == "ERROR: failed to reproduce 'x': exit 2"
    assert first_error("all fine\n") == ""
