"""Frozen timm backbones that return dense, channel-last patch-feature grids."""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from maxa.extract._compat import ensure_torchvision_importable
from maxa.extract.config import PRETRAINED, RANDOM_INIT, BackboneSpec, layer_name
from maxa.extract.errors import MaxaError

ensure_torchvision_importable()
import timm  # noqa: E402
import timm.data  # noqa: E402

RANDOM_INIT_SEED = 0


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def check_model_name(name: str) -> None:
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f"; close timm names: {', '.join(close)}" if close else "; see `timm.list_models()`"
    raise MaxaError(f"unknown backbone {name!r}{hint}")


def _create(spec: BackboneSpec) -> nn.Module:
    kwargs: dict[str, Any] = {"num_classes": 0}
    if spec.weights == RANDOM_INIT:
        # Every split must see the same random network: seed the initialisation.
        torch.manual_seed(RANDOM_INIT_SEED)
        kwargs["pretrained"] = False
    elif spec.weights == PRETRAINED:
        kwargs["pretrained"] = True
    else:
        path = Path(spec.weights)
        if not path.is_file():
            raise MaxaError(f"weights file {path} does not exist (expected .safetensors or .pth)")
        kwargs["pretrained"] = True
        kwargs["pretrained_cfg_overlay"] = {"file": str(path.resolve())}
    try:
        try:
            return timm.create_model(spec.model, dynamic_img_size=True, **kwargs)
        except TypeError as exc:  # not a ViT-style model: no dynamic_img_size argument
            if "dynamic_img_size" not in str(exc):
                raise
            return timm.create_model(spec.model, **kwargs)
    except (OSError, RuntimeError) as exc:
        if spec.weights == PRETRAINED:
            raise MaxaError(
                f"could not load pretrained weights for {spec.model!r} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:160]}); pass --weights FILE for a local copy"
            ) from exc
        if spec.weights != RANDOM_INIT:
            raise MaxaError(
                f"weights file {spec.weights} does not fit {spec.model!r}: {str(exc).splitlines()[0][:300]}"
            ) from exc
        raise


@dataclass
class Backbone:
    """A frozen model plus everything the feature store records about it."""

    spec: BackboneSpec
    model: nn.Module
    layers: list[int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: tuple[int, int]
    num_params: int
    weights_sha256: str | None
    channels: dict[int, int] = field(default_factory=dict)

    @property
    def layer_names(self) -> list[str]:
        return [layer_name(i) for i in self.layers]

    @torch.inference_mode()
    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalized (B, 3, H, W) images -> {layer name: (B, h, w, C)} channel-last grids."""
        outs = self.model.forward_intermediates(  # type: ignore[operator]
            images, indices=self.layers, norm=self.spec.norm, output_fmt="NCHW", intermediates_only=True
        )
        grids = {}
        for index, out in zip(self.layers, outs, strict=True):
            channels = self.channels[index]
            # Some families (Swin) hand back channel-last grids whatever output_fmt says.
            grid = out if out.shape[-1] == channels and out.shape[1] != channels else out.permute(0, 2, 3, 1)
            grids[layer_name(index)] = grid
        return grids

    def provenance(self) -> dict[str, Any]:
        return {
            "model": self.spec.model,
            "weights": self.spec.weights,
            "weights_sha256": self.weights_sha256,
            "timm_version": timm.__version__,
            "torch_version": torch.__version__.split("+")[0],
            "input_size": list(self.input_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "layers": self.layer_names,
            "norm": self.spec.norm,
            "init_seed": RANDOM_INIT_SEED if self.spec.weights == RANDOM_INIT else None,
            "backbone_params": self.num_params,
        }


def load_backbone(spec: BackboneSpec, device: torch.device | str = "cpu") -> Backbone:
    """Build the model, resolve its layers and preprocessing, and freeze it in eval mode."""
    check_model_name(spec.model)
    model = _create(spec)
    if not hasattr(model, "forward_intermediates"):
        raise MaxaError(f"timm model {spec.model!r} has no forward_intermediates(); choose another backbone")
    model.eval().requires_grad_(False).to(device)
    feature_info = getattr(model, "feature_info", None) or []
    depth = len(feature_info)
    layers = []
    for index in spec.layers:
        resolved = depth + index if index < 0 else index
        if not 0 <= resolved < depth:
            raise MaxaError(
                f"layer {index} is out of range for {spec.model!r}, which has {depth} feature levels"
            )
        layers.append(resolved)
    data_config = timm.data.resolve_model_data_config(model)
    side = spec.input_size or int(data_config["input_size"][-1])
    weights_sha = None
    if spec.weights not in (RANDOM_INIT, PRETRAINED):
        weights_sha = sha256_file(Path(spec.weights))
    return Backbone(
        spec=spec,
        model=model,
        layers=layers,
        mean=tuple(float(m) for m in data_config["mean"]),
        std=tuple(float(s) for s in data_config["std"]),
        input_size=(side, side),
        num_params=sum(p.numel() for p in model.parameters()),
        weights_sha256=weights_sha,
        channels={i: int(feature_info[i]["num_chs"]) for i in layers},
    )
