"""Dense features of every backbone family are the model's own: the outputs of the modules timm's
feature_info names, captured by hooks during the model's own forward_features, prefix tokens removed
(and stored apart when asked). Random init, the smallest variant of each family made smaller still
(fewer blocks / narrower), tiny inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from maxa.extract import backbones
from maxa.extract.backbones import load_backbone
from maxa.extract.config import BackboneSpec

NARROW = {"embed_dim": 64, "num_heads": 2}
FAMILIES: dict[str, tuple[str, dict[str, Any], int, tuple[int, ...]]] = {
    # family: (timm architecture of the preset family, size overrides, input side, stored levels)
    "DINOv2": ("vit_small_patch14_reg4_dinov2", {"depth": 2, **NARROW}, 56, (0, -1)),
    "DINOv3": ("vit_small_patch16_dinov3", {"depth": 2}, 64, (0, -1)),
    "DINOv3 ConvNeXt": ("convnext_tiny", {"depths": (1, 1, 1, 1), "dims": (16, 32, 64, 128)}, 64, (2,)),
    "SigLIP 2": ("vit_base_patch16_siglip_224", {"depth": 2, **NARROW}, 64, (0, -1)),
    "PE core": ("vit_pe_core_tiny_patch16_384", {"depth": 2}, 64, (0, -1)),
    "PE spatial": ("vit_pe_spatial_tiny_patch16_512", {"depth": 2}, 64, (0, -1)),
    "AIMv2": ("aimv2_large_patch14_224", {"depth": 2, **NARROW}, 56, (0, -1)),
    "SAM 2": ("sam2_hiera_tiny", {}, 64, (2,)),
    "RADIO": ("naflexvit_base_patch16_radio_v3", {"depth": 2, **NARROW}, 64, (0, -1)),
    "TIPS": ("vit_base_patch14_reg1_tipsv2", {"depth": 2, **NARROW}, 56, (0, -1)),
}


@pytest.fixture
def small_models(small_timm: Callable[[dict[str, dict[str, Any]]], None]) -> None:
    """Build each family's architecture with the overrides above (conftest.small_timm)."""
    small_timm({arch: kwargs for arch, kwargs, _, _ in FAMILIES.values()})


def own_outputs(
    model: Any, levels: list[int], x: torch.Tensor
) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """The feature_info modules' outputs during the model's own forward_features, and its result."""
    modules = dict(model.named_modules())
    captured: dict[int, torch.Tensor] = {}
    handles = []
    for level in levels:
        name = model.feature_info[level]["module"]

        def keep(_m: nn.Module, _i: Any, out: Any, level: int = level) -> None:
            captured[level] = out[0] if isinstance(out, tuple) else out

        handles.append(modules[name].register_forward_hook(keep))
    with torch.inference_mode():
        final = model.forward_features(x)
    for handle in handles:
        handle.remove()
    return captured, final


def as_grid(out: torch.Tensor, prefix: int, side: int, stride: int, channels: int) -> torch.Tensor:
    """A module output (tokens with prefix, NCHW or NHWC) as the (B, h, w, C) grid maxa stores."""
    h = w = side // stride
    if out.ndim == 3:
        return out[:, prefix:].reshape(out.shape[0], h, w, channels)
    return out if out.shape[-1] == channels and out.shape[1] != channels else out.permute(0, 2, 3, 1)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_features_are_the_models_own(family: str, small_models: None) -> None:
    arch, _, side, layers = FAMILIES[family]
    store_prefix = backbones.describe(arch).num_prefix_tokens > 0
    backbone = load_backbone(BackboneSpec(arch, input_size=side, layers=layers, store_prefix=store_prefix))
    torch.manual_seed(0)
    x = torch.randn(2, 3, side, side)
    ours = backbone.features(x)
    captured, _ = own_outputs(backbone.model, backbone.layers, x)
    prefix = backbone.num_prefix_tokens
    for level in backbone.layers:
        info = backbone.model.feature_info[level]
        expected = as_grid(captured[level], prefix, side, info["reduction"], info["num_chs"])
        torch.testing.assert_close(ours[f"layer_{level}"], expected, atol=1e-5, rtol=1e-5)
        if store_prefix:
            torch.testing.assert_close(
                ours[f"prefix_layer_{level}"], captured[level][:, :prefix], atol=1e-5, rtol=1e-5
            )
            assert ours[f"prefix_layer_{level}"].shape[1] == prefix > 0
    if backbone.is_convnet:  # hierarchical encoders: the stride-16 stage, a ViT-B/16's grid
        assert ours[f"layer_{backbone.layers[0]}"].shape[1:3] == (side // 16, side // 16)


@pytest.mark.parametrize("family", [f for f, (_, _, _, layers) in FAMILIES.items() if layers == (0, -1)])
def test_normed_last_layer_is_forward_features(family: str, small_models: None) -> None:
    arch, _, side, _ = FAMILIES[family]
    backbone = load_backbone(BackboneSpec(arch, input_size=side, norm=True))
    x = torch.randn(1, 3, side, side)
    (ours,) = backbone.features(x).values()
    _, final = own_outputs(backbone.model, [], x)
    expected = final[:, backbone.num_prefix_tokens :].reshape(ours.shape)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
