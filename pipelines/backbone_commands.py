"""`maxa backbones`: the preset zoo (and any timm names) with the facts a probe needs.

The presets' rows come from extract/preset_facts.json, generated from the live models by
`maxa backbones --regenerate-facts` (a test checks it is current), so listing them imports neither torch
nor timm. A preset the file does not describe as registered now, and any timm name, is described live.
"""

from __future__ import annotations

import json
from typing import Any

import click

from maxa.extract.presets import FACTS_FILE, Preset, get_preset, presets
from maxa.pipelines.errors import user_errors

MAX_DESCRIBED = 40  # pattern matches described in detail; more are listed by name only

COLUMNS = (
    "name",
    "timm model",
    "family",
    "patch",
    "width",
    "input",
    "prefix",
    "params",
    "stored",
    "normalise",
    "weights",
)
_NAMED_MEANS = {  # input normalisation conventions, by their mean (rounded to 3 places)
    (0.485, 0.456, 0.406): "imagenet",
    (0.481, 0.458, 0.408): "openai-clip",
    (0.5, 0.5, 0.5): "0.5/0.5",
    (0.0, 0.0, 0.0): "[0,1]",
}


def _normalisation(model: str, mean: tuple[float, ...] | None) -> tuple[list[float], list[float], str]:
    """(mean, std, short name) the model's inputs are normalised with (a preset's override wins)."""
    from maxa.extract.backbones import timm

    cfg = timm.models.get_pretrained_cfg(model) or timm.models.get_pretrained_cfg(model.split(".", 1)[0])
    means = tuple(mean or (cfg.mean if cfg else (0.485, 0.456, 0.406)))
    stds = tuple(cfg.std) if cfg and not mean else ()
    label = _NAMED_MEANS.get(tuple(round(m, 3) for m in means), "custom")
    return [float(m) for m in means], [float(s) for s in stds], label


def _rows(
    names: list[tuple[str, str, str, str, tuple[int, ...], Any]],
) -> list[dict[str, Any]]:
    """(name, timm model, family, weights source, stored levels, preset) -> rows with the model's facts.

    Facts are read on the meta device (describe), so even a 7B model is listed without memory.
    """
    from maxa.extract.backbones import describe

    rows = []
    for name, model, family, weights, layers, preset in names:
        info = describe(model)
        mean, std, label = _normalisation(model, preset.mean if preset else None)
        if preset is not None and preset.std:
            std = list(preset.std)
        levels = [info.levels + i if i < 0 else i for i in layers]
        rows.append(
            {
                "name": name,
                "timm model": model,
                "family": family,
                "patch": info.stride,
                "width": info.width,
                "input": info.input_size,
                "prefix": info.num_prefix_tokens,
                "params": f"{info.params / 1e6:.1f}M",
                "parameters": info.params,
                # stored levels (block or stage index) with their output stride
                "stored": ",".join(f"{i}/s{info.strides[i]}" if info.strides else str(i) for i in levels),
                "normalise": label,
                "mean": mean,
                "std": std,
                "weights": weights,
                "levels": info.levels,
            }
        )
    return rows


def _weights(preset: Preset) -> str:
    return "timm hub" if preset.hub else "--weights FILE"


def _preset_entries(selected: list[Preset]) -> list[tuple[str, str, str, str, tuple[int, ...], Any]]:
    return [(p.name, p.model, p.family, _weights(p), p.layers, p) for p in selected]


def preset_facts_text() -> str:
    """What FACTS_FILE must hold: every registered preset's row, described from the live models."""
    rows = _rows(_preset_entries(presets()))
    facts = {
        "generated_by": "maxa backbones --regenerate-facts",
        "presets": {row["name"]: row for row in rows},
    }
    return json.dumps(facts, indent=2) + "\n"


