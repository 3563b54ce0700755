"""Position-embedding grids resampled to other input sizes the way each model's original code does.

A ViT learns its position embeddings on one token grid; at another input size they are resampled,
and how changes the features. timm's dynamic-size path resamples bicubic *with* antialias to the
exact new grid. The original code of several families does not:

- DINOv2 without registers: facebookresearch/dinov2 dinov2/models/vision_transformer.py
  `interpolate_pos_encoding` (l. 180-212): bicubic, antialias off, scale factor
  `(new grid + 0.1) / old grid` (`interpolate_offset=0.1`, `interpolate_antialias=False`, the
  defaults of dinov2/hub/backbones.py l. 27-28); the grid is untouched at the native size.
  The register models pass `interpolate_antialias=True, interpolate_offset=0.0` (hub/backbones.py
  l. 107-108, 122-123, 137-138, 153-154): timm's rule.
- DINO: facebookresearch/dino vision_transformer.py `interpolate_pos_encoding` (l. 174-194): the
  same scale-factor rule (+0.1, bicubic, no antialias).
- Perception Encoder: facebookresearch/perception_models core/vision_encoder/pe.py
  `_sample_abs_posemb`: bilinear, align_corners=False, no antialias, exact grid.
- TIPS: google-deepmind/tips pytorch/image_encoder.py `interpolate_pos_encoding` (l. 752-788) is
  bilinear; run_image_encoder_inference.py (l. 100-108) builds the models with antialias on and
  offset 0: bilinear with antialias to the exact grid.
- SAM 2 Hiera: facebookresearch/sam2 sam2/modeling/backbones/hieradet.py `_get_pos_embed`
  (l. 273-281): bicubic, no antialias, exact grid, which timm's HieraDet does too.
- RADIO: NVlabs/RADIO radio/vit_patch_generator.py `_get_pos_embeddings` (eval, CPE): the 128x128
  grid resized bilinear (no antialias; align_corners as each release's code) to a square of the
  longer grid side, then the top-left grid cropped. timm's NaFlexVit RADIO models keep that grid and
  rule (`naflexvit_*_radio_*`, the presets); its plain-ViT RADIO models drop the grid at load.
RoPE models (DINOv3) compute their rotary embeddings for each grid: nothing is resampled.
"""

from __future__ import annotations

import re
import types
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from maxa.core.errors import MaxaError


@dataclass(frozen=True)
class PosEmbedRule:
    """How a learned position grid is resampled to another token grid."""

    name: str
    mode: str = "bicubic"
    antialias: bool = True
    offset: float = 0.0  # 0: resample to the exact grid; > 0: scale factor (new + offset) / old
    timm_native: bool = False  # timm's own forward already resamples this way

    def record(self) -> dict[str, Any]:
        """The provenance entry: enough to redo the resampling."""
        entry = asdict(self)
        del entry["timm_native"]
        return entry


TIMM = PosEmbedRule("timm", timm_native=True)
DINOV2_META = PosEmbedRule("dinov2-meta", antialias=False, offset=0.1)
DINOV2_META_REG = PosEmbedRule("dinov2-meta-reg", antialias=True)  # timm's rule, stated explicitly
DINO_META = PosEmbedRule("dino-meta", antialias=False, offset=0.1)
PE_META = PosEmbedRule("pe-meta", mode="bilinear", antialias=False)
TIPS_ORIGINAL = PosEmbedRule("tips-original", mode="bilinear", antialias=True)
SAM2_META = PosEmbedRule("sam2-meta", antialias=False, timm_native=True)

_RULES = (  # (timm architecture pattern, pretrained tag or None for any, rule)
    (re.compile(r"vit_\w+_patch14_reg\d+_dinov2"), None, DINOV2_META_REG),
    (re.compile(r"vit_\w+_patch14_dinov2"), None, DINOV2_META),
    (re.compile(r"vit_\w+_patch(8|16)_224"), "dino", DINO_META),
    (re.compile(r"vit_pe_\w+"), None, PE_META),
    (re.compile(r"sam2_hiera_\w+"), None, SAM2_META),
    (re.compile(r"vit_\w+_patch14_reg\d+_tipsv2"), None, TIPS_ORIGINAL),
)


