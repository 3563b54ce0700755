"""Building maxa prints no setuptools warning from pyproject.toml (issue 21: a license table and the data
folder maxa.pipelines.paper left out of `packages`), and the wheel carries the published values."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_builds_without_setuptools_warnings(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-v",
            "-w",
            str(tmp_path),
            ".",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert "BuildBackendWarning" not in output and "SetuptoolsDeprecationWarning" not in output, [
        line for line in output.splitlines() if "Warning" in line
    ]
    (wheel,) = tmp_path.glob("maxa-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "maxa/pipelines/paper/published.yaml" in names
    assert not any(name.startswith(("extract/", "tests/")) for name in names)
