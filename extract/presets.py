"""Named backbones of the MAXA paper's comparison, mapped to timm model names and pretrained tags.

A preset is a short name (`dinov2_b`) for a timm model with a pretrained tag
(`vit_base_patch14_dinov2.lvd142m`), plus what timm cannot know: weights that only exist as a
local file in the original repository's format, or preprocessing that differs from the timm
config of the architecture. `--model dinov2_b` uses the pretrained weights; `--model dinov2_b
--weights random-init` is the random-init control of the same architecture. Any plain timm name
works too; presets only save typing and pin the tags the paper compares. Register more with
`register_preset`. This module imports nothing heavy (the CLI lists presets without timm).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from maxa.core.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preset:
    """One named backbone: a timm `name.tag` and what loading it needs beyond timm's defaults."""

    name: str
    model: str  # timm model name with its pretrained tag
    family: str  # grouping in `maxa backbones` (and in reports)
    description: str
    hub: bool = True  # timm can fetch the weights; False: only `--weights FILE` (or random-init)
    key_prefix: str = ""  # keep only checkpoint keys under this prefix (stripped) before timm's filter
    mean: tuple[float, float, float] | None = None  # overrides the timm config's mean/std when set
    std: tuple[float, float, float] | None = None
    weights_hint: str = ""  # where to get the file when `hub` is False
    layers: tuple[int, ...] = (-1,)  # the feature levels the paper protocol stores
    licence: str = ""  # the weights' licence, as the model card states it

    @property
    def help(self) -> str:
        return self.description

    @property
    def architecture(self) -> str:
        """The timm model name without its pretrained tag (what the random-init control builds)."""
        return self.model.split(".", 1)[0]


PRESETS: Registry[Preset] = Registry("backbone preset")

FACTS_FILE = Path(__file__).with_name("preset_facts.json")
"""Each preset's row of `maxa backbones` (patch, width, parameters, ...), generated from timm so the listing
needs neither torch nor timm. Regenerate after a preset edit or a timm upgrade: `maxa backbones
--regenerate-facts` (a test fails while it is out of date)."""


def register_preset(preset: Preset) -> Preset:
    if "." in preset.name:
        raise ValueError(f"preset name {preset.name!r} must not contain '.' (that marks a timm tag)")
    return PRESETS.register(preset)


def get_preset(name: str) -> Preset | None:
    return PRESETS.get(name) if name in PRESETS else None


def preset_names() -> list[str]:
    return PRESETS.names()


def presets() -> list[Preset]:
    return PRESETS.specs()


def _add(name: str, model: str, family: str, description: str, **extra: object) -> None:
    register_preset(Preset(name, model, family, description, **extra))  # type: ignore[arg-type]


STRIDE_16_STAGE = (2,)
"""Hierarchical encoders store their stride-16 stage, as the paper does for CNNs (a ViT-B/16's grid)."""


for _size, _arch in (("s", "small"), ("b", "base"), ("l", "large")):
    _add(f"dinov2_{_size}", f"vit_{_arch}_patch14_dinov2.lvd142m", "DINOv2", f"DINOv2 ViT-{_size.upper()}/14")
for _size, _arch in (("s", "small"), ("b", "base"), ("l", "large")):
    _add(
        f"dinov2_{_size}_reg",
        f"vit_{_arch}_patch14_reg4_dinov2.lvd142m",
        "DINOv2",
        f"DINOv2 ViT-{_size.upper()}/14 with 4 registers",
    )
_add("dino_s", "vit_small_patch16_224.dino", "DINO", "DINO ViT-S/16")
_add("dino_b", "vit_base_patch16_224.dino", "DINO", "DINO ViT-B/16")
_add("mae_b", "vit_base_patch16_224.mae", "MAE", "MAE ViT-B/16 (pre-trained, not fine-tuned)")
_add("mae_l", "vit_large_patch16_224.mae", "MAE", "MAE ViT-L/16 (pre-trained, not fine-tuned)")
# OpenAI CLIP was trained with QuickGELU; timm's plain *_clip_224.openai variants use GELU (its notes say so).
_add("clip_b16", "vit_base_patch16_clip_quickgelu_224.openai", "CLIP", "OpenAI CLIP ViT-B/16 image tower")
_add("clip_l14", "vit_large_patch14_clip_quickgelu_224.openai", "CLIP", "OpenAI CLIP ViT-L/14 image tower")
_add("siglip_b", "vit_base_patch16_siglip_224.webli", "SigLIP", "SigLIP ViT-B/16 image tower (WebLI)")
_add(
    "mocov3_b",
    "vit_base_patch16_224",
    "MoCo v3",
    "MoCo v3 ViT-B/16 (timm has no MoCo v3 weights: local file only)",
    hub=False,
    key_prefix="base_encoder.",
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    weights_hint=(
        "the pre-training checkpoint of facebookresearch/moco-v3 (e.g. vit-b-300ep.pth.tar); "
        "its module.base_encoder.* keys are used, the momentum encoder and heads are dropped"
    ),
)
_add("vit_b_in1k", "vit_base_patch16_224.augreg_in1k", "supervised", "ViT-B/16 supervised on ImageNet-1k")
_add(
    "vit_b_in21k",
    "vit_base_patch16_224.augreg_in21k_ft_in1k",
    "supervised",
    "ViT-B/16 supervised on ImageNet-21k, fine-tuned on 1k",
)
_add(
    "sam_b", "samvit_base_patch16.sa1b", "SAM", "SAM ViT-B/16 image encoder (without the neck unless --norm)"
)
_add("eva02_s", "eva02_small_patch14_224.mim_in22k", "EVA-02", "EVA-02 ViT-S/14 (MIM on IN-22k)")
_add("eva02_b", "eva02_base_patch14_224.mim_in22k", "EVA-02", "EVA-02 ViT-B/14 (MIM on IN-22k)")
_add("eva02_l", "eva02_large_patch14_224.mim_in22k", "EVA-02", "EVA-02 ViT-L/14 (MIM on IN-22k)")
_add(
    "convnext_t",
    "convnext_tiny.fb_in1k",
    "ConvNeXt",
    "ConvNeXt-T supervised on ImageNet-1k",
    layers=STRIDE_16_STAGE,
)
_add(
    "convnext_b",
    "convnext_base.fb_in1k",
    "ConvNeXt",
    "ConvNeXt-B supervised on ImageNet-1k",
    layers=STRIDE_16_STAGE,
)
_add("resnet50_in1k", "resnet50.tv_in1k", "ResNet", "ResNet-50, torchvision's ImageNet-1k weights")
_add("swin_t", "swin_tiny_patch4_window7_224.ms_in1k", "Swin", "Swin-T supervised on ImageNet-1k")
_add("swin_b", "swin_base_patch4_window7_224.ms_in1k", "Swin", "Swin-B supervised on ImageNet-1k")

