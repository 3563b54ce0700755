"""`maxa pipeline run`: every stage of the workspace's DVC pipeline, independent ones in parallel.

`maxa pipeline [PARAMS]` stays the dvc.yaml generator; `run` is its one subcommand (PipelineCommand
dispatches on the first word, so the generator's own arguments keep their meaning).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import click

from maxa.core.errors import MaxaError
from maxa.pipelines.errors import user_errors


@click.command(name="run", short_help="Run the DVC pipeline, independent stages in parallel.")
@click.option(
    "--workers",
    type=int,
    default=None,
    help="Local worker processes, one device stage each (GPU i for worker i) plus one CPU stage beside it "
    "[default: one per GPU; 1 without GPUs].",
)
@click.option(
    "--scheduler",
    default=None,
    metavar="ADDRESS",
    help="Use the workers of this dask scheduler (tcp://HOST:8786) instead: machines sharing the workspace.",
)
@user_errors
def run(workers: int | None, scheduler: str | None) -> None:
    """Run the DVC pipeline of this workspace: each stage is `dvc repro --single-item STAGE` (DVC keeps
    dvc.lock and the cache), independent stages at the same time on dask workers.

    A failed stage stops only the stages that need it; the rest go on, the summary names what failed
    with its log, and the exit status is then 1. Logs: .dvc/tmp/maxa-run/logs/.
    """
    from maxa.pipelines.runner import run_pipeline

    if workers is not None and scheduler is not None:
        raise MaxaError("--workers starts local workers, --scheduler uses a cluster's: give one of them")
    progress = run_pipeline(Path.cwd(), workers=workers, scheduler=scheduler, echo=click.echo)
    if not progress.ok:
        raise SystemExit(1)


class PipelineCommand(click.Command):
    """A command that also has subcommands: `maxa pipeline run ...` goes to `run`, anything else to the
    command itself (`maxa pipeline params.yaml --check`)."""

    subcommands: ClassVar[dict[str, click.Command]] = {"run": run}
    _CHOSEN = "maxa.pipelines.run_commands.subcommand"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] in self.subcommands:
            ctx.meta[self._CHOSEN] = (args[0], args[1:])
            return []
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        chosen = ctx.meta.pop(self._CHOSEN, None)
        if chosen is None:
            return super().invoke(ctx)
        name, rest = chosen
        command = self.subcommands[name]
        # parent: `maxa`, so usage reads `maxa pipeline run`, not `maxa pipeline [PARAMS_FILE] run`
        with command.make_context(f"{ctx.info_name} {name}", rest, parent=ctx.parent) as sub:
            return command.invoke(sub)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        with formatter.section("Subcommands"):
            formatter.write_dl(
                [(name, command.get_short_help_str()) for name, command in self.subcommands.items()]
            )
