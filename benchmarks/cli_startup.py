"""Start-up cost of `maxa --help` and `maxa probe --help` (the registries are read at import), against an
earlier commit measured in the same run.

    python benchmarks/cli_startup.py --base 23b3b0e --repeats 15

The base commit's source is unpacked (`git archive`) into a temporary folder laid out as the `maxa`
package and put first on PYTHONPATH, so both trees run on this interpreter and its libraries, alternating
run by run (a loaded machine slows both alike). Prints the median wall and CPU (user + sys) seconds per
command and tree, and the ratio current / base.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("core", "extract", "probe", "evaluate", "pipelines")
COMMANDS = (["--help"], ["probe", "--help"])
RUN = "import sys; from maxa.pipelines.cli import cli; cli(sys.argv[1:], prog_name='maxa')"


def unpack(rev: str, into: Path) -> Path:
    """The source of `rev` as an importable `maxa` package below `into` (for PYTHONPATH)."""
    source = into / "source"
    source.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
    package = into / "path" / "maxa"
    package.mkdir(parents=True)
    for stage in STAGES:
        (package / stage).symlink_to(source / stage)
    return into / "path"


def timed(args: list[str], pythonpath: Path | None) -> tuple[float, float]:
    """(wall, CPU) seconds of one `maxa ARGS` in a fresh interpreter."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", RUN, *args], env=env, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=None, help="git revision to compare with (default: none)")
    parser.add_argument("--repeats", type=int, default=11)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trees: dict[str, Path | None] = {"current": None}
        if args.base:
            trees[f"base {args.base}"] = unpack(args.base, Path(tmp))
        for command in COMMANDS:
            samples: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
            for _ in range(args.repeats):
                for name, path in trees.items():
                    samples[name].append(timed(command, path))
            medians = {
                name: (statistics.median(w for w, _ in s), statistics.median(c for _, c in s))
                for name, s in samples.items()
            }
            print(f"maxa {' '.join(command)}  ({args.repeats} runs each, medians)")
            for name, (wall, cpu) in medians.items():
                print(f"  {name:<20} wall {wall:.3f} s   cpu {cpu:.3f} s")
            if args.base:
                (cw, cc), (bw, bc) = medians["current"], medians[f"base {args.base}"]
                print(f"  current / base       wall {cw / bw:.2f}x   cpu {cc / bc:.2f}x")


if __name__ == "__main__":
    main()
