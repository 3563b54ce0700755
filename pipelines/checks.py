"""Checks before the work: what `maxa params` and the guard stage of `dvc repro` can find wrong in a
params.yaml without running a stage, so a bad root or layer fails in a second, not after hours of
earlier stages.

Checked: every dataset root exists (after `~` and `$VAR` expansion), the reader takes its options,
every weights file exists, every model is known and every layer fits its depth. Presets are checked
from their stored facts (no torch); a plain timm name is looked up in timm (imported only then, and
the model is built on the meta device: no memory, no weights).
"""

from __future__ import annotations

from pathlib import Path

from maxa.core.errors import MaxaError
from maxa.core.paths import unexpanded
from maxa.extract.config import WEIGHT_KEYWORDS, BackboneSpec, ExtractConfig, check_spec
from maxa.pipelines.params import ROLES, DatasetEntry, Params


def _dataset_problems(name: str, entry: DatasetEntry) -> list[str]:
    from maxa.extract.datasets.base import option_problem

    where = f"datasets.{name}"
    problems = []
    config = entry.prepare_config(ROLES[0])
    if config.root is not None and "://" not in config.root and not Path(config.root).exists():
        unset = unexpanded(config.root)
        why = f" ({unset} is not set)" if unset else ""
        typed = f" (from {entry.root})" if entry.root != config.root else ""
        problems.append(f"{where}.root: {config.root}{typed} does not exist{why}")
    options = (entry.prepare_config(role).options for role in ROLES)
    for problem in dict.fromkeys(option_problem(entry.dataset, o) for o in options):
        if problem is not None:
            problems.append(f"{where}.options: {problem}")
    return problems


def _model_facts(spec: BackboneSpec) -> tuple[int, int, int | None, int]:
    """(levels, prefix tokens, ViT patch or None, default input side) of a preset or timm name."""
    from maxa.extract.presets import get_preset, presets

    # a preset by name, or the timm name (with tag) a preset stands for, as the paper's params spell them
    preset = get_preset(spec.model) or next((p for p in presets() if p.model == spec.model), None)
    if preset is not None:
        from maxa.pipelines.backbone_commands import preset_facts

        row = preset_facts(preset)
        return int(row["levels"]), int(row["prefix"]), None, int(str(row["input"]).split("x")[0])
    from maxa.extract.timm_facts import facts

    found = facts(spec.model)  # cached on disk per timm version: a repeated check imports no torch
    return found.levels, found.num_prefix_tokens, found.patch, found.input_size


def _backbone_problems(name: str, config: ExtractConfig) -> list[str]:
    where = f"backbones.{name}"
    problems = []
    if config.weights not in WEIGHT_KEYWORDS and not Path(config.weights).is_file():
        unset = unexpanded(config.weights)
        why = f" ({unset} is not set)" if unset else ""
        problems.append(f"{where}.weights: no such file {config.weights}{why}")
    spec = config.spec
    if ":" in spec.model:  # hf-hub:/local-dir: models are only known once built
        return problems
    try:
        levels, prefix, patch, side = _model_facts(spec)
        check_spec(spec, levels, prefix, patch, spec.input_size or side)
    except MaxaError as exc:
        problems.append(f"{where}: {exc}")
    return problems


def problems(params: Params) -> list[str]:
    """Everything found wrong, each naming its params key; empty when the file can run."""
    found: list[str] = []
    for name, entry in params.datasets.items():
        found += _dataset_problems(name, entry)
    for name, config in params.backbones.items():
        found += _backbone_problems(name, config)
    return found


def check(params: Params, path: Path) -> None:
    """One line naming every problem of `params` (read from `path`), or nothing."""
    found = problems(params)
    if found:
        raise MaxaError(f"{path}: {len(found)} problem(s) found before running anything: {'; '.join(found)}")
