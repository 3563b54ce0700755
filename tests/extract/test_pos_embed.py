"""DINOv2 features equal Meta's own model at every input size (position grids resampled as Meta does).

The reference here is written from facebookresearch/dinov2 (dinov2/models/vision_transformer.py
`prepare_tokens_with_masks` and `interpolate_pos_encoding`; dinov2/hub/backbones.py for the
interpolate_offset / interpolate_antialias of the models with and without registers), applied to a
checkpoint in Meta's own key format; it uses none of timm's or maxa's resampling code.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F

from maxa.extract import pos_embed
from maxa.extract.backbones import load_backbone, timm
from maxa.extract.config import BackboneSpec

PATCH = 14


def meta_pos_encoding(
    pos: torch.Tensor, height: int, width: int, offset: float, antialias: bool
) -> torch.Tensor:
    """Meta's interpolate_pos_encoding for an (height, width) image; `pos` holds the cls entry first."""
    n = pos.shape[1] - 1
    grid_h, grid_w = height // PATCH, width // PATCH
    if grid_h * grid_w == n and height == width:
        return pos
    side = int(math.sqrt(n))
    patch = pos[:, 1:].float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
    if offset:
        kwargs: dict = {"scale_factor": ((grid_h + offset) / side, (grid_w + offset) / side)}
    else:
        kwargs = {"size": (grid_h, grid_w)}
    patch = F.interpolate(patch, mode="bicubic", antialias=antialias, **kwargs)
    assert patch.shape[-2:] == (grid_h, grid_w)
    return torch.cat([pos[:, :1], patch.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)], dim=1)