def _stored_facts() -> dict[str, Any]:
    """The rows of FACTS_FILE by preset name ({} without a readable file: then all are described live)."""
    try:
        facts = json.loads(FACTS_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    stored = facts.get("presets") if isinstance(facts, dict) else None
    return stored if isinstance(stored, dict) else {}


def _describes(row: Any, preset: Preset) -> bool:
    """Whether a stored row was made from this preset as registered now (what the row shows of it)."""
    try:
        if (row["name"], row["timm model"], row["family"], row["weights"]) != (
            preset.name,
            preset.model,
            preset.family,
            _weights(preset),
        ):
            return False
        levels = [row["levels"] + i if i < 0 else i for i in preset.layers]
        if [int(level.split("/")[0]) for level in row["stored"].split(",")] != levels:
            return False
        if preset.mean and row["mean"] != [float(m) for m in preset.mean]:
            return False
        return not preset.std or row["std"] == list(preset.std)
    except (KeyError, TypeError, ValueError, AttributeError):
        return False


def _preset_rows(selected: list[Preset]) -> list[dict[str, Any]]:
    """The presets' rows from FACTS_FILE; any preset it does not describe is described live."""
    stored = _stored_facts()
    rows = {p.name: stored[p.name] for p in selected if _describes(stored.get(p.name), p)}
    missing = [p for p in selected if p.name not in rows]
    if missing:
        rows.update((row["name"], row) for row in _rows(_preset_entries(missing)))
    return [rows[p.name] for p in selected]


def _table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    """Aligned columns; a blank line between families (rows come grouped by family)."""
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns), "  ".join("-" * widths[c] for c in columns)]
    for i, row in enumerate(rows):
        if i and "family" in columns and row["family"] != rows[i - 1]["family"]:
            lines.append("")
        lines.append("  ".join(str(row[c]).ljust(widths[c]) for c in columns).rstrip())
    return "\n".join(lines)


@click.command("backbones")
@click.argument("pattern", required=False)
@click.option(
    "--json", "as_json", is_flag=True, help="Print JSON (one object per backbone) instead of a table."
)
@click.option(
    "--regenerate-facts",
    is_flag=True,
    hidden=True,
    help="Rewrite extract/preset_facts.json from the live models (after a preset edit or a timm upgrade).",
)
@user_errors
def command(pattern: str | None, as_json: bool, regenerate_facts: bool) -> None:
    """List the backbone presets grouped by family: timm model, patch size (output stride for CNNs),
    feature width, default input size, prefix (cls/register) tokens, parameters, the levels the paper
    protocol stores (index/stride), the input normalisation and where the weights come from.

    With PATTERN, list the timm models matching that wildcard (e.g. '*dinov2*') instead; any of them
    works as `maxa extract --model NAME`. A preset's name lists that preset. Add `--weights random-init`
    to any preset or name for the random-init control of its architecture (seeded: the same network in
    every run).
    """
    from maxa.core.errors import MaxaError

    if regenerate_facts:
        if pattern is not None:
            raise MaxaError("--regenerate-facts describes every preset: give no PATTERN")
        FACTS_FILE.write_text(preset_facts_text(), encoding="utf-8")
        click.echo(f"wrote {FACTS_FILE}")
        return
    # A preset name is never a timm name (tests/extract/test_presets.py), so it needs no timm to resolve.
    preset = None if pattern is None else get_preset(pattern)
    if pattern is None or preset is not None:
        families = list(dict.fromkeys(p.family for p in presets()))  # first-registration order
        ordered = sorted(presets(), key=lambda p: families.index(p.family)) if preset is None else [preset]
        rows = _preset_rows(ordered)
    else:
        from maxa.extract._compat import ensure_torchvision_importable

        ensure_torchvision_importable()
        import timm

        matches = timm.list_pretrained(pattern) or timm.list_models(pattern)
        if not matches:
            raise MaxaError(f"no timm model matches {pattern!r} (wildcards: * and ?)")
        if len(matches) > MAX_DESCRIBED and not as_json:
            click.echo("\n".join(matches))
            click.echo(f"({len(matches)} models; narrow the pattern for details)", err=True)
            return
        rows = _rows([(m, m, "", "timm hub" if "." in m else "random-init", (-1,), None) for m in matches])
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    listing_presets = pattern is None or preset is not None
    columns = (
        COLUMNS
        if listing_presets
        else tuple(c for c in COLUMNS if c not in ("timm model", "family", "stored"))
    )
    click.echo(_table(rows, columns))
    if listing_presets:
        click.echo(
            "\nUse a name as `maxa extract --model NAME`; `--weights random-init` gives the random-init "
            "control of its architecture; any timm model name works too (`maxa backbones PATTERN`)."
        )


def preset_facts(preset: Preset) -> dict[str, Any]:
    """One preset's row (levels, prefix tokens, ...) from FACTS_FILE: what `maxa params` checks a
    backbone entry against without torch."""
    return _preset_rows([preset])[0]
