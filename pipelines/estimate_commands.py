"""`maxa estimate`: the disk and device time of an experiment's matrix, before running it."""

from __future__ import annotations

import json
from pathlib import Path

import click

from maxa.pipelines.errors import user_errors


@click.command("estimate")
@click.argument("params_file", default="params.yaml", type=click.Path(exists=True, dir_okay=False))
@click.option("--gpu-tflops", default=300.0, show_default=True, help="Assumed sustained backbone TFLOP/s.")
@click.option("--adapter-tflops", default=30.0, show_default=True, help="Assumed adapter TFLOP/s on it.")
@click.option("--cpu-gflops", default=34.0, show_default=True, help="CPU GFLOP/s (measured here).")
@click.option("--decode", default=1000.0, show_default=True, help="Input pipeline images/s on the GPU host.")
@click.option("--json", "as_json", is_flag=True, help="Print the lines as JSON instead of Markdown.")
@user_errors
def command(
    params_file: str,
    gpu_tflops: float,
    adapter_tflops: float,
    cpu_gflops: float,
    decode: float,
    as_json: bool,
) -> None:
    """Feature-store GB and device hours of every extraction and probe of PARAMS_FILE's matrix.

    FLOPs are counted (backbones on the meta device, adapters on one sample); the device rates are the
    options. The formula is printed under the table (pipelines/estimate.py has it too).
    """
    from maxa.pipelines.estimate import as_dict, default_rates, estimate, render
    from maxa.pipelines.params import load_params

    params = load_params(Path(params_file))
    rates = default_rates(params, gpu_tflops, adapter_tflops, cpu_gflops, decode)
    lines = list(estimate(params, rates))
    click.echo(json.dumps([as_dict(x) for x in lines], indent=1) if as_json else render(lines, rates))
