"""The one way tests run `maxa` commands: in-process through click's runner, or as the installed script."""

from __future__ import annotations

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


def maxa_script() -> list[str]:
    """The command line that starts the installed `maxa` (for tests that need a real subprocess)."""
    script = Path(sys.executable).parent / "maxa"
    return [str(script)] if script.exists() else [sys.executable, "-m", "maxa.pipelines.cli"]
