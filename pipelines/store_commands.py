"""`maxa store ...`: inspect, verify, summarize and convert feature/target stores at any fsspec URL."""

from __future__ import annotations

import json

import click

from maxa.core.errors import MaxaError
from maxa.pipelines.errors import user_errors


@click.group("store")
def command() -> None:
    """Inspect, check, summarize and convert maxa stores (paths or fsspec URLs, read-only unless noted)."""


@command.command()
@click.argument("url")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@user_errors
def info(url: str, as_json: bool) -> None:
    """Print a store's layout, completeness and provenance."""
    from maxa.core.store import open_store

    store = open_store(url, require_complete=False)
    done = store.done_shards()
    report = {
        "url": url,
        "kind": store.kind,
        "format_version": store.format_version,
        "fingerprint": store.fingerprint,
        "images": store.num_items,
        "shard_size": store.shard_size,
        "shards_done": f"{int(done.sum())}/{len(done)}",
        "complete": bool(done.all()),
        "arrays": store.layout(),
        "provenance": store.provenance,
        "extra": store.extra,
    }
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    click.echo(f"{url}: {store.kind} store, format {store.format_version}, fingerprint {store.fingerprint}")
    state = "complete" if report["complete"] else "INCOMPLETE"
    click.echo(
        f"{store.num_items} images in shards of {store.shard_size}: {report['shards_done']} done ({state})"
    )
    click.echo("arrays:")
    for name, layout in store.layout().items():
        dims = ",".join(layout["dims"]) or "-"
        codecs = "+".join(layout["codecs"]) or "raw"
        shards = tuple(layout["shards"]) if layout["shards"] else "-"
        click.echo(
            f"  {name:36s} {layout['dtype']:8s} {tuple(layout['shape'])!s:22s} dims ({dims}) "
            f"chunks {tuple(layout['chunks'])} shards {shards} {codecs}"
        )
    click.echo("provenance:")
    for key, value in store.provenance.items():
        click.echo(f"  {key}: {json.dumps(value, default=str)}")
    if store.extra:
        click.echo("extra:")
        for key, value in store.extra.items():
            click.echo(f"  {key}: {json.dumps(value, default=str)[:400]}")


@command.command()
@click.argument("url")
@click.option(
    "--no-values",
    is_flag=True,
    help="Check layout and completeness only (read no chunk: no checksums, no NaN).",
)
@user_errors
def verify(url: str, no_values: bool) -> None:
    """Check completeness, shapes and shard objects, then read every chunk once (whole shards): each
    chunk's CRC32C checksum and, in float arrays, that no value is NaN/inf."""
    from maxa.core.store import open_store

    store = open_store(url, require_complete=False)
    problems = store.problems(check_values=not no_values)
    if problems:
        raise MaxaError(f"store {url} failed verification: " + "; ".join(problems))
    unchecked = store.unchecked_arrays()
    if no_values:
        checked = "layout only: no chunk was read"
    elif unchecked:
        checked = (
            f"every chunk read; {', '.join(unchecked)} carry no checksums (written before maxa stored them), "
            "so their bytes are unchecked: re-create the store to add them"
        )
    else:
        checked = "every chunk read and its CRC32C checksum verified"
    click.echo(f"ok: {url} ({store.kind}, {store.num_items} images, {store.num_shards} shards; {checked})")


@command.command()
@click.argument("url")
@click.option(
    "--layer", "layers", multiple=True, help="Array to summarize (repeatable); default: all float arrays."
)
@click.option(
    "--components", default=16, show_default=True, help="PCA components to save (3 suffice for RGB)."
)
@click.option("--no-save", is_flag=True, help="Print only; write nothing.")
@click.option(
    "--out",
    default=None,
    help="Zarr group to save the statistics in; default: <name>.stats.zarr beside the store, or in a DVC "
    "project under its stats/ folder (outside every DVC output).",
)
@user_errors
def stats(url: str, layers: tuple[str, ...], components: int, no_save: bool, out: str | None) -> None:
    """Per-channel mean/std, variance spectrum, effective rank and a PCA basis, out of core (dask).

    Saved as <name>.stats.zarr (<layer>/{mean,std,covariance_eigenvalues,pca_components} plus a summary
    in its attributes, tagged with the store's fingerprint): beside the store, or in a DVC project under
    its stats/ folder, so no DVC output changes (the generated layout keeps stores inside folder outputs).
    """
    from maxa.extract.stats import compute_stats, stats_path

    if components < 0:
        raise MaxaError(f"--components must be >= 0, got {components}")
    for result in compute_stats(url, layers, components, save=not no_save, out=out):
        top = ", ".join(f"top-{k} {v:.1%}" for k, v in result.top_k_fraction().items())
        click.echo(
            f"{result.layer}: {result.count:,} vectors x {len(result.mean)} channels; "
            f"effective rank {result.effective_rank:.1f}; channel variance share: {top}; "
            f"PCA {len(result.components)} components explain {result.explained_variance_ratio.sum():.1%}"
        )
    if not no_save:
        click.echo(f"saved to {out or stats_path(url)}")


@command.command("export-hdf5")
@click.argument("url")
@click.argument("path", type=click.Path())
@click.option("--compression", type=click.Choice(["none", "gzip", "lzf"]), default="none", show_default=True)
@user_errors
def export_hdf5(url: str, path: str, compression: str) -> None:
    """Write a store to one chunked HDF5 file (same arrays, ids, done flags and attributes)."""
    from maxa.extract.interchange import export_hdf5 as run

    click.echo(f"exported {url} -> {run(url, path, compression=compression)}")


@command.command("import-hdf5")
@click.argument("path", type=click.Path())
@click.argument("url")
@click.option("--overwrite", is_flag=True, help="Replace an existing store made from different inputs.")
@user_errors
def import_hdf5(path: str, url: str, overwrite: bool) -> None:
    """Rebuild a store from an HDF5 export (same fingerprint as the exported store)."""
    from maxa.extract.interchange import import_hdf5 as run

    store = run(path, url, overwrite=overwrite)
    click.echo(f"imported {path} -> {url} (fingerprint {store.fingerprint}, complete: {store.complete})")
