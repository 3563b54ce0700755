"""The `controls: true` switch: noise and position-only control stores beside the backbones of params.yaml.

One control pair per distinct feature shape (grid and channels of every stored array), named after the
first backbone of that shape: `control_noise.<backbone>`, `control_position.<backbone>`. A control entry is
its backbone's entry with the weights replaced (extract/controls.py), so every stage reads it like a
backbone (`--backbone control_noise.vit_tiny`); the leaderboard shows it as a row and each backbone's margin
over the strongest control (evaluate/controls.py).

Grouping by shape needs each model's facts (timm on the meta device: seconds), so only `maxa pipeline` (and
the guard stage of dvc.yaml) groups; a stage resolves its own entry from the name alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable

from maxa.core.errors import MaxaError
from maxa.extract.config import CONTROL_NOISE, CONTROL_POSITION, ExtractConfig, input_hw

PREFIX = "control_"
KINDS = {"noise": CONTROL_NOISE, "position": CONTROL_POSITION}
"""Name part -> the `weights` keyword of the control store (extract/controls.py)."""


def control_name(kind: str, like: str) -> str:
    return f"{PREFIX}{kind}.{like}"


def parse(name: str) -> tuple[str, str] | None:
    """(weights keyword, backbone) of a control entry name, or None for any other name."""
    head, dot, like = name.partition(".")
    kind = head.removeprefix(PREFIX)
    if not dot or not head.startswith(PREFIX) or kind not in KINDS or not like:
        return None
    return KINDS[kind], like


def control_config(backbones: dict[str, ExtractConfig], name: str) -> ExtractConfig | None:
    """The entry of a control name: its backbone's entry holding the control's weights; None if not one."""
    parsed = parse(name)
    if parsed is None or parsed[1] not in backbones:
        return None
    weights, like = parsed
    return dataclasses.replace(backbones[like], name=name, weights=weights)


def shape_key(config: ExtractConfig) -> Hashable:
    """What decides a store's array shapes: per stored layer (grid, channels), and the prefix tokens.

    Read from the model's facts (a preset's stored facts, else timm on the meta device); a model known
    only once built (`hf-hub:`, `local-dir:`) is its own shape."""
    if ":" in config.model:
        return ("model", config.model, config.input_size, tuple(config.layers), config.store_prefix)
    from maxa.extract.backbones import describe
    from maxa.extract.presets import get_preset

    preset = get_preset(config.model)
    info = describe(preset.model if preset is not None else config.model)
    size = input_hw(config.input_size or info.input_size)
    levels = [i + info.levels if i < 0 else i for i in config.layers]
    arrays = []
    for level in levels:
        if not 0 <= level < info.levels:
            raise MaxaError(f"layer {level} is out of range for {config.model!r} ({info.levels} levels)")
        stride = info.patch or info.strides[level]
        arrays.append((-(-size[0] // stride), -(-size[1] // stride), info.channels[level]))
    return (tuple(arrays), info.num_prefix_tokens if config.store_prefix else 0)


def controls(backbones: dict[str, ExtractConfig]) -> dict[str, list[str]]:
    """Control entry name -> the backbones of its shape (the first names it), both kinds per shape.

    Backbones that are themselves controls (`weights: control:*`) get none."""
    groups: dict[Hashable, list[str]] = {}
    for name, config in backbones.items():
        if config.weights not in KINDS.values():
            groups.setdefault(shape_key(config), []).append(name)
    return {control_name(kind, members[0]): members for members in groups.values() for kind in KINDS}
