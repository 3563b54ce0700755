"""Backbones: preset/name resolution, seeded random init, local weights files, dense features, bad input."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
from torch import nn

from maxa.core.errors import MaxaError
from maxa.extract import presets as presets_module
from maxa.extract.backbones import (
    RANDOM_INIT_SEED,
    describe,
    load_backbone,
    resolve,
    timm,
)
from maxa.extract.config import PRETRAINED, RANDOM_INIT, BackboneSpec
from maxa.extract.presets import Preset
from maxa.extract.transforms import normalize


def random_model(name: str, seed: int, **kwargs: object) -> Any:
    """A timm model with its own random weights (not maxa's seed), as a stand-in for trained weights."""
    torch.manual_seed(seed)
    return timm.create_model(name, num_classes=0, **kwargs).eval()


def same_parameters(a: nn.Module, b: nn.Module, atol: float = 0.0) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], atol=atol, rtol=0, msg=key)


def save_safetensors(state: dict[str, torch.Tensor], path: Path) -> Path:
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


# ------------------------------------------------------------------ names and presets


def test_preset_resolves_to_timm_name_with_tag() -> None:
    resolved = resolve(BackboneSpec("dinov2_b"))
    assert resolved.model == "vit_base_patch14_dinov2.lvd142m"
    assert resolved.weights == PRETRAINED
    assert resolved.preset is not None and resolved.preset.name == "dinov2_b"
    control = resolve(BackboneSpec("dinov2_b", weights=RANDOM_INIT))
    assert (control.model, control.weights) == ("vit_base_patch14_dinov2.lvd142m", RANDOM_INIT)


def test_auto_weights_for_plain_timm_names() -> None:
    assert resolve(BackboneSpec("vit_tiny_patch16_224")).weights == RANDOM_INIT
    assert resolve(BackboneSpec("vit_tiny_patch16_224.augreg_in21k")).weights == PRETRAINED


def test_local_only_preset_asks_for_a_file() -> None:
    with pytest.raises(MaxaError, match=r"--weights FILE.*moco-v3"):
        resolve(BackboneSpec("mocov3_b"))
    assert resolve(BackboneSpec("mocov3_b", weights=RANDOM_INIT)).model == "vit_base_patch16_224"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("dinov2_bb", "dinov2_b"),
        ("vit_tiny_patch16", "vit_tiny_patch16_224"),
        ("convnext_attto", "convnext_atto"),
    ],
)
def test_unknown_name_suggests_close_names(name: str, expected: str) -> None:
    with pytest.raises(MaxaError, match=f"unknown backbone '{name}'") as info:
        resolve(BackboneSpec(name))
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_pretrained_tag_lists_the_tags() -> None:
    with pytest.raises(MaxaError, match=r"unknown pretrained tag 'foo'.*lvd142m"):
        resolve(BackboneSpec("vit_small_patch14_dinov2.foo"))


def test_missing_weights_file(tmp_path: Path) -> None:
    with pytest.raises(MaxaError, match="no such file"):
        resolve(BackboneSpec("vit_tiny_patch16_224", weights=str(tmp_path / "nope.safetensors")))


def test_pretrained_without_network_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("offline: no route to the hub")

    # Whatever timm's download path, it ends in a network error here.
    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_hf", offline)
    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_url", offline)
    with pytest.raises(MaxaError, match=r"could not load pretrained weights.*--weights FILE"):
        load_backbone(BackboneSpec("dino_s"))


# ------------------------------------------------------------------ random init


def test_random_init_is_seeded_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(5)
    expected_draw = torch.rand(3)
    torch.manual_seed(5)
    a = load_backbone(BackboneSpec("vit_tiny_patch16_224", input_size=64))
    assert torch.equal(torch.rand(3), expected_draw)  # the caller's random stream is untouched
    b = load_backbone(BackboneSpec("vit_tiny_patch16_224", input_size=96))
    same_parameters(a.model, b.model)
    # ... and it is timm's init under RANDOM_INIT_SEED, which other tools can rebuild.
    same_parameters(a.model, random_model("vit_tiny_patch16_224", RANDOM_INIT_SEED))
    assert a.provenance()["init_seed"] == RANDOM_INIT_SEED


def test_preset_random_init_is_the_architecture_control() -> None:
    control = load_backbone(BackboneSpec("resnet50_in1k", weights=RANDOM_INIT, input_size=64))
    bare = load_backbone(BackboneSpec("resnet50", input_size=64))
    same_parameters(control.model, bare.model)
    prov = control.provenance()
    assert prov["preset"] == "resnet50_in1k"
    assert prov["model"] == "resnet50.tv_in1k"
    assert prov["weights"] == RANDOM_INIT
    assert "preset" not in bare.provenance()


