"""`--weights FILE` in each family's original released key format loads exactly through timm's converters.

Each test writes a tiny checkpoint in the original repository's layout (a random timm model with
its keys renamed back the way the family's timm converter expects them; the original names are
those of the original repositories' modules), loads it with maxa and compares every parameter and
the features with the source model's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from maxa.core.errors import MaxaError
from maxa.extract.backbones import load_backbone, timm
from maxa.extract.config import BackboneSpec

State = dict[str, torch.Tensor]
SMALL: dict[str, dict[str, Any]] = {
    "vit_small_patch16_dinov3": {"depth": 2},
    "vit_small_patch16_dinov3_qkvb": {"depth": 2},
    "convnext_tiny": {"depths": (1, 1, 1, 1), "dims": (16, 32, 64, 128)},
    "vit_pe_core_tiny_patch16_384": {"depth": 2},
    "aimv2_large_patch14_224": {"depth": 2, "embed_dim": 64, "num_heads": 2},
    "sam2_hiera_tiny": {},
    "naflexvit_base_patch16_radio_v3": {"depth": 2, "embed_dim": 64, "num_heads": 2},
    "vit_base_patch14_reg1_tipsv2": {"depth": 2, "embed_dim": 64, "num_heads": 2},
}


@pytest.fixture(autouse=True)
def small_models(small_timm: Callable[[dict[str, dict[str, Any]]], None]) -> None:
    small_timm(SMALL)


def source_model(arch: str, seed: int = 4) -> Any:
    """A random model with randomised norms, biases and scales too (zeros/ones would hide swaps)."""
    torch.manual_seed(seed)
    model = timm.create_model(arch, num_classes=0, **SMALL[arch]).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model


def rename(state: State, swaps: list[tuple[str, str]]) -> State:
    out = {}
    for key, value in state.items():
        for pattern, repl in swaps:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def dinov3_original(model: Any) -> State:
    """facebookresearch/dinov3 layout: storage_tokens, ls1/ls2.gamma, one qkv bias (k masked by bias_mask)."""
    state = rename(
        model.state_dict(),
        [(r"^reg_token$", "storage_tokens"), (r"gamma_1$", "ls1.gamma"), (r"gamma_2$", "ls2.gamma")],
    )
    for key in [k for k in state if k.endswith("attn.qkv.weight")]:
        width = state[key].shape[1]
        q = state.pop(key.replace("qkv.weight", "q_bias"), torch.zeros(width))
        v = state.pop(key.replace("qkv.weight", "v_bias"), torch.zeros(width))
        state[key.replace("weight", "bias")] = torch.cat([q, torch.randn(width), v])  # k: masked out
        state[key.replace("weight", "bias_mask")] = torch.cat(
            [torch.ones(width), torch.zeros(width), torch.ones(width)]
        )
    state["mask_token"] = torch.zeros(1, state["cls_token"].shape[-1])
    state["rope_embed.periods"] = meta_periods(model)
    return state


def meta_periods(model: Any) -> torch.Tensor:
    """The periods Meta's checkpoints carry: the schedule as trained, stored in bfloat16."""
    return model.rope.periods.to(torch.bfloat16)


def convnext_original(model: Any) -> State:
    """facebookresearch/ConvNeXt (and DINOv3's) layout: downsample_layers, stages.i.j, dwconv, pwconv."""
    return rename(
        model.state_dict(),
        [
            (r"^stem\.", "downsample_layers.0."),
            (r"^stages\.(\d+)\.downsample\.(\d+)", r"downsample_layers.\1.\2"),
            (r"^stages\.(\d+)\.blocks\.(\d+)", r"stages.\1.\2"),
            (r"conv_dw", "dwconv"),
            (r"mlp\.fc(\d)", r"pwconv\1"),
            (r"^head\.norm\.", "norm."),
        ],
    )


def pe_original(model: Any) -> State:
    """facebookresearch/perception_models layout (visual.conv1, transformer.resblocks, ln_*, in_proj)."""
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("attn_pool.")}
    state = rename(
        state,
        [
            (r"^patch_embed\.proj", "conv1"),
            (r"^blocks\.", "transformer.resblocks."),
            (r"^norm_pre\.", "ln_pre."),
            (r"^norm\.", "ln_post."),
            (r"\.norm(\d)\.", r".ln_\1."),
            (r"gamma_(\d)$", r"ls_\1.gamma"),
            (r"attn\.qkv\.(weight|bias)", r"attn.in_proj_\1"),
            (r"attn\.proj\.", "attn.out_proj."),
            (r"mlp\.fc1", "mlp.c_fc"),
            (r"mlp\.fc2", "mlp.c_proj"),
        ],
    )
    state["class_embedding"] = state.pop("cls_token").reshape(-1)
    state["positional_embedding"] = state.pop("pos_embed")[0]
    return {f"visual.{k}": v for k, v in state.items()}


