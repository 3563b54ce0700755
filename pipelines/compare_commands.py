"""`maxa compare A B`: explain why two scores differ (registered through COMMAND_MODULES in cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from maxa.pipelines.errors import user_errors


@click.command("compare")
@click.argument("a", type=click.Path(exists=True))
@click.argument("b", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@user_errors
def command(a: str, b: str, as_json: bool) -> None:
    """List every protocol and provenance field that differs between A and B, and the score difference
    B - A with its interval. A and B: metrics JSON files, leaderboard.json files or report folders.
    """
    from maxa.evaluate.compare import compare_runs, format_comparison, load_side, pair_runs

    results = [compare_runs(x, y) for x, y in pair_runs(load_side(Path(a)), load_side(Path(b)))]
    if as_json:
        click.echo(json.dumps(results, indent=2, default=str))
        return
    click.echo("\n\n".join(format_comparison(r) for r in results))