def meta_checkpoint(arch: str, registers: int, path: Path) -> dict[str, torch.Tensor]:
    """A random DINOv2 in Meta's key format (cls entry in pos_embed, register_tokens, mask_token)."""
    torch.manual_seed(7)
    model = timm.create_model(arch, num_classes=0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["mask_token"] = torch.zeros(1, state["cls_token"].shape[-1])
    if registers:
        state["register_tokens"] = state.pop("reg_token")
        cls_pos = torch.randn(1, 1, state["pos_embed"].shape[-1]) * 0.02
        state["pos_embed"] = torch.cat([cls_pos, state["pos_embed"]], dim=1)
    else:
        state["pos_embed"] = state["pos_embed"] + torch.randn_like(state["pos_embed"]) * 0.5  # a rough grid
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return state


def meta_forward(
    state: dict[str, torch.Tensor], blocks: torch.nn.Module, image: torch.Tensor, registers: int
) -> torch.Tensor:
    """Meta's token preparation (cls, resampled positions, then registers) and the blocks: (B, h, w, C)."""
    offset, antialias = (0.0, True) if registers else (0.1, False)
    x = F.conv2d(image, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=PATCH)
    batch, channels, grid_h, grid_w = x.shape
    x = torch.cat([state["cls_token"].expand(batch, -1, -1), x.flatten(2).transpose(1, 2)], dim=1)
    x = x + meta_pos_encoding(state["pos_embed"], image.shape[-2], image.shape[-1], offset, antialias)
    if registers:
        x = torch.cat([x[:, :1], state["register_tokens"].expand(batch, -1, -1), x[:, 1:]], dim=1)
    x = blocks(x)
    return x[:, 1 + registers :].reshape(batch, grid_h, grid_w, channels)


@pytest.mark.heavy
@pytest.mark.parametrize(
    ("arch", "registers"), [("vit_small_patch14_dinov2", 0), ("vit_small_patch14_reg4_dinov2", 4)]
)
@pytest.mark.parametrize("size", [(224, 224), (224, 168)], ids=["224", "224x168"])
def test_dinov2_features_equal_metas_model(
    tmp_path: Path, arch: str, registers: int, size: tuple[int, int]
) -> None:
    state = meta_checkpoint(arch, registers, tmp_path / "meta.safetensors")
    backbone = load_backbone(BackboneSpec(arch, weights=str(tmp_path / "meta.safetensors"), input_size=224))
    torch.manual_seed(0)
    image = torch.randn(2, 3, *size)
    (ours,) = backbone.features(image).values()
    with torch.inference_mode():
        reference = meta_forward(state, backbone.model.blocks, image, registers)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    rule = backbone.provenance()["pos_embed_resample"]
    assert rule["antialias"] is bool(registers) and rule["offset"] == (0.0 if registers else 0.1)


@pytest.mark.parametrize("new", [(16, 16), (16, 12), (37, 37), (5, 9)])
def test_dinov2_rule_is_metas_interpolation(new: tuple[int, int]) -> None:
    torch.manual_seed(3)
    pos = torch.randn(1, 1 + 37 * 37, 8)
    expected = meta_pos_encoding(pos, new[0] * PATCH, new[1] * PATCH, offset=0.1, antialias=False)[:, 1:]
    grid = pos_embed.resample_grid(pos[:, 1:].reshape(1, 37, 37, 8), new, pos_embed.DINOV2_META)
    torch.testing.assert_close(grid.reshape(1, -1, 8), expected, atol=0, rtol=0)


def test_rules_by_name() -> None:
    assert pos_embed.rule_for("vit_large_patch14_dinov2.lvd142m") == pos_embed.DINOV2_META
    assert pos_embed.rule_for("vit_giant_patch14_reg4_dinov2") == pos_embed.DINOV2_META_REG
    assert pos_embed.rule_for("vit_base_patch16_224.dino") == pos_embed.DINO_META
    assert pos_embed.rule_for("vit_base_patch16_224.augreg_in1k") == pos_embed.TIMM
    assert pos_embed.rule_for("hf-hub:timm/vit_pe_spatial_base_patch16_512.fb") == pos_embed.PE_META
    assert pos_embed.rule_for("sam2_hiera_base_plus.fb_r896_2pt1") == pos_embed.SAM2_META


def dino_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A random DINO ViT-S/16 (its key format is timm's) with a rough position grid."""
    torch.manual_seed(5)
    state = dict(timm.create_model("vit_small_patch16_224", num_classes=0).state_dict())
    state["pos_embed"] = state["pos_embed"] + torch.randn_like(state["pos_embed"]) * 0.5
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return state


@pytest.mark.heavy
def test_dino_features_equal_dinos_model_at_davis_like_sizes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """facebookresearch/dino vision_transformer.py interpolate_pos_encoding: +0.1, bicubic, no antialias."""
    state = dino_checkpoint(tmp_path / "dino.safetensors")
    # The rule follows the `.dino` tag; a local file of the same weights is loaded under that name.
    assert pos_embed.rule_for("vit_small_patch16_224.dino") == pos_embed.DINO_META
    monkeypatch.setattr(pos_embed, "rule_for", lambda name: pos_embed.DINO_META)
    backbone = load_backbone(
        BackboneSpec("vit_small_patch16_224", weights=str(tmp_path / "dino.safetensors"))
    )
    image = torch.randn(1, 3, 96, 160)
    (ours,) = backbone.features(image).values()
    pos = state["pos_embed"]
    side = int(math.sqrt(pos.shape[1] - 1))
    grid = F.interpolate(
        pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2),
        scale_factor=((6 + 0.1) / side, (10 + 0.1) / side),
        mode="bicubic",
    )
    pos = torch.cat([pos[:, :1], grid.flatten(2).transpose(1, 2)], dim=1)
    x = F.conv2d(image, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=16)
    x = torch.cat([state["cls_token"], x.flatten(2).transpose(1, 2)], dim=1) + pos
    with torch.inference_mode():
        reference = backbone.model.blocks(x)[:, 1:].reshape(1, 6, 10, -1)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def reference_tokens(model: Any, patches: torch.Tensor, mode: str, antialias: bool) -> torch.Tensor:
    """Tokens after position embedding, as perception_models pe.py `_sample_abs_posemb` (bilinear,
    align_corners=False, exact grid, cls entry kept) or google-deepmind/tips image_encoder.py
    `interpolate_pos_encoding` as run_image_encoder_inference.py builds it (bilinear, antialias, exact
    grid) do it; timm's layout: with no_embed_class the cls position is folded into cls_token."""
    batch, height, width, channels = patches.shape
    pos = model.pos_embed
    lead = 0 if model.no_embed_class else 1
    gh, gw = model.patch_embed.grid_size
    grid = F.interpolate(
        pos[:, lead:].reshape(1, gh, gw, channels).permute(0, 3, 1, 2),
        size=(height, width),
        mode=mode,
        align_corners=False,
        antialias=antialias,
    )
    grid = grid.flatten(2).transpose(1, 2)
    prefix = [t.expand(batch, -1, -1) for t in (model.cls_token, model.reg_token) if t is not None]
    flat = patches.reshape(batch, -1, channels)
    if model.no_embed_class:
        return torch.cat([*prefix, flat + grid], dim=1)
    return torch.cat([*prefix, flat], dim=1) + torch.cat([pos[:, :1], grid], dim=1)


@pytest.mark.parametrize(
    ("arch", "native", "antialias"),
    [("vit_pe_core_tiny_patch16_384", 384, False), ("vit_base_patch14_reg1_tipsv2", 448, True)],
    ids=["PE", "TIPS"],
)
@pytest.mark.parametrize("size", ["native", (112, 224)])
def test_bilinear_families_resample_as_their_originals(
    arch: str, native: int, antialias: bool, size: str | tuple[int, int]
) -> None:
    hw = (native, native) if size == "native" else size
    backbone = load_backbone(BackboneSpec(arch, input_size=native))
    model: Any = backbone.model
    with torch.no_grad():
        model.pos_embed.add_(torch.randn_like(model.pos_embed))  # a rough grid makes resampling rules differ
        patches = model.patch_embed(torch.randn(1, 3, *hw))
        out = model._pos_embed(patches)
        tokens = out[0] if isinstance(out, tuple) else out
        expected = reference_tokens(model, patches, "bilinear", antialias)
        torch.testing.assert_close(tokens, expected, atol=1e-6, rtol=1e-6)
        if size == "native":  # at the native grid the replacement is timm's own method exactly
            assert torch.equal(
                tokens,
                (lambda o: o[0] if isinstance(o, tuple) else o)(type(model)._pos_embed(model, patches)),
            )
    record = backbone.provenance()["pos_embed_resample"]
    assert (record["mode"], record["antialias"]) == ("bilinear", antialias)


def radio_positions(grid: torch.Tensor, height: int, width: int, align_corners: bool) -> torch.Tensor:
    """NVlabs/RADIO radio/vit_patch_generator.py `_get_pos_embeddings`, eval with CPE: the whole grid
    resized bilinear to a square of the longer side, then the top-left (height, width) window."""
    side = max(height, width)
    square = F.interpolate(
        grid.permute(0, 3, 1, 2), size=(side, side), mode="bilinear", align_corners=align_corners
    )
    return square[..., :height, :width].flatten(2).transpose(1, 2)


@pytest.mark.heavy
@pytest.mark.parametrize("size", [(64, 160), (224, 224)])
def test_radio_positions_are_radios_cpe(size: tuple[int, int]) -> None:
    """C-RADIOv3-B's released code resizes with align_corners=True (timm notes the per-release flag)."""
    backbone = load_backbone(BackboneSpec("radio_v3_b", weights="random-init", input_size=224))
    model: Any = backbone.model
    embeds = model.embeds
    with torch.no_grad():
        embeds.pos_embed.add_(torch.randn_like(embeds.pos_embed))
        image = torch.randn(1, 3, *size)
        tokens, _ = embeds(image)
        width = embeds.proj.weight.shape[0]
        kernel = embeds.proj.weight.reshape(width, 16, 16, 3).permute(0, 3, 1, 2)  # P-P-C rows
        patches = F.conv2d(image, kernel, embeds.proj.bias, stride=16).flatten(2).transpose(1, 2)
        patches = patches + radio_positions(
            embeds.pos_embed, size[0] // 16, size[1] // 16, align_corners=True
        )
        prefix = torch.cat([embeds.cls_token, embeds.reg_token], dim=1)
        torch.testing.assert_close(tokens, torch.cat([prefix, patches], dim=1), atol=1e-5, rtol=1e-5)
    record = backbone.provenance()["pos_embed_resample"]
    assert record["square_then_crop"] and record["align_corners"] and record["grid"] == [128, 128]