def aimv2_original(model: Any) -> State:
    """apple/ml-aim layout: preprocessor.patchifier, trunk.blocks with norm_1/norm_2 and fc1/fc3 (SwiGLU)."""
    return rename(
        model.state_dict(),
        [
            (r"^patch_embed\.", "preprocessor.patchifier."),
            (r"^pos_embed$", "preprocessor.pos_embed"),
            (r"^norm\.", "trunk.post_trunk_norm."),
            (r"^blocks\.", "trunk.blocks."),
            (r"\.norm(\d)\.", r".norm_\1."),
            (r"mlp\.fc1_g", "mlp.fc1"),
            (r"mlp\.fc1_x", "mlp.fc3"),
        ],
    )


def sam2_original(model: Any) -> State:
    """facebookresearch/sam2 checkpoint: {'model': ...}, trunk under image_encoder.trunk. (mlp.layers.N)."""
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    state = rename(state, [(r"mlp\.fc1", "mlp.layers.0"), (r"mlp\.fc2", "mlp.layers.1")])
    whole = {f"image_encoder.trunk.{k}": v for k, v in state.items()}
    whole["image_encoder.neck.convs.0.conv.weight"] = torch.randn(4, 4, 1, 1)
    whole["sam_mask_decoder.iou_token.weight"] = torch.randn(1, 4)
    return {"model": whole}  # type: ignore[dict-item]