# ---------------------------------------------------------------- the generation after the paper
# Weights: timm's hub copies of each release. Licences as the model cards state them (check before use).
_DINOV3_LICENCE = "DINOv3 License (Meta; gated download, use restrictions)"
for _size, _arch, _label in (
    ("s", "small", "S"),
    ("b", "base", "B"),
    ("l", "large", "L"),
    ("hplus", "huge_plus", "H+"),
    ("7b", "7b", "7B"),
):
    _add(
        f"dinov3_{_size}",
        f"vit_{_arch}_patch16_dinov3.lvd1689m",
        "DINOv3",
        f"DINOv3 ViT-{_label}/16 with 4 registers (LVD-1689M)"
        + (": the largest; its 27 GB of float32 weights fit one 80 GB GPU" if _size == "7b" else ""),
        licence=_DINOV3_LICENCE,
    )
for _size, _label in (("tiny", "T"), ("base", "B")):
    _add(
        f"dinov3_convnext_{_size[0]}",
        f"convnext_{_size}.dinov3_lvd1689m",
        "DINOv3",
        f"DINOv3 ConvNeXt-{_label} (distilled from the 7B)",
        layers=STRIDE_16_STAGE,
        licence=_DINOV3_LICENCE,
    )
_add(
    "siglip2_b",
    "vit_base_patch16_siglip_224.v2_webli",
    "SigLIP 2",
    "SigLIP 2 ViT-B/16 image tower",
    licence="Apache-2.0",
)
_add(
    "siglip2_so400m",
    "vit_so400m_patch14_siglip_224.v2_webli",
    "SigLIP 2",
    "SigLIP 2 So400m/14 image tower",
    licence="Apache-2.0",
)
for _kind, _size, _model in (
    ("core", "b", "vit_pe_core_base_patch16_224.fb"),
    ("core", "l", "vit_pe_core_large_patch14_336.fb"),
    ("spatial", "b", "vit_pe_spatial_base_patch16_512.fb"),
    ("spatial", "l", "vit_pe_spatial_large_patch14_448.fb"),
):
    _add(
        f"pe_{_kind}_{_size}",
        _model,
        "Perception Encoder",
        f"Perception Encoder {_kind.capitalize()} {_size.upper()} (Meta)",
        licence="Apache-2.0",
    )
_add(
    "aimv2_l",
    "aimv2_large_patch14_224.apple_pt",
    "AIMv2",
    "AIMv2 ViT-L/14 (Apple, pre-trained)",
    licence="Apple ASCL",
)
_add(
    "sam2_bplus",
    "sam2_hiera_base_plus.fb_r896_2pt1",
    "SAM 2",
    "SAM 2.1 Hiera B+ image encoder (trunk, without the FPN neck)",
    layers=STRIDE_16_STAGE,
    licence="Apache-2.0",
)
# NaFlexVit keeps RADIO's 128x128 position grid and resamples it as RADIO does (pos_embed.py).
for _size, _model in (
    ("b", "naflexvit_base_patch16_radio_v3.c_radio"),
    ("l", "naflexvit_large_patch16_radio_v3.c_radio"),
):
    _add(
        f"radio_v3_{_size}",
        _model,
        "RADIO",
        f"C-RADIOv3-{_size.upper()} (NVIDIA, agglomerative)",
        licence="NVIDIA Open Model License",
    )
_add(
    "radio_v4_so400m",
    "naflexvit_so400m_patch16_radio_v4.c_radio",
    "RADIO",
    "C-RADIOv4 So400m/16 (NVIDIA, agglomerative)",
    licence="NVIDIA Open Model License",
)
_add(
    "tipsv2_b",
    "vit_base_patch14_reg1_tipsv2.webli",
    "TIPS",
    "TIPSv2 ViT-B/14 with 1 register (Google DeepMind)",
    licence="Apache-2.0",
)
