"""The one way tests run `maxa` commands: in-process through click's runner, or as the installed script."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from click.testing import CliRunner, Result

from maxa.pipelines.cli import cli


def invoke(*args: object, catch_exceptions: bool = False) -> Result:
    """Run `maxa ARGS...` in-process (arguments are str()-ed, so paths may be passed as they are)."""
    return CliRunner().invoke(cli, [str(arg) for arg in args], catch_exceptions=catch_exceptions)


def ok(*args: object) -> Result:
    """Run `maxa ARGS...` and fail the test, showing the command's output, unless it exits 0."""
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result


def flags(**options: object) -> list[str]:
    """Command-line options from keywords, in order: `label_size=32` -> `--label-size 32`, `o="a=1"` ->
    `-o a=1`; a list repeats its option (`o=["a=1", "b=2"]` -> `-o a=1 -o b=2`)."""
    args: list[str] = []
    for name, value in options.items():
        flag = f"-{name}" if len(name) == 1 else f"--{name.replace('_', '-')}"
        for item in value if isinstance(value, list) else [value]:
            args += [flag, str(item)]
    return args


def command_env(**extra: str) -> dict[str, str]:
    """The environment of a real subprocess (`maxa`, `dvc`, `git`): this interpreter's scripts first on
    PATH (as `make` arranges), nothing waits on the network, commits need no global git identity."""
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "HF_HUB_OFFLINE": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        **extra,
    }


def maxa_script() -> list[str]:
    """The command line that starts the installed `maxa` (for tests that need a real subprocess)."""
    script = Path(sys.executable).parent / "maxa"
    return [str(script)] if script.exists() else [sys.executable, "-m", "maxa.pipelines.cli"]