def radio_original(model: Any) -> State:
    """NVlabs/RADIO layout: radio_model.model.patch_generator (a bias-free linear embedder over C-P-P
    flattened patches, the 128x128 CPE grid, cls + registers in one token table), blocks, norm."""
    state = model.state_dict()
    weight = state["embeds.proj.weight"]  # NaFlexVit: P-P-C flattened rows
    width, patch = weight.shape[0], int((weight.shape[1] // 3) ** 0.5)
    tokens = torch.cat([state["embeds.cls_token"], state["embeds.reg_token"]], dim=1)[0]
    out = {
        "radio_model.model.patch_generator.embedder.weight": weight.reshape(width, patch, patch, 3)
        .permute(0, 3, 1, 2)
        .reshape(width, -1),
        "radio_model.model.patch_generator.pos_embed": state["embeds.pos_embed"].reshape(1, -1, width),
        "radio_model.model.patch_generator.cls_token.token": tokens,
        "radio_model.input_conditioner.norm_mean": torch.zeros(3, 1, 1),
    }
    out |= {f"radio_model.model.{k}": v for k, v in state.items() if k.startswith(("blocks.", "norm."))}
    return out


def tips_original(model: Any) -> State:
    """google-deepmind/tips: a DINOv2-layout vision encoder under vision_encoder. (cls entry in pos_embed)."""
    state = dict(model.state_dict())
    width = state["cls_token"].shape[-1]
    cls_pos = 0.02 * torch.randn(1, 1, width)
    state["cls_token"] = state["cls_token"] - cls_pos
    state["pos_embed"] = torch.cat([cls_pos, state["pos_embed"]], dim=1)
    state["register_tokens"] = state.pop("reg_token")
    state["mask_token"] = torch.zeros(1, width)
    return {f"vision_encoder.{k}": v for k, v in state.items()} | {
        "text_encoder.embedding": torch.randn(3, 4)
    }


CASES: dict[str, tuple[str, Callable[[nn.Module], State], int, tuple[int, ...]]] = {
    "DINOv3 ViT": ("vit_small_patch16_dinov3_qkvb", dinov3_original, 64, (-1,)),
    "DINOv3 ConvNeXt": ("convnext_tiny", convnext_original, 64, (2,)),
    "Perception Encoder": ("vit_pe_core_tiny_patch16_384", pe_original, 64, (-1,)),
    "AIMv2": ("aimv2_large_patch14_224", aimv2_original, 56, (-1,)),
    "SAM 2": ("sam2_hiera_tiny", sam2_original, 64, (2,)),
    "RADIO": ("naflexvit_base_patch16_radio_v3", radio_original, 64, (-1,)),
    "TIPS": ("vit_base_patch14_reg1_tipsv2", tips_original, 56, (-1,)),
}


@pytest.mark.parametrize("family", list(CASES))
def test_original_checkpoint_loads_exactly(tmp_path: Path, family: str) -> None:
    arch, to_original, side, layers = CASES[family]
    source = source_model(arch)
    if family == "RADIO":  # RADIO's embedder is a bias-free linear layer
        with torch.no_grad():
            source.embeds.proj.bias.zero_()
    path = tmp_path / "original.pth"
    torch.save(to_original(source), path)
    backbone = load_backbone(BackboneSpec(arch, weights=str(path), input_size=side, layers=layers))
    own, expected = backbone.model.state_dict(), source.state_dict()
    heads = [k for k in expected if k.startswith(("head.", "attn_pool."))]
    for key in expected:
        if key not in heads:
            torch.testing.assert_close(own[key], expected[key], atol=1e-6, rtol=0, msg=key)
    x = torch.randn(1, 3, side, side)
    reference = load_backbone(BackboneSpec(arch, input_size=side, layers=layers))
    reference.model.load_state_dict(source.state_dict())
    if family == "DINOv3 ViT":  # Meta's model computes RoPE from the checkpoint's periods (next test)
        reference.model.rope.periods.copy_(meta_periods(source))
    for name, grid in backbone.features(x).items():
        torch.testing.assert_close(grid, reference.features(x)[name], atol=1e-5, rtol=1e-5, msg=name)


def meta_rope(periods: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """dinov3 layers/rope_position_encoding.py `RopePositionEmbedding.forward` (normalize_coords
    "separate", eval, float32 as the hub models build it): coordinates (arange(0.5, n) / n) * 2 - 1,
    angles 2 pi coords / periods flattened over (axis, period) and tiled twice; (sin, cos)."""
    coords_h = torch.arange(0.5, height) / height
    coords_w = torch.arange(0.5, width) / width
    coords = torch.stack(torch.meshgrid(coords_h, coords_w, indexing="ij"), dim=-1).flatten(0, 1) * 2.0 - 1.0
    angles = (2 * np.pi * coords[:, :, None] / periods.float()[None, None, :]).flatten(1, 2).tile(2)
    return angles.sin(), angles.cos()


def test_dinov3_rope_periods_are_the_checkpoints(tmp_path: Path) -> None:
    """Meta's checkpoints carry bf16 periods; timm's converter drops them and recomputes float32 ones."""
    source = source_model("vit_small_patch16_dinov3_qkvb")
    stored = meta_periods(source)
    assert not torch.equal(stored.float(), source.rope.periods)  # bf16 rounding moves the schedule
    path = tmp_path / "dinov3.pth"
    torch.save(dinov3_original(source), path)
    backbone = load_backbone(BackboneSpec("vit_small_patch16_dinov3_qkvb", weights=str(path), input_size=64))
    assert torch.equal(backbone.model.rope.periods, stored.float())
    assert backbone.provenance()["rope_periods"] == "checkpoint (bfloat16)"
    for height, width in ((4, 4), (3, 5)):
        sin, cos = backbone.model.rope.get_embed(shape=[height, width]).chunk(2, dim=-1)
        want_sin, want_cos = meta_rope(stored, height, width)
        torch.testing.assert_close(sin, want_sin, atol=1e-6, rtol=0)
        torch.testing.assert_close(cos, want_cos, atol=1e-6, rtol=0)
    computed = load_backbone(
        BackboneSpec("vit_small_patch16_dinov3_qkvb", weights="random-init", input_size=64)
    )
    assert computed.provenance()["rope_periods"] == "timm (float32, computed)"
    assert "rope_periods" not in load_backbone(BackboneSpec("convnext_tiny", input_size=64)).provenance()


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda s: s.update({"rope_embed.extra": torch.zeros(3)}), r"conversion drops rope_embed\.extra"),
        (lambda s: s["blocks.0.attn.qkv.bias_mask"].fill_(1), r"blocks\.0\.attn\.qkv\.bias_mask does not"),
        (lambda s: s.update({"rope_embed.periods": torch.ones(3)}), r"rope_embed\.periods \(3,\) vs"),
    ],
)
def test_dinov3_keys_the_converter_drops_are_checked(tmp_path: Path, edit: Any, named: str) -> None:
    state = dinov3_original(source_model("vit_small_patch16_dinov3_qkvb"))
    edit(state)
    path = tmp_path / "dinov3.pth"
    torch.save(state, path)
    with pytest.raises(MaxaError, match=named):
        load_backbone(BackboneSpec("vit_small_patch16_dinov3_qkvb", weights=str(path), input_size=64))


