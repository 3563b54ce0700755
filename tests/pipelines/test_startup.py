"""`maxa --help`, every subcommand's `--help` and `maxa backbones` must not import the heavy libraries
(start-up time)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "timm", "zarr", "dask", "dvc", "numpy", "scipy", "sklearn", "matplotlib")

PROBE = f"""
import json, sys
import click
from click.testing import CliRunner
from maxa.pipelines.cli import cli

def paths(group, prefix):
    for name, command in group.commands.items():
        yield [*prefix, name]
        if isinstance(command, click.Group):
            yield from paths(command, [*prefix, name])

runner = CliRunner()
failed = [p for p in [[], *paths(cli, [])] if runner.invoke(cli, [*p, "--help"]).exit_code != 0]
print(json.dumps({{"failed": failed, "count": len(list(paths(cli, []))),
                  "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def test_help_imports_no_heavy_library() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["failed"] == []
    assert result["count"] >= 10  # the stages, params, pipeline and the command modules' subcommands
    assert result["heavy"] == [], f"--help imported {result['heavy']}"


BACKBONES = f"""
import json, sys
from click.testing import CliRunner
from maxa.pipelines.cli import cli

runner = CliRunner()
codes = [runner.invoke(cli, ["backbones", *args]).exit_code for args in ([], ["--json"], ["dinov2_b"])]
print(json.dumps({{"codes": codes, "heavy": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def test_backbones_imports_no_heavy_library() -> None:
    """The presets' facts come from extract/preset_facts.json: listing them needs neither torch nor timm."""
    done = subprocess.run([sys.executable, "-c", BACKBONES], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["codes"] == [0, 0, 0]
    assert result["heavy"] == [], f"`maxa backbones` imported {result['heavy']}"
