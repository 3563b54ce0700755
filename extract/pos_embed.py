"""Position-embedding grids resampled to other input sizes the way each model's original code does.

A ViT learns its position embeddings on one token grid; at another input size they are resampled,
and how changes the features. timm's dynamic-size path resamples bicubic *with* antialias to the
exact new grid. Meta's DINOv2 models without registers do not: `interpolate_pos_encoding` in
facebookresearch/dinov2 dinov2/models/vision_transformer.py (l. 180-212) resamples bicubic
*without* antialias, with the scale factor `(new grid + 0.1) / old grid` (`interpolate_offset=0.1`,
`interpolate_antialias=False`: the defaults of dinov2/hub/backbones.py l. 27-28), and leaves the
grid untouched at the native size. The register models are built with `interpolate_antialias=True,
interpolate_offset=0.0` (hub/backbones.py l. 107-108 ...): bicubic with antialias to the exact grid,
which is timm's rule. Other families keep timm's rule (or have no learned grid: RoPE, CNNs).
"""

from __future__ import annotations

import re
import types
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from maxa.extract.errors import MaxaError


@dataclass(frozen=True)
class PosEmbedRule:
    """How a learned position grid is resampled (bicubic) to another token grid."""

    name: str
    antialias: bool
    offset: float = 0.0  # 0: resample to the exact grid; > 0: scale factor (new + offset) / old

    def record(self) -> dict[str, Any]:
        """The provenance entry: enough to redo the resampling."""
        return {"mode": "bicubic", **asdict(self)}


TIMM = PosEmbedRule("timm", antialias=True)
DINOV2_META = PosEmbedRule("dinov2-meta", antialias=False, offset=0.1)
DINOV2_META_REG = PosEmbedRule("dinov2-meta-reg", antialias=True)

_DINOV2 = re.compile(r"vit_\w+_patch14_dinov2")
_DINOV2_REG = re.compile(r"vit_\w+_patch14_reg\d+_dinov2")


def rule_for(model_name: str) -> PosEmbedRule:
    """The original code's rule for a timm model name (with or without its pretrained tag)."""
    arch = model_name.split(".", 1)[0]
    if _DINOV2_REG.fullmatch(arch):
        return DINOV2_META_REG
    if _DINOV2.fullmatch(arch):
        return DINOV2_META
    return TIMM


def resample_grid(grid: torch.Tensor, new_size: tuple[int, int], rule: PosEmbedRule) -> torch.Tensor:
    """(1, h, w, C) position grid -> (1, H, W, C) by the rule; unchanged at the same size."""
    old_size = (int(grid.shape[1]), int(grid.shape[2]))
    if old_size == tuple(new_size):
        return grid
    dtype = grid.dtype
    nchw = grid.float().permute(0, 3, 1, 2)
    if rule.offset:
        scale = ((new_size[0] + rule.offset) / old_size[0], (new_size[1] + rule.offset) / old_size[1])
        out = F.interpolate(nchw, scale_factor=scale, mode="bicubic", antialias=rule.antialias)
    else:
        out = F.interpolate(nchw, size=tuple(new_size), mode="bicubic", antialias=rule.antialias)
    if tuple(out.shape[-2:]) != tuple(new_size):  # a scale factor must land on the grid exactly
        raise MaxaError(
            f"position-embedding resampling {rule.name!r} gave a {tuple(out.shape[-2:])} grid for "
            f"{tuple(new_size)}"
        )
    return out.permute(0, 2, 3, 1).to(dtype)


def _vit_pos_embed(self: Any, x: torch.Tensor) -> torch.Tensor:
    """timm VisionTransformer._pos_embed for (B, H, W, C) patch tokens, resampling by `self._maxa_rule`."""
    batch, height, width, channels = x.shape
    prefix = [t.expand(batch, -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
    embedded_prefix = 0 if self.no_embed_class else self.num_prefix_tokens
    pos = self.pos_embed
    gh, gw = self.patch_embed.grid_size
    grid = resample_grid(
        pos[:, embedded_prefix:].reshape(1, gh, gw, channels), (height, width), self._maxa_rule
    )
    pos = torch.cat([pos[:, :embedded_prefix], grid.reshape(1, height * width, channels)], dim=1)
    tokens = x.reshape(batch, height * width, channels)
    if self.no_embed_class:
        out = torch.cat([*prefix, tokens + pos], dim=1)
    else:
        out = torch.cat([*prefix, tokens], dim=1) + pos
    return self.pos_drop(out)  # type: ignore[no-any-return]


def install(model: nn.Module, rule: PosEmbedRule) -> None:
    """Make a timm VisionTransformer resample its position grid by `rule` (timm's rule: nothing to do)."""
    if rule == TIMM:
        return
    if getattr(model, "pos_embed", None) is None or not getattr(model, "dynamic_img_size", False):
        raise MaxaError(
            f"position-embedding rule {rule.name!r} needs a timm VisionTransformer with a learned grid "
            f"and dynamic_img_size; got {type(model).__name__}"
        )
    model._maxa_rule = rule  # type: ignore[assignment]
    model._pos_embed = types.MethodType(_vit_pos_embed, model)  # type: ignore[method-assign]


def record(model: nn.Module, rule: PosEmbedRule) -> dict[str, Any] | str:
    """What the provenance says about position embeddings at other sizes."""
    if isinstance(getattr(model, "pos_embed", None), torch.Tensor):
        return rule.record()
    if any("rope" in name.lower() for name, _ in model.named_modules()):
        return "rope"  # rotary embeddings computed for each grid: nothing is resampled
    return "none"