def test_norm_on_a_dinov3_convnext_last_stage_is_the_originals_final_norm(tmp_path: Path) -> None:
    """dinov3 models/convnext.py `get_intermediate_layers(norm=True)`: the last stage's tokens through
    `self.norm` (nn.LayerNorm(dims[-1], eps=1e-6), l. 182), earlier stages unnormalized (Identity).
    timm keeps that norm in its head (`head.norm`), where forward_intermediates never applies it."""
    state = convnext_original(source_model("convnext_tiny"))
    path = tmp_path / "convnext.pth"
    torch.save(state, path)
    x = torch.randn(2, 3, 64, 64)

    def grids(norm: bool, file: Path = path) -> dict[str, torch.Tensor]:
        spec = BackboneSpec("convnext_tiny", weights=str(file), input_size=64, layers=(2, 3), norm=norm)
        return load_backbone(spec).features(x)

    plain, normed = grids(False), grids(True)
    expected = F.layer_norm(plain["layer_3"], (128,), state["norm.weight"], state["norm.bias"], eps=1e-6)
    torch.testing.assert_close(normed["layer_3"], expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(normed["layer_3"], plain["layer_3"], atol=1e-2)
    torch.testing.assert_close(normed["layer_2"], plain["layer_2"])  # Identity before the last stage
    spec = BackboneSpec("convnext_tiny", weights=str(path), input_size=64, layers=(3,), norm=True)
    assert "head.norm" in load_backbone(spec).provenance()["final_norm"]
    headless = tmp_path / "headless.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("norm.")}, headless)
    with pytest.raises(MaxaError, match=r"--norm on the last stage of 'convnext_tiny' needs the final norm"):
        grids(True, headless)
    assert set(grids(False, headless)) == {"layer_2", "layer_3"}  # without --norm the head is not needed


def test_dinov3_biases_are_not_dropped_silently(tmp_path: Path) -> None:
    """timm's converter drops qkv biases for the bias-free variant: right for zero biases only."""
    source = source_model("vit_small_patch16_dinov3_qkvb")
    path = tmp_path / "dinov3.pth"
    torch.save(dinov3_original(source), path)
    with pytest.raises(
        MaxaError, match=r"attention biases \(blocks\.0\.attn\.qkv\.bias\) are not zero.*_qkvb"
    ):
        load_backbone(BackboneSpec("vit_small_patch16_dinov3", weights=str(path), input_size=64))
    with torch.no_grad():
        for block in source.blocks:
            block.attn.q_bias.zero_()
            block.attn.v_bias.zero_()
    torch.save(dinov3_original(source), path)
    backbone = load_backbone(BackboneSpec("vit_small_patch16_dinov3", weights=str(path), input_size=64))
    torch.testing.assert_close(backbone.model.blocks[1].attn.qkv.weight, source.blocks[1].attn.qkv.weight)


SIGLIP = "vit_base_patch16_siglip_224"
SMALL[SIGLIP] = {"depth": 2, "embed_dim": 64, "num_heads": 2}
SMALL["vit_so400m_patch14_siglip_224"] = SMALL[SIGLIP]


def big_vision_npz(model: Any, path: Path, drop: str = "") -> Path:
    """A SigLIP 2 image tower as google-research/big_vision saves it (params/img/..., Flax kernels:
    Dense (in, out), attention (in, heads, head_dim) / out (heads, head_dim, out), conv HWIO)."""
    heads = model.blocks[0].attn.num_heads
    width = model.embed_dim

    def dense(w: torch.Tensor) -> np.ndarray:
        return w.T.numpy()

    def qkv_in(w: torch.Tensor) -> np.ndarray:  # (heads * hd, in) -> (in, heads, hd)
        return w.T.reshape(width, heads, -1).numpy()

    def attention(prefix: str, q: tuple, k: tuple, v: tuple, proj: Any) -> dict[str, np.ndarray]:
        out = {}
        for part, (w, b) in zip(("query", "key", "value"), (q, k, v), strict=True):
            out[f"{prefix}{part}/kernel"] = qkv_in(w)
            out[f"{prefix}{part}/bias"] = b.reshape(heads, -1).numpy()
        out[f"{prefix}out/kernel"] = proj.weight.reshape(-1, heads, width // heads).permute(1, 2, 0).numpy()
        out[f"{prefix}out/bias"] = proj.bias.numpy()
        return out

    def norm(prefix: str, layer: Any) -> dict[str, np.ndarray]:
        return {f"{prefix}scale": layer.weight.numpy(), f"{prefix}bias": layer.bias.numpy()}

    def mlp(prefix: str, block: Any) -> dict[str, np.ndarray]:
        return {
            f"{prefix}Dense_{i}/{n}": (dense(fc.weight) if n == "kernel" else fc.bias.numpy())
            for i, fc in enumerate((block.fc1, block.fc2))
            for n in ("kernel", "bias")
        }

    p = "params/img/"
    with torch.no_grad():
        arrays = {
            f"{p}embedding/kernel": model.patch_embed.proj.weight.permute(2, 3, 1, 0).numpy(),
            f"{p}embedding/bias": model.patch_embed.proj.bias.numpy(),
            f"{p}pos_embedding": model.pos_embed.numpy(),
            **norm(f"{p}Transformer/encoder_norm/", model.norm),
        }
        for i, block in enumerate(model.blocks):
            b = f"{p}Transformer/encoderblock_{i}/"
            qw, kw, vw = block.attn.qkv.weight.chunk(3)
            qb, kb, vb = block.attn.qkv.bias.chunk(3)
            arrays |= norm(f"{b}LayerNorm_0/", block.norm1) | norm(f"{b}LayerNorm_1/", block.norm2)
            arrays |= attention(
                f"{b}MultiHeadDotProductAttention_0/", (qw, qb), (kw, kb), (vw, vb), block.attn.proj
            )
            arrays |= mlp(f"{b}MlpBlock_0/", block.mlp)
        pool = model.attn_pool
        m = f"{p}MAPHead_0/"
        kvw, kvb = pool.kv.weight.chunk(2), pool.kv.bias.chunk(2)
        arrays[f"{m}probe"] = pool.latent.numpy()
        arrays |= attention(
            f"{m}MultiHeadDotProductAttention_0/",
            (pool.q.weight, pool.q.bias),
            (kvw[0], kvb[0]),
            (kvw[1], kvb[1]),
            pool.proj,
        )
        arrays |= norm(f"{m}LayerNorm_0/", pool.norm) | mlp(f"{m}MlpBlock_0/", pool.mlp)
        arrays["params/txt/Encoder_0/encoder_norm/scale"] = np.ones(3, np.float32)
    kept: dict[str, Any] = {k: v for k, v in arrays.items() if not (drop and k.startswith(p + drop))}
    np.savez(path, **kept)
    return path


def test_siglip2_big_vision_npz_loads_exactly(tmp_path: Path) -> None:
    source = source_model(SIGLIP)
    path = big_vision_npz(source, tmp_path / "siglip2_b16_224.npz")
    backbone = load_backbone(BackboneSpec(SIGLIP, weights=str(path), input_size=64))
    own = backbone.model.state_dict()
    for key, value in source.state_dict().items():
        torch.testing.assert_close(own[key], value, atol=1e-6, rtol=0, msg=key)
    assert backbone.provenance()["weights"] == "file:siglip2_b16_224.npz"


def test_npz_that_does_not_fit_names_what(tmp_path: Path) -> None:
    source = source_model(SIGLIP)
    path = big_vision_npz(source, tmp_path / "bv.npz", drop="Transformer/encoderblock_1/")
    with pytest.raises(
        MaxaError, match=r"file has 1 blocks, the model 2; first differing keys: .*encoderblock_1/"
    ):
        load_backbone(BackboneSpec(SIGLIP, weights=str(path), input_size=64))
    path = big_vision_npz(source, tmp_path / "bv.npz", drop="Transformer/encoder_norm/")
    with pytest.raises(MaxaError, match=r"timm's \.npz loader failed \(KeyError: .*encoder_norm/scale"):
        load_backbone(BackboneSpec(SIGLIP, weights=str(path), input_size=64))
    with pytest.raises(MaxaError, match=r"patch size is \(16, 16\), the model's \(14, 14\)"):
        load_backbone(
            BackboneSpec(
                "vit_so400m_patch14_siglip_224", weights=str(big_vision_npz(source, tmp_path / "b.npz"))
            )
        )


def test_npz_needs_a_vit_and_an_npz(tmp_path: Path) -> None:
    path = big_vision_npz(source_model(SIGLIP), tmp_path / "bv.npz")
    with pytest.raises(
        MaxaError, match=r"\.npz \(JAX/big_vision\) checkpoints load into timm ViTs, not ConvNeXt"
    ):
        load_backbone(BackboneSpec("convnext_tiny", weights=str(path), input_size=64))
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"no zip archive")
    with pytest.raises(MaxaError, match=r"cannot read weights file .*broken\.npz as an \.npz archive"):
        load_backbone(BackboneSpec(SIGLIP, weights=str(broken), input_size=64))
