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

    @property
    def architecture(self) -> str:
        """The timm model name without its pretrained tag (what the random-init control builds)."""
        return self.model.split(".", 1)[0]


_PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset) -> Preset:
    if preset.name in _PRESETS:
        raise ValueError(f"preset {preset.name!r} is registered twice")
    if "." in preset.name:
        raise ValueError(f"preset name {preset.name!r} must not contain '.' (that marks a timm tag)")
    _PRESETS[preset.name] = preset
    return preset


def get_preset(name: str) -> Preset | None:
    return _PRESETS.get(name)


def preset_names() -> list[str]:
    return list(_PRESETS)


def presets() -> list[Preset]:
    return list(_PRESETS.values())


def _add(name: str, model: str, family: str, description: str, **extra: object) -> None:
    register_preset(Preset(name, model, family, description, **extra))  # type: ignore[arg-type]


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
_add("convnext_t", "convnext_tiny.fb_in1k", "ConvNeXt", "ConvNeXt-T supervised on ImageNet-1k")
_add("convnext_b", "convnext_base.fb_in1k", "ConvNeXt", "ConvNeXt-B supervised on ImageNet-1k")
_add("resnet50_in1k", "resnet50.tv_in1k", "ResNet", "ResNet-50, torchvision's ImageNet-1k weights")
_add("swin_t", "swin_tiny_patch4_window7_224.ms_in1k", "Swin", "Swin-T supervised on ImageNet-1k")
_add("swin_b", "swin_base_patch4_window7_224.ms_in1k", "Swin", "Swin-B supervised on ImageNet-1k")
