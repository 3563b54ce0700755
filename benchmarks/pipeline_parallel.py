"""The demo pipeline run serially by `dvc repro` vs by `maxa pipeline run --workers N`: wall-time ratio.

Both run in fresh copies of one workspace (params.yaml + the dvc.yaml and .gitignore files `maxa pipeline`
writes, git and DVC initialised), one after the other in the same invocation, with SOURCE_DATE_EPOCH fixed
so the two can be compared: the script prints which dvc.lock hashes differ (only a run's durations: the
checkpoints, the model folders holding them, the metrics records citing a checkpoint's fingerprint, the
metrics folders and leaderboard.json; tests/pipelines/test_runner.py checks the rest is byte-equal) and
that `dvc status` is clean after the parallel run. Each run's CPU (user + system of its process tree) is
printed beside its wall time, with the parallel run's timeline summary (busy fraction per worker slot,
critical path, bound): only the ratio of one run means something (the machine may be shared).
The issue's goal: >= 1.6x for the demo on 2 workers on 2 cores.

What bounds it: no schedule finishes before its critical path nor before the stages' CPU seconds spread
over the cores. The serial run already keeps ~1.5 of 2 cores busy (torch's intra-op threads; a sweep's two
members step on separate cores), and the parallel run needs at least its CPU: `dvc repro --single-item`
per stage (~0.9 CPU-s each, measured on an up-to-date toy stage), the dask cluster, and threads of two
stages contending for two cores.

Measured 2026-12-07, full demo (53 stages), shared 2-core box at load 5-14 from two other engineers' work
(so the wall times and the ratio say little; the CPU does): serial 1573.7 s wall, 981.7 CPU-s;
`--workers 2` 1651.1 s wall, 1446.1 CPU-s (stages 1245.6 CPU-s, the rest the cluster and runner): 0.95x.
Timeline: both device slots busy 97% (no slot idle while a stage was ready), critical path 568.3 s
(pipeline -> prepare@train -> extract@vit_tiny -> probe_instance@vit_tiny -> evaluate_instance -> plots;
the four instance probes are 392 of the 1246 stage CPU-s). Bound on 2 cores: serial's own 982 CPU-s / 2 =
491 s, so on the quiet box (serial 679.0 s, 2026-12-06) the ratio cannot exceed 679 / 491 = 1.38x even
with no parallel overhead; 1.6x needs <= 424 s, i.e. fewer CPU-s than the serial run itself uses. Not
reachable on 2 cores; it needs a core (or a GPU) per worker. Threads spinning while two stages share the
cores are not where the extra CPU goes: two 150-step probe sweeps at once took 20.3 CPU-s with OpenMP's
default wait policy and 20.5 with OMP_WAIT_POLICY=PASSIVE (one pair each, load ~5).
`data/features/synthetic` now hashes the same in both runs (its DVC .gitignore was in completion order;
`maxa pipeline` writes it sorted).
Quiet box afterwards (2026-12-07, fresh clone at 1eb6688, load 0.7-2.9): serial 634.9 s wall,
824.1 CPU-s (1.30 cores); `--workers 2` 564.7 s, 1096.3 CPU-s (1.94 cores; stages 1009.3 CPU-s): 1.12x.
Slots busy 93% and 97%, critical path 181.5 s, so the schedule is not the limit; the same stages take ~20%
more CPU-s when two run at once on this VM's two vCPUs (shared caches and memory bandwidth), and serial's
own CPU over 2 cores caps the ratio at 634.9 / 412.0 = 1.54x even without that. Only checkpoint-derived
hashes differ; `dvc status` clean.
Earlier: 2026-12-06 quiet box, serial 679.0 s, parallel 608.8 s (1.12x; 2069 CPU-s for both runs);
the small demo of the test (13 stages) at load 14-18: 403.8 s vs 191.8 s (2.11x, load favours more processes).

    python benchmarks/pipeline_parallel.py                         # the demo (params.yaml), 2 workers
    python benchmarks/pipeline_parallel.py --params my.yaml --workers 4 --keep /tmp/timeline
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "HF_HUB_OFFLINE": "1",
        "SOURCE_DATE_EPOCH": "1767225600",
    }


def _run(cwd: Path, *args: str) -> str:
    done = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(args)} failed in {cwd}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def workspace(root: Path, params: Path) -> Path:
    root.mkdir(parents=True)
    shutil.copy(params, root / "params.yaml")
    _run(root, str(BIN / "maxa"), "pipeline", "params.yaml")
    _run(root, "git", "init", "-q")
    _run(root, sys.executable, "-m", "dvc", "init", "-q")
    return root


def timed(cwd: Path, *args: str) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system of the whole process tree) and stdout of a command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = _run(cwd, *args)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, out


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="copy the parallel run's timeline.json/csv here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="maxa-pipeline-bench-") as tmp:
        serial = workspace(Path(tmp) / "serial", args.params)
        parallel = workspace(Path(tmp) / "parallel", args.params)
        stages = len(_run(serial, sys.executable, "-m", "dvc", "stage", "list", "--name-only").split())
        print(f"{stages} stages from {args.params}; {os.cpu_count()} cores", flush=True)
        print(f"load average before: {_load()}", flush=True)
        t_serial, cpu_serial, _ = timed(serial, sys.executable, "-m", "dvc", "repro")
        print(
            f"serial `dvc repro`:                  {t_serial:7.1f} s wall, {cpu_serial:7.1f} CPU-s "
            f"({cpu_serial / t_serial:.2f} cores); load {_load()}",
            flush=True,
        )
        t_parallel, cpu_parallel, out = timed(
            parallel, str(BIN / "maxa"), "pipeline", "run", "--workers", str(args.workers)
        )
        print(
            f"`maxa pipeline run --workers {args.workers}`:    {t_parallel:7.1f} s wall, {cpu_parallel:7.1f} "
            f"CPU-s ({cpu_parallel / t_parallel:.2f} cores); load {_load()}",
            flush=True,
        )
        print(
            "\n".join(
                "  " + line
                for line in out.splitlines()
                if line.startswith(("timeline", "busy", "crit", "bound"))
            )
        )
        cores = len(os.sched_getaffinity(0))
        print(
            f"bound on {cores} cores from the parallel run's CPU: {cpu_parallel / cores:.1f} s, i.e. at most "
            f"{t_serial / (cpu_parallel / cores):.2f}x; the serial run's own CPU over {cores} cores: "
            f"{cpu_serial / cores:.1f} s, at most {t_serial / (cpu_serial / cores):.2f}x"
        )
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for name in ("timeline.json", "timeline.csv"):
                shutil.copy(parallel / ".dvc/tmp/maxa-run" / name, args.keep / name)
        locks = [yaml.safe_load((w / "dvc.lock").read_text())["stages"] for w in (serial, parallel)]
        hashes = [
            {
                (name, e["path"]): e.get("md5")
                for name, s in lock.items()
                for e in s.get("deps", []) + s.get("outs", [])
            }
            for lock in locks
        ]
        differ = sorted({path for (_, path), md5 in hashes[0].items() if hashes[1].get((_, path)) != md5})
        print(
            f"dvc.lock: same stages {set(locks[0]) == set(locks[1])}; hashes that differ: {differ or 'none'}"
        )
        print(
            "  (expected: checkpoints record their run's durations, so they, the folders holding them, the"
            " metrics records citing their fingerprints, the metrics folders and leaderboard.json differ)"
        )
        status = _run(parallel, sys.executable, "-m", "dvc", "status").strip()
        print(f"`dvc status` after the parallel run: {status}")
        print(f"ratio serial / parallel: {t_serial / t_parallel:.2f}x (goal >= 1.6x on 2 workers, 2 cores)")


if __name__ == "__main__":
    main()
