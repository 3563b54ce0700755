"""The preset registry: every preset names a real timm model and tag, and the paper's families are there."""

from __future__ import annotations

import pytest

from maxa.extract import presets as presets_module
from maxa.extract.backbones import timm
from maxa.extract.presets import Preset, get_preset, preset_names, presets, register_preset

PAPER_FAMILIES = {
    "DINOv2",
    "DINO",
    "MAE",
    "CLIP",
    "SigLIP",
    "MoCo v3",
    "supervised",
    "SAM",
    "EVA-02",
    "ConvNeXt",
    "ResNet",
    "Swin",
}


@pytest.mark.parametrize("preset", presets(), ids=lambda p: p.name)
def test_preset_is_a_timm_model_with_that_tag(preset: Preset) -> None:
    assert timm.is_model(preset.architecture), preset.model
    if preset.hub:
        assert preset.model in timm.list_pretrained(preset.model), f"{preset.model} has no pretrained tag"
    else:
        # Local-file presets say where the file comes from and carry no (nonexistent) timm tag.
        assert preset.weights_hint
        assert "." not in preset.model


def test_paper_families_are_covered() -> None:
    assert {p.family for p in presets()} >= PAPER_FAMILIES
    dinov2 = {p.name for p in presets() if p.family == "DINOv2"}
    assert {"dinov2_s", "dinov2_b", "dinov2_l", "dinov2_s_reg", "dinov2_b_reg", "dinov2_l_reg"} <= dinov2
    assert {"dino_s", "dino_b", "mae_b", "mae_l", "clip_b16", "clip_l14", "siglip_b"} <= set(preset_names())


def test_registers_are_the_reg4_variants() -> None:
    for size in "sbl":
        plain, reg = get_preset(f"dinov2_{size}"), get_preset(f"dinov2_{size}_reg")
        assert plain is not None and reg is not None
        assert "reg4" in reg.model and "reg" not in plain.model
        assert plain.model.endswith(".lvd142m") and reg.model.endswith(".lvd142m")


def test_openai_clip_uses_quickgelu() -> None:
    """OpenAI's CLIP was trained with QuickGELU; the plain timm variant would change its features."""
    for name in ("clip_b16", "clip_l14"):
        preset = get_preset(name)
        assert preset is not None and "quickgelu" in preset.model and preset.model.endswith(".openai")


def test_no_preset_shadows_a_timm_name() -> None:
    for name in preset_names():
        assert not timm.is_model(name), f"preset {name!r} would hide the timm model of the same name"


def test_unknown_name_is_not_a_preset() -> None:
    assert get_preset("dinov2_x") is None


def test_register_rejects_duplicates_and_tags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(presets_module.PRESETS, "_specs", dict(presets_module.PRESETS._specs))
    monkeypatch.setattr(presets_module.PRESETS, "_sources", dict(presets_module.PRESETS._sources))
    with pytest.raises(ValueError, match="twice"):
        register_preset(Preset("dinov2_b", "vit_base_patch14_dinov2.lvd142m", "DINOv2", "again"))
    with pytest.raises(ValueError, match=r"'\.'"):
        register_preset(Preset("my.model", "resnet18", "ResNet", "dotted"))
    added = register_preset(Preset("my_r18", "resnet18.a1_in1k", "ResNet", "ResNet-18"))
    assert get_preset("my_r18") is added
    assert added.architecture == "resnet18"


NEW_GENERATION = {
    "DINOv3": {"dinov3_s", "dinov3_b", "dinov3_l", "dinov3_7b"},
    "SigLIP 2": {"siglip2_b", "siglip2_so400m"},
    "Perception Encoder": {"pe_core_b", "pe_core_l", "pe_spatial_b", "pe_spatial_l"},
    "AIMv2": {"aimv2_l"},
    "SAM 2": {"sam2_bplus"},
    "RADIO": {"radio_v3_b", "radio_v3_l"},
    "TIPS": {"tipsv2_b"},
}


def test_the_generation_after_the_paper_is_covered() -> None:
    for family, names in NEW_GENERATION.items():
        assert names <= {p.name for p in presets() if p.family == family}, family
        assert all(getattr(get_preset(n), "licence", "") for n in names), family


@pytest.mark.parametrize("preset", presets(), ids=lambda p: p.name)
def test_stored_layers_exist_and_hierarchical_encoders_store_stride_16(preset: Preset) -> None:
    from maxa.extract.backbones import describe

    info = describe(preset.model)
    assert all(-info.levels <= i < info.levels for i in preset.layers)
    if info.patch is None and preset.family != "ResNet":  # CNNs and Hiera: the ViT-B/16 grid
        assert [info.strides[i] for i in preset.layers] == [16], preset.name


def test_the_largest_dinov3_fits_one_80gb_gpu() -> None:
    from maxa.extract.backbones import describe

    largest = max((p for p in presets() if p.family == "DINOv3"), key=lambda p: describe(p.model).params)
    assert largest.name == "dinov3_7b"
    assert describe(largest.model).params * 4 < 0.5 * 80e9  # float32 weights leave room for activations
