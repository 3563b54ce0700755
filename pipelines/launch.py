"""The `maxa` console script. The commands are built from the registries when maxa.pipelines.cli is
imported, plugins first, so the CLI's error boundary starts here: a plugin module that cannot be imported
(named by MAXA_PLUGINS or a `maxa.plugins` entry point) is one `Error:` line and exit status 1, not a
traceback (MAXA_DEBUG=1 shows it)."""

from __future__ import annotations

import sys

import click

from maxa.core.errors import MaxaError
from maxa.pipelines.errors import EXIT_USER, debugging


def main() -> None:
    try:
        from maxa.pipelines.cli import main as run
    except MaxaError as exc:
        if debugging():
            raise
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_USER)
    run()