# ------------------------------------------------------------------ weights files


@pytest.mark.parametrize("fmt", ["safetensors", "pth", "pth-nested-ddp"])
def test_weights_file_loads_exactly(tmp_path: Path, fmt: str) -> None:
    source = random_model("vit_tiny_patch16_224", seed=123)
    state = source.state_dict()
    if fmt == "safetensors":
        path = save_safetensors(state, tmp_path / "w.safetensors")
    elif fmt == "pth":
        path = tmp_path / "w.pth"
        torch.save(state, path)
    else:  # a training checkpoint: nested under "model", DDP's "module." prefix, extra entries
        path = tmp_path / "ckpt.pth"
        torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    backbone = load_backbone(BackboneSpec("vit_tiny_patch16_224", weights=str(path), input_size=64))
    same_parameters(backbone.model, source)
    prov = backbone.provenance()
    assert prov["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert prov["weights"] == f"file:{path.name}"
    assert prov["init_seed"] is None


def test_weights_file_with_classifier_head_loads(tmp_path: Path) -> None:
    """An ImageNet checkpoint carries a head; maxa reads features, so the head is dropped."""
    torch.manual_seed(1)
    source = timm.create_model("resnet18", num_classes=10).eval()
    path = save_safetensors(source.state_dict(), tmp_path / "r18.safetensors")
    backbone = load_backbone(BackboneSpec("resnet18", weights=str(path), input_size=64))
    own = backbone.model.state_dict()
    assert "fc.weight" not in own
    for key, value in source.state_dict().items():
        if not key.startswith("fc."):
            assert torch.equal(own[key], value), key


def dinov2_original_keys(model: nn.Module) -> dict[str, torch.Tensor]:
    """Invert timm's DINOv2 conversion: facebookresearch/dinov2 key names and token layout.

    The original keeps the class token's position embedding inside pos_embed (1 + N tokens),
    calls the registers `register_tokens` and has a `mask_token`; timm folds the class token's
    position into cls_token and stores pos_embed for the patches only (no_embed_class).
    """
    state = {k: v.clone() for k, v in model.state_dict().items()}
    width = state["cls_token"].shape[-1]
    torch.manual_seed(99)
    cls_pos = 0.02 * torch.randn(1, 1, width)
    return {
        **{k: v for k, v in state.items() if k not in ("cls_token", "reg_token", "pos_embed")},
        "cls_token": state["cls_token"] - cls_pos,
        "pos_embed": torch.cat([cls_pos, state["pos_embed"]], dim=1),
        "register_tokens": state["reg_token"],
        "mask_token": torch.zeros(1, width),
    }


@pytest.mark.heavy
def test_dinov2_original_checkpoint_converts(tmp_path: Path) -> None:
    source = random_model("vit_small_patch14_reg4_dinov2", seed=7, dynamic_img_size=True)
    original = dinov2_original_keys(source)
    assert {"blocks.0.attn.qkv.weight", "blocks.0.ls1.gamma", "mask_token", "register_tokens"} <= set(
        original
    )
    assert original["pos_embed"].shape[1] == 1 + 37 * 37
    path = tmp_path / "dinov2_vits14_reg4_pretrain.pth"
    torch.save(original, path)
    backbone = load_backbone(BackboneSpec("dinov2_s_reg", weights=str(path), input_size=56, norm=True))
    same_parameters(backbone.model, source, atol=1e-6)  # cls_token went through a subtraction
    x = torch.randn(2, 3, 56, 56)
    with torch.inference_mode():
        expected = source.forward_features(x)[:, 5:].reshape(2, 4, 4, 384)
    torch.testing.assert_close(backbone.features(x)["layer_11"], expected, atol=1e-5, rtol=1e-5)
    assert backbone.provenance()["preset"] == "dinov2_s_reg"


def test_local_preset_key_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MoCo v3-style checkpoint: the encoder under base_encoder., beside a momentum encoder and heads."""
    monkeypatch.setattr(presets_module.PRESETS, "_specs", dict(presets_module.PRESETS._specs))
    monkeypatch.setattr(presets_module.PRESETS, "_sources", dict(presets_module.PRESETS._sources))
    presets_module.register_preset(
        Preset(
            "moco_tiny",
            "vit_tiny_patch16_224",
            "MoCo v3",
            "test",
            hub=False,
            key_prefix="base_encoder.",
            mean=(0.1, 0.2, 0.3),
            std=(0.4, 0.5, 0.6),
            weights_hint="a MoCo checkpoint",
        )
    )
    base = random_model("vit_tiny_patch16_224", seed=11)
    momentum = random_model("vit_tiny_patch16_224", seed=12)
    state = {f"module.base_encoder.{k}": v for k, v in base.state_dict().items()}
    state |= {f"module.momentum_encoder.{k}": v for k, v in momentum.state_dict().items()}
    state |= {
        "module.base_encoder.head.0.weight": torch.randn(16, 192),
        "module.predictor.0.weight": torch.randn(8, 16),
    }
    path = tmp_path / "vit-t-300ep.pth.tar"
    torch.save({"epoch": 300, "arch": "vit_tiny", "state_dict": state}, path)
    backbone = load_backbone(BackboneSpec("moco_tiny", weights=str(path), input_size=64))
    same_parameters(backbone.model, base)
    assert backbone.mean == (0.1, 0.2, 0.3) and backbone.std == (0.4, 0.5, 0.6)
    plain = tmp_path / "plain.pth"
    torch.save(base.state_dict(), plain)
    with pytest.raises(MaxaError, match=r"no base_encoder\.\* keys.*a MoCo checkpoint"):
        load_backbone(BackboneSpec("moco_tiny", weights=str(plain)))


def test_weights_of_another_architecture_name_the_keys(tmp_path: Path) -> None:
    path = save_safetensors(
        random_model("convnext_atto", seed=1).state_dict(), tmp_path / "convnext.safetensors"
    )
    with pytest.raises(MaxaError) as info:
        load_backbone(BackboneSpec("vit_tiny_patch16_224", weights=str(path)))
    message = str(info.value)
    assert "does not fit 'vit_tiny_patch16_224'" in message
    assert "missing keys cls_token, pos_embed, patch_embed.proj.weight (+" in message
    assert "unexpected keys stages.0.blocks.0." in message
    assert "\n" not in message


def test_weights_of_another_width_name_the_shapes(tmp_path: Path) -> None:
    path = save_safetensors(random_model("convnext_atto", seed=1).state_dict(), tmp_path / "a.safetensors")
    with pytest.raises(MaxaError, match=r"shape mismatches stem.0.weight \(40, 3, 4, 4\) vs \(48, 3, 4, 4\)"):
        load_backbone(BackboneSpec("convnext_femto", weights=str(path)))


def test_weights_of_another_patch_size_are_refused(tmp_path: Path) -> None:
    """timm's ViT filter would silently resample an 8 px patch kernel to the model's 16 px."""
    state = random_model("vit_tiny_patch16_224", seed=1).state_dict()
    state["patch_embed.proj.weight"] = torch.randn(192, 3, 8, 8)
    path = save_safetensors(state, tmp_path / "t8.safetensors")
    with pytest.raises(MaxaError, match=r"patch size is \(8, 8\), the model's \(16, 16\)"):
        load_backbone(BackboneSpec("vit_tiny_patch16_224", weights=str(path)))


def test_unreadable_weights_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.pth"
    path.write_bytes(b"this is no checkpoint")
    with pytest.raises(MaxaError, match=r"cannot read weights file .*broken\.pth"):
        load_backbone(BackboneSpec("vit_tiny_patch16_224", weights=str(path)))


# ------------------------------------------------------------------ input sizes, layers, features


def test_input_size_not_multiple_of_patch() -> None:
    with pytest.raises(
        MaxaError, match=r"--input-size 100 is not a multiple of .*patch size 14; use e.g. 98 or 112"
    ):
        load_backbone(BackboneSpec("vit_small_patch14_dinov2", input_size=100))


def test_layer_out_of_range() -> None:
    with pytest.raises(MaxaError, match=r"layer 12 is out of range .* 12 feature levels"):
        load_backbone(BackboneSpec("vit_tiny_patch16_224", layers=(12,)))


def test_store_prefix_needs_prefix_tokens() -> None:
    with pytest.raises(MaxaError, match="no prefix"):
        load_backbone(BackboneSpec("resnet18", store_prefix=True))


@pytest.mark.parametrize("side", [64, 112])
def test_vit_runs_at_any_multiple_of_its_patch(side: int) -> None:
    backbone = load_backbone(BackboneSpec("vit_tiny_patch16_224", input_size=side, layers=(3, -1)))
    grids = backbone.features(torch.randn(2, 3, side, side))
    assert set(grids) == {"layer_3", "layer_11"}
    assert all(g.shape == (2, side // 16, side // 16, 192) for g in grids.values())


def count_calls(module: nn.Module) -> Callable[[], int]:
    calls = []
    module.register_forward_hook(lambda *args: calls.append(1))
    return lambda: len(calls)


def test_several_layers_from_one_forward_pass_stopping_early() -> None:
    backbone = load_backbone(BackboneSpec("vit_tiny_patch16_224", input_size=64, layers=(2, 5)))
    blocks: nn.Sequential = backbone.model.blocks
    first, seventh = count_calls(blocks[0]), count_calls(blocks[6])
    grids = backbone.features(torch.randn(1, 3, 64, 64))
    assert set(grids) == {"layer_2", "layer_5"}
    assert first() == 1  # one pass for both levels
    assert seventh() == 0  # nothing after the deepest level asked for runs


def test_prefix_tokens_use_the_models_own_count() -> None:
    backbone = load_backbone(
        BackboneSpec("vit_small_patch14_reg4_dinov2", input_size=42, layers=(-1,), store_prefix=True)
    )
    assert backbone.num_prefix_tokens == 5
    grids = backbone.features(torch.randn(2, 3, 42, 42))
    assert grids["layer_11"].shape == (2, 3, 3, 384)
    assert grids["prefix_layer_11"].shape == (2, 5, 384)


def test_channels_last_gives_the_same_features() -> None:
    backbone = load_backbone(BackboneSpec("resnet18", input_size=64, layers=(2, -1)))
    images = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    torch.testing.assert_close(backbone.prepare(images), normalize(images, backbone.mean, backbone.std))
    plain = backbone.features(backbone.prepare(images))
    backbone.use_channels_last()
    x = backbone.prepare(images)
    assert x.is_contiguous(memory_format=torch.channels_last)
    for name, grid in backbone.features(x).items():
        torch.testing.assert_close(grid, plain[name], atol=1e-4, rtol=1e-4)


def test_vits_keep_their_layout() -> None:
    backbone = load_backbone(BackboneSpec("vit_tiny_patch16_224", input_size=64))
    backbone.use_channels_last()
    assert not backbone.channels_last
    assert backbone.prepare(torch.zeros(1, 64, 64, 3, dtype=torch.uint8)).is_contiguous()


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224.augreg_in21k", "convnext_atto.d2_in1k"])
def test_describe_matches_the_real_model(name: str) -> None:
    info = describe(name)
    model = timm.create_model(name.partition(".")[0], num_classes=0)
    assert info.params == sum(p.numel() for p in model.parameters())
    assert info.width == model.feature_info[-1]["num_chs"]
    assert info.stride == model.feature_info[-1]["reduction"]
    assert info.levels == len(model.feature_info)
    assert info.num_prefix_tokens == getattr(model, "num_prefix_tokens", 0)
    assert info.input_size == timm.models.get_pretrained_cfg(name).input_size[-1]


@pytest.mark.parametrize(
    ("source", "target", "message"),
    [
        (
            "vit_small_patch14_reg4_dinov2",
            "vit_small_patch14_dinov2",
            r"the file has 4 register tokens, the model 0 .*first differing keys: register_tokens$",
        ),
        (
            "vit_small_patch14_dinov2",
            "vit_small_patch14_reg4_dinov2",
            r"the file has 0 register tokens, the model 4 .*first differing keys: reg_token$",
        ),
    ],
)
def test_dinov2_with_and_without_registers_are_told_apart(
    tmp_path: Path, source: str, target: str, message: str
) -> None:
    """Before the check, timm's converter failed on this with a reshape error."""
    model = random_model(source, seed=3)
    if "reg4" in source:
        state = dinov2_original_keys(model)
    else:
        state = {**model.state_dict(), "mask_token": torch.zeros(1, 384)}
    path = tmp_path / "meta.pth"
    torch.save(state, path)
    with pytest.raises(MaxaError, match=f"does not fit '{target}': {message}"):
        load_backbone(BackboneSpec(target, weights=str(path), input_size=56))


def test_weights_with_fewer_blocks_name_the_first_missing_block(tmp_path: Path) -> None:
    state = random_model("vit_tiny_patch16_224", seed=1).state_dict()
    path = save_safetensors(
        {k: v for k, v in state.items() if not k.startswith("blocks.11.")}, tmp_path / "t.safetensors"
    )
    with pytest.raises(
        MaxaError, match=r"the file has 11 blocks, the model 12; first differing keys: blocks\.11\.norm1"
    ):
        load_backbone(BackboneSpec("vit_tiny_patch16_224", weights=str(path)))