def rule_for(model_name: str) -> PosEmbedRule:
    """The original code's rule for a timm model name (with or without its pretrained tag)."""
    arch, _, tag = model_name.rsplit("/", 1)[-1].partition(".")
    for pattern, rule_tag, rule in _RULES:
        if pattern.fullmatch(arch) and rule_tag in (None, tag):
            return rule
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
        out = F.interpolate(nchw, scale_factor=scale, mode=rule.mode, antialias=rule.antialias)
    else:
        out = F.interpolate(nchw, size=tuple(new_size), mode=rule.mode, antialias=rule.antialias)
    if tuple(out.shape[-2:]) != tuple(new_size):  # a scale factor must land on the grid exactly
        raise MaxaError(
            f"position-embedding resampling {rule.name!r} gave a {tuple(out.shape[-2:])} grid for "
            f"{tuple(new_size)}"
        )
    return out.permute(0, 2, 3, 1).to(dtype)


def _tokens_with_positions(self: Any, x: torch.Tensor) -> torch.Tensor:
    """(B, H, W, C) patch tokens -> prefix + patch tokens with positions, the grid resampled by the rule.

    The token layout is timm's (ViT and Eva share it): cls, registers, patches; the learned grid
    covers the prefix tokens too unless `no_embed_class`.
    """
    batch, height, width, channels = x.shape
    prefix = [t.expand(batch, -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
    embedded_prefix = 0 if self.no_embed_class else self.num_prefix_tokens
    gh, gw = self.patch_embed.grid_size
    pos = self.pos_embed
    grid = resample_grid(
        pos[:, embedded_prefix:].reshape(1, gh, gw, channels), (height, width), self._maxa_rule
    )
    pos = torch.cat([pos[:, :embedded_prefix], grid.reshape(1, height * width, channels)], dim=1)
    tokens = x.reshape(batch, height * width, channels)
    if self.no_embed_class:
        return torch.cat([*prefix, tokens + pos], dim=1)
    return torch.cat([*prefix, tokens], dim=1) + pos


def _vit_pos_embed(self: Any, x: torch.Tensor) -> torch.Tensor:
    """timm VisionTransformer._pos_embed with the original's resampling."""
    out: torch.Tensor = self.pos_drop(_tokens_with_positions(self, x))
    return out


def _eva_pos_embed(self: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """timm Eva._pos_embed (absolute grid plus rotary embeddings) with the original's resampling."""
    rope = self.rope.get_embed(shape=tuple(x.shape[1:3])) if self.rope is not None else None
    return self.pos_drop(_tokens_with_positions(self, x)), rope


def install(model: nn.Module, rule: PosEmbedRule) -> None:
    """Make a timm ViT/Eva resample its position grid by `rule` (nothing to do where timm already does)."""
    if rule.timm_native:
        return
    kind = type(model).__name__
    if kind not in ("VisionTransformer", "Eva"):
        raise MaxaError(f"position-embedding rule {rule.name!r} is for timm ViT/Eva models, not {kind}")
    if getattr(model, "pos_embed", None) is None or not getattr(model, "dynamic_img_size", False):
        raise MaxaError(
            f"position-embedding rule {rule.name!r} needs a learned position grid and dynamic_img_size"
        )
    if kind == "Eva" and getattr(model, "patch_drop", None) is not None:  # Eva drops inside _pos_embed
        raise MaxaError(f"position-embedding rule {rule.name!r}: patch dropout is not supported")
    method = _vit_pos_embed if kind == "VisionTransformer" else _eva_pos_embed
    # An instance attribute shadows the class's method: this model only, no timm class changed.
    object.__setattr__(model, "_maxa_rule", rule)
    object.__setattr__(model, "_pos_embed", types.MethodType(method, model))


def record(model: nn.Module, rule: PosEmbedRule) -> dict[str, Any] | str:
    """What the provenance says about position embeddings at other sizes."""
    if isinstance(getattr(model, "pos_embed", None), torch.Tensor):
        return rule.record()
    embeds = getattr(model, "embeds", None)  # timm NaFlexVit keeps its grid and its rule in `embeds`
    if isinstance(getattr(embeds, "pos_embed", None), torch.Tensor):
        return {
            "name": "timm-naflex",
            "mode": embeds.pos_embed_interp_mode,  # type: ignore[union-attr]
            "antialias": bool(embeds.pos_embed_antialias),  # type: ignore[union-attr]
            "align_corners": bool(embeds.pos_embed_align_corners),  # type: ignore[union-attr]
            # RADIO's CPE: resize to a square of the longer side, then crop the top-left grid
            "square_then_crop": bool(embeds.pos_embed_ar_preserving),  # type: ignore[union-attr]
            "grid": list(embeds.pos_embed.shape[1:3]),  # type: ignore[union-attr]
        }
    if any("rope" in name.lower() for name, _ in model.named_modules()):
        return "rope"  # rotary embeddings computed for each grid: nothing is resampled
    return "none"
