"""Frozen timm backbones that return dense, channel-last patch-feature grids.

`--model` is a preset (extract/presets.py) or any timm name; `--weights` is `auto`, `pretrained`,
`random-init` (seeded, so every split sees the same network) or a local .safetensors/.pth file,
loaded through the model family's own timm checkpoint filter (so original-repository key formats,
e.g. DINOv2's, convert) and then checked key by key: a file that does not fit is an error naming
the keys, never a silently half-loaded model. JAX/big_vision .npz files (SigLIP 2's release) load
into ViTs through timm's own reader, checked as well (extract/npz_weights.py).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from maxa.core.errors import MaxaError
from maxa.core.store import layer_name, prefix_name
from maxa.extract import pos_embed
from maxa.extract._compat import ensure_torchvision_importable
from maxa.extract.config import (
    AUTO,
    PRETRAINED,
    RANDOM_INIT,
    BackboneSpec,
    check_spec,
    input_hw,
)
from maxa.extract.controls import SEED as CONTROL_SEED
from maxa.extract.controls import is_control
from maxa.extract.npz_weights import load_npz
from maxa.extract.presets import Preset, get_preset, preset_names

ensure_torchvision_importable()
import timm  # noqa: E402
import timm.data  # noqa: E402
import timm.models  # noqa: E402

RANDOM_INIT_SEED = 0
"""Seed of every random-init network: the same architecture is the same network in every run."""

_SHOWN_KEYS = 3  # key names quoted in an error about a weights file


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Resolved:
    """A `--model`/`--weights` pair made concrete: the timm name to build and where weights come from."""

    model: str  # timm name, with the pretrained tag when one applies
    weights: str  # RANDOM_INIT, PRETRAINED or a file path
    preset: Preset | None = None


def check_model_name(name: str) -> None:
    """Raise a one-line error for a name that is neither a preset nor a timm model (or tag)."""
    if get_preset(name) is not None or ":" in name:  # presets; hf-hub:/local-dir: names go to timm as is
        return
    arch, _, tag = name.partition(".")
    if timm.is_model(arch):
        if tag and name not in timm.list_pretrained(f"{arch}.*"):
            tags = [n.partition(".")[2] for n in timm.list_pretrained(f"{arch}.*")]
            raise MaxaError(
                f"unknown pretrained tag {tag!r} for timm model {arch!r}; "
                f"its tags: {', '.join(tags) if tags else 'none (random-init or --weights FILE only)'}"
            )
        return
    close = difflib.get_close_matches(name, preset_names() + timm.list_models(), n=5, cutoff=0.6)
    hint = (
        f"; close names: {', '.join(close)}" if close else "; see `maxa backbones` and `timm.list_models()`"
    )
    raise MaxaError(f"unknown backbone {name!r}{hint}")


def timm_defines(name: str) -> bool:
    """Whether timm itself defines the architecture of `name` (not a plugin that registered it)."""
    arch = name.partition(".")[0]
    return timm.is_model(arch) and timm.models.model_entrypoint(arch).__module__.startswith("timm.")


def resolve(spec: BackboneSpec) -> Resolved:
    """Preset -> timm name + tag; `auto` weights -> pretrained for presets and tagged names."""
    check_model_name(spec.model)
    preset = get_preset(spec.model)
    model = preset.model if preset else spec.model
    weights = spec.weights
    if weights == AUTO:
        weights = PRETRAINED if preset or "." in spec.model else RANDOM_INIT
    if weights == PRETRAINED and preset is not None and not preset.hub:
        raise MaxaError(
            f"preset {preset.name!r}: timm has no hub weights for it; pass --weights FILE with "
            f"{preset.weights_hint or 'a local checkpoint'} (or --weights random-init for the control)"
        )
    if weights not in (RANDOM_INIT, PRETRAINED) and not is_control(weights):
        path = Path(weights)
        if not path.is_file():
            raise MaxaError(
                f"--weights {weights}: no such file (expected auto, pretrained, random-init, "
                "control:noise, control:position or a .safetensors/.pth file)"
            )
    return Resolved(model, weights, preset)


def _timm_create(name: str, **kwargs: Any) -> nn.Module:
    """timm.create_model, with any-resolution inputs for the families that support it."""
    try:
        return timm.create_model(name, dynamic_img_size=True, **kwargs)
    except TypeError as exc:  # not a ViT-style model: no dynamic_img_size argument
        if "dynamic_img_size" not in str(exc):
            raise
        return timm.create_model(name, **kwargs)


def _create(resolved: Resolved) -> nn.Module:
    pretrained = resolved.weights == PRETRAINED
    try:
        # Seed every build (random-init is the control; the others are overwritten), without
        # disturbing the caller's random stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            return _timm_create(resolved.model, pretrained=pretrained, num_classes=0)
    except (OSError, RuntimeError, ValueError) as exc:
        if not pretrained:
            raise
        raise MaxaError(
            f"could not load pretrained weights for {resolved.model!r} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160] if str(exc) else 'no network?'}); pass --weights FILE for a "
            "local copy"
        ) from exc


def _names(keys: list[str]) -> str:
    more = f" (+{len(keys) - _SHOWN_KEYS} more)" if len(keys) > _SHOWN_KEYS else ""
    return ", ".join(keys[:_SHOWN_KEYS]) + more


_POOLING_HEADS = ("head", "attn_pool", "fc_norm")
"""timm's pooling/classifier modules (what prune_intermediate_layers' prune_head drops): not on the
feature path, so a checkpoint may lack them (SAM 2's trunk has no `head.norm`) or carry them."""

_ORIGINAL_PREFIXES = {"HieraDet": "image_encoder.trunk."}
"""Original checkpoints that hold the encoder under a prefix timm's filter does not strip: a whole
SAM 2 checkpoint keeps its Hiera trunk under image_encoder.trunk. beside the neck and decoders."""


def _classifier_keys(model: nn.Module) -> tuple[str, ...]:
    classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    named = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    return named + tuple(h for h in _POOLING_HEADS if isinstance(getattr(model, h, None), nn.Module))


def _head_keys(model: nn.Module) -> Callable[[str], bool]:
    """Whether a weight key is a classifier or pooling-head weight (maxa reads features only, so they may
    be absent or dropped); the model's heads are looked up once, not once per key."""
    heads = _classifier_keys(model)
    return lambda key: any(key == h or key.startswith(h + ".") for h in heads)


def _strip_original_prefix(model: nn.Module, state: dict[str, Any]) -> dict[str, Any]:
    prefix = _ORIGINAL_PREFIXES.get(type(model).__name__)
    if prefix and any(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def _checkpoint_filter(model: nn.Module) -> Any:
    """The family's timm key converter (every timm family names it `checkpoint_filter_fn`)."""
    return getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)


def read_weights_file(path: Path, preset: Preset | None = None) -> dict[str, Any]:
    """A local checkpoint's state dict (unwrapped and de-prefixed as timm does), before any model exists."""
    try:
        state: dict[str, Any] = timm.models.load_state_dict(str(path), weights_only=True)
    except Exception as exc:  # torch.load/safetensors raise many kinds for a bad file
        raise MaxaError(
            f"cannot read weights file {path} (expected .safetensors or a torch .pth state dict): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        ) from exc
    if preset is not None and preset.key_prefix:
        prefix = preset.key_prefix
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            raise MaxaError(
                f"weights file {path} has no {prefix}* keys; preset {preset.name!r} expects "
                f"{preset.weights_hint or 'its original checkpoint'}"
            )
    return state


def load_weights(model: nn.Module, state: dict[str, Any], path: Path, name: str) -> set[str]:
    """Load a checkpoint's state into `model` exactly, or raise naming the keys that do not fit.

    Keys that timm's converter drops are accounted for too where the format is known (DINOv3: each
    dropped key is loaded another way, checked, or used only in pretraining; see `_DINOV3_DROPPED`).
    Returns the model keys the file set (head keys may be absent).
    """
    state = _strip_original_prefix(model, state)
    _check_patch_size(model, state, path, name)
    _check_architecture(model, state, path, name)
    original = state
    filter_fn = _checkpoint_filter(model)
    if filter_fn is not None:
        try:
            state = filter_fn(state, model)
        except Exception as exc:  # a filter meeting keys of another family fails in its own ways
            own_keys = model.state_dict().keys()
            extra = [k for k in state if k not in own_keys]
            raise MaxaError(
                f"weights file {path} does not fit {name!r}: timm's key conversion failed "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}); "
                f"first file keys the model does not have: {_names(extra) or 'none'}"
            ) from exc
    own = model.state_dict()
    is_head = _head_keys(model)
    unexpected = [k for k in state if k not in own and not is_head(k)]
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked") and not is_head(k)]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_names(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches {_names(shapes)}")
    if problems:
        raise MaxaError(f"weights file {path} does not fit {name!r}: {'; '.join(problems)}")
    if "storage_tokens" in original:
        _check_dinov3_drops(original, state, f"weights file {path} does not fit {name!r}")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    if DINOV3_PERIODS in original:
        load_rope_periods(model, original[DINOV3_PERIODS], f"weights file {path} does not fit {name!r}")
    return {k for k in state if k in own}


DINOV3_PERIODS = "rope_embed.periods"
"""Meta's DINOv3 checkpoints store the RoPE periods the models were trained with (bf16 values); timm's
converter drops them and recomputes exact float32 periods, so its features differ from Meta's model."""

_DINOV3_DROPPED = (
    (re.compile(r"^rope_embed\.periods$"), "loaded into the model's RoPE (load_rope_periods)"),
    (re.compile(r"\.qkv\.bias_mask$"), "the k third masked: checked to be so"),
    (re.compile(r"\.qkv\.bias$"), "the bias-free variant's zero q/v biases: checked (_check_dinov3_bias)"),
    (re.compile(r"^mask_token$"), "the masked-image-modelling token: pretraining only"),
    (re.compile(r"^local_cls_norm\."), "the 7B model's local-crop norm: pretraining only"),
    (re.compile(r"^projectors\."), "distillation projection heads: training only"),
)
"""Every key timm's DINOv3 converter drops, and why that is safe (the key is loaded, checked or unused)."""


def _storage(value: Any) -> int | None:
    return value.untyped_storage().data_ptr() if isinstance(value, torch.Tensor) else None


def _check_dinov3_drops(original: Mapping[str, Any], converted: Mapping[str, Any], stem: str) -> None:
    """Refuse a DINOv3 file whose converter drops a key maxa cannot account for, or a k-bias mask that is
    not the one the converter assumes. The converter passes every kept tensor through (or a view of it),
    so a key whose storage reaches no converted tensor was dropped."""
    kept = {_storage(v) for v in converted.values()}
    dropped = [k for k, v in original.items() if isinstance(v, torch.Tensor) and _storage(v) not in kept]
    unknown = [k for k in dropped if not any(pattern.search(k) for pattern, _ in _DINOV3_DROPPED)]
    if unknown:
        raise MaxaError(
            f"{stem}: timm's DINOv3 conversion drops {_names(unknown)}, which maxa cannot account for "
            "(not a pretraining-only key); the file may be another variant"
        )
    for key in (k for k in dropped if k.endswith(".qkv.bias_mask")):
        mask = original[key].float()
        third = mask.shape[-1] // 3
        expected = torch.ones_like(mask)
        expected[..., third : 2 * third] = 0
        if not torch.equal(mask, expected):
            raise MaxaError(
                f"{stem}: {key} does not mask exactly the k third of the attention bias, which timm's "
                "conversion assumes (it drops the k bias)"
            )


def load_rope_periods(model: nn.Module, periods: torch.Tensor, stem: str) -> None:
    """Put a checkpoint's RoPE periods into the model (timm recomputes its own; the values as trained
    are the checkpoint's). Kept at the model's float32, so bf16 periods are represented exactly."""
    rope = getattr(model, "rope", None)
    own = getattr(rope, "periods", None)
    if not isinstance(own, torch.Tensor) or tuple(own.shape) != tuple(periods.shape):
        have = "none" if not isinstance(own, torch.Tensor) else str(tuple(own.shape))
        raise MaxaError(f"{stem}: {DINOV3_PERIODS} {tuple(periods.shape)} vs the model's RoPE periods {have}")
    if getattr(rope, "pos_embed_cached", None) is not None:  # maxa builds dynamic-size models: no cache
        raise MaxaError(f"{stem}: the model caches its RoPE embedding; build it with dynamic_img_size")
    with torch.no_grad():
        own.copy_(periods.to(own.dtype))
    dtype = str(periods.dtype).removeprefix("torch.")
    object.__setattr__(model, "_maxa_rope_periods", f"checkpoint ({dtype})")


def rope_periods(model: nn.Module) -> str | None:
    """Where a DINOv3-RoPE model's periods come from (provenance); None for models without them."""
    if not isinstance(getattr(getattr(model, "rope", None), "periods", None), torch.Tensor):
        return None
    return getattr(model, "_maxa_rope_periods", "timm (float32, computed)")


def dense_final_norm(model: nn.Module) -> nn.Module | None:
    """The final norm that timm keeps in a ConvNeXt's classifier head (`head.norm`, applied after pooling),
    which DINOv3's ConvNeXt applies to every position of the last stage (dinov3 models/convnext.py
    `get_intermediate_layers(norm=True)`: `self.norms[-1] = self.norm`). None where timm applies the final
    norm itself (`head_norm_first`) or the model has none."""
    if type(model).__name__ != "ConvNeXt" or not isinstance(getattr(model, "norm_pre", None), nn.Identity):
        return None
    norm = getattr(getattr(model, "head", None), "norm", None)
    return norm if isinstance(norm, nn.Module) and not isinstance(norm, nn.Identity) else None


_TOKEN_KEYS = ("register_tokens", "storage_tokens", "reg_token")  # DINOv2, DINOv3, timm names
_BLOCK_KEY = re.compile(r"^(.*?)blocks\.(\d+)\.")


def _file_blocks(state: Mapping[str, Any]) -> tuple[int, str]:
    """Number of transformer blocks in a checkpoint (under its most common prefix) and that prefix."""
    indices: dict[str, set[int]] = {}
    for key in state:
        match = _BLOCK_KEY.match(key)
        if match and not re.search(r"\d\.$", match.group(1)):  # stages.N.blocks.M: per-stage blocks
            indices.setdefault(match.group(1), set()).add(int(match.group(2)))
    if not indices:
        return 0, ""
    prefix = max(indices, key=lambda p: len(indices[p]))
    return max(indices[prefix]) + 1, prefix


def _file_registers(state: Mapping[str, Any]) -> tuple[int, list[str]] | None:
    """Register tokens of a ViT-style checkpoint (None when its format does not say)."""
    keys = [k for k in state if k.rsplit(".", 1)[-1] in _TOKEN_KEYS]
    if not keys and not any(k.rsplit(".", 1)[-1] == "cls_token" for k in state):
        return None
    return sum(int(state[k].shape[-2]) for k in keys), keys


def _check_architecture(model: nn.Module, state: Mapping[str, Any], path: Path, name: str) -> None:
    """Refuse a checkpoint of another variant before timm's converter fails on it with a reshape error.

    Compares what both formats state plainly (block count, register tokens) and names the keys.
    """
    stem = f"weights file {path} does not fit {name!r}"
    blocks = getattr(model, "blocks", None)
    file_blocks, prefix = _file_blocks(state)
    if isinstance(blocks, nn.Sequential | nn.ModuleList) and file_blocks and file_blocks != len(blocks):
        first = min(file_blocks, len(blocks))
        keys = [
            k
            for k in (state if file_blocks > len(blocks) else model.state_dict())
            if k.startswith(f"{prefix if file_blocks > len(blocks) else ''}blocks.{first}.")
        ]
        raise MaxaError(
            f"{stem}: the file has {file_blocks} blocks, the model {len(blocks)}; first differing keys: "
            f"{_names(keys)}"
        )
    if hasattr(model, "reg_token"):
        registers = _file_registers(state)
        reg_token = model.reg_token
        own = int(reg_token.shape[1]) if isinstance(reg_token, torch.Tensor) else 0
        if registers is not None and registers[0] != own:
            keys = registers[1] or ["reg_token"]
            raise MaxaError(
                f"{stem}: the file has {registers[0]} register tokens, the model {own} (a variant "
                f"{'with' if registers[0] else 'without'} registers is needed); first differing keys: "
                f"{_names(keys)}"
            )
    _check_dinov3_bias(model, state, stem)


def _check_dinov3_bias(model: nn.Module, state: Mapping[str, Any], stem: str) -> None:
    """timm's DINOv3 converter drops qkv biases for the bias-free variant; refuse if they are not zero."""
    if "storage_tokens" not in state:
        return
    try:
        model.get_parameter("blocks.0.attn.q_bias")
        return
    except AttributeError:
        pass
    for key, value in state.items():
        # the k third is fixed at zero by the original's bias_mask; q and v must be zero to drop them
        if key.endswith("qkv.bias") and any(torch.count_nonzero(p) for p in value.chunk(3, dim=-1)[::2]):
            raise MaxaError(
                f"{stem}: its attention biases ({key}) are not zero but the model has none; use the "
                "`_qkvb` variant of the model"
            )


def _check_patch_size(model: nn.Module, state: Mapping[str, Any], path: Path, name: str) -> None:
    """timm's ViT filter would resample a patch kernel of another size; for a probe that is a mistake."""
    weight = state.get("patch_embed.proj.weight")
    proj = getattr(getattr(model, "patch_embed", None), "proj", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 4 or not isinstance(proj, nn.Conv2d):
        return
    if tuple(weight.shape[-2:]) != tuple(proj.weight.shape[-2:]):
        raise MaxaError(
            f"weights file {path} does not fit {name!r}: its patch size is {tuple(weight.shape[-2:])}, "
            f"the model's {tuple(proj.weight.shape[-2:])}"
        )


def patch_size(model: nn.Module) -> tuple[int, int] | None:
    """A ViT-style model's patch size (inputs must be multiples of it); None for CNNs."""
    embed = getattr(model, "patch_embed", None) or getattr(model, "embeds", None)  # NaFlexVit: embeds
    size = getattr(embed, "patch_size", None)
    if size is None:
        return None
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


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
    timm_name: str = ""
    weights: str = RANDOM_INIT  # resolved: random-init, pretrained or the file path
    preset: str | None = None
    num_prefix_tokens: int = 0
    channels_last: bool = False  # feed NHWC-strided inputs (CNNs on a GPU)
    pos_embed: dict[str, Any] | str = "none"  # how position embeddings meet other input sizes
    final_norm: nn.Module | None = None  # applied to the last level with --norm where timm does not
    rope_periods: str | None = None  # DINOv3 RoPE: the checkpoint's periods or timm's own

    @property
    def layer_names(self) -> list[str]:
        return [layer_name(i) for i in self.layers]

    @property
    def _last_level(self) -> int:
        return len(getattr(self.model, "feature_info", None) or []) - 1

    @property
    def is_convnet(self) -> bool:
        return patch_size(self.model) is None

    def use_channels_last(self) -> None:
        """NHWC strides for CNNs, the layout GPU convolution kernels run fastest on."""
        if self.is_convnet:
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            self.channels_last = True

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> the normalized float (B, 3, H, W) input the model expects.

        The same as transforms.normalize, in one layout change and two in-place passes (it runs on
        every batch of an extraction).
        """
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        x = images.permute(0, 3, 1, 2).contiguous(memory_format=layout).float()
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        return x.mul_(1.0 / (255.0 * std)).sub_(mean / std)

    @torch.inference_mode()
    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalized (B, 3, H, W) images -> {layer name: (B, h, w, C)} channel-last grids.

        With `spec.store_prefix`, also {prefix name: (B, num_prefix_tokens, C)}. All levels come
        from one forward pass that stops after the deepest level asked for.
        """
        kwargs: dict[str, Any] = {}
        if self.spec.store_prefix:
            kwargs["return_prefix_tokens"] = True
        outs = self.model.forward_intermediates(  # type: ignore[operator]
            images,
            indices=self.layers,
            norm=self.spec.norm,
            stop_early=True,
            output_fmt="NCHW",
            intermediates_only=True,
            **kwargs,
        )
        grids = {}
        last = self._last_level
        for index, out in zip(self.layers, outs, strict=True):
            if isinstance(out, tuple):  # (spatial, prefix) with return_prefix_tokens
                out, prefix = out
                grids[prefix_name(index)] = prefix
            if self.spec.norm and index == last and self.final_norm is not None:
                out = self.final_norm(out)  # NCHW, normalized over channels at every position
            channels = self.channels[index]
            # Some timm versions hand back channel-last grids (Swin) whatever output_fmt says.
            grid = out if out.shape[-1] == channels and out.shape[1] != channels else out.permute(0, 2, 3, 1)
            grids[layer_name(index)] = grid
        return grids

    def provenance(self) -> dict[str, Any]:
        weights = self.weights
        control = is_control(weights)
        if weights not in (RANDOM_INIT, PRETRAINED) and not control:
            weights = f"file:{Path(weights).name}"  # the checksum identifies it, not the local path
        prov = {
            "model": self.timm_name or self.spec.model,
            "weights": weights,
            "weights_sha256": self.weights_sha256,
            "timm_version": timm.__version__,
            "torch_version": torch.__version__.split("+")[0],
            "input_size": list(self.input_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "layers": self.layer_names,
            "norm": self.spec.norm,
            "init_seed": RANDOM_INIT_SEED if self.weights == RANDOM_INIT else None,
            # A control's store holds no network's features: there is no backbone to compare adapters to.
            "backbone_params": 0 if control else self.num_params,
            "num_prefix_tokens": self.num_prefix_tokens,
            "store_prefix": self.spec.store_prefix,
            "pos_embed_resample": self.pos_embed,
        }
        if self.final_norm is not None and self.spec.norm and self._last_level in self.layers:
            prov["final_norm"] = "head.norm at every position of the last stage (as DINOv3 ConvNeXt does)"
        if self.rope_periods is not None:
            prov["rope_periods"] = self.rope_periods
        if control:  # the model only gave the store its shape (built random-init, never run on an image)
            prov.update(init_seed=None, control={"kind": weights, "seed": CONTROL_SEED})
        if self.preset:
            prov["preset"] = self.preset
        return prov


def load_backbone(spec: BackboneSpec, device: torch.device | str = "cpu") -> Backbone:
    """Build the model, resolve its layers and preprocessing, and freeze it in eval mode.

    The spec is checked against the architecture's facts (read on the meta device) first, so a
    bad layer or input size fails at once instead of after building a large model.
    """
    resolved = resolve(spec)
    if ":" not in resolved.model:  # hf-hub:/local-dir: names are only known once built
        info = describe(resolved.model)
        check_spec(spec, info.levels, info.num_prefix_tokens, info.patch, spec.input_size or info.input_size)
    weights_sha, state = None, None
    from_file = resolved.weights not in (RANDOM_INIT, PRETRAINED) and not is_control(resolved.weights)
    npz = from_file and Path(resolved.weights).suffix == ".npz"  # JAX/big_vision: loaded by the model
    if from_file and not npz:  # a bad file fails before a model is built
        state = read_weights_file(Path(resolved.weights), resolved.preset)
    if from_file:
        weights_sha = sha256_file(Path(resolved.weights))
    model = _create(resolved)
    loaded: set[str] | None = None
    if state is not None:
        loaded = load_weights(model, state, Path(resolved.weights), resolved.model)
        del state
    elif npz:
        load_npz(model, Path(resolved.weights), resolved.model, _head_keys(model), _names)
    if not hasattr(model, "forward_intermediates"):
        raise MaxaError(
            f"timm model {resolved.model!r} has no forward_intermediates(); choose another backbone"
        )
    rule = pos_embed.rule_for(resolved.model)
    pos_embed.install(model, rule)
    model.eval().requires_grad_(False).to(device)
    feature_info = getattr(model, "feature_info", None) or []
    num_prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    data_config = timm.data.resolve_model_data_config(model)
    size = spec.input_size or int(data_config["input_size"][-1])
    patch = patch_size(model)
    layers = check_spec(spec, len(feature_info), num_prefix, max(patch) if patch else None, size)
    final_norm = dense_final_norm(model) if spec.norm and len(feature_info) - 1 in layers else None
    if final_norm is not None and loaded is not None and not any(k.startswith("head.norm.") for k in loaded):
        raise MaxaError(
            f"--norm on the last stage of {resolved.model!r} needs the final norm, but weights file "
            f"{resolved.weights} has none (the original's `norm.*`); drop --norm or use a file that has it"
        )
    preset = resolved.preset
    mean = preset.mean if preset and preset.mean else data_config["mean"]
    std = preset.std if preset and preset.std else data_config["std"]
    return Backbone(
        spec=spec,
        model=model,
        layers=layers,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        input_size=input_hw(size),
        num_params=sum(p.numel() for p in model.parameters()),
        weights_sha256=weights_sha,
        channels={i: int(feature_info[i]["num_chs"]) for i in layers},
        timm_name=resolved.model,
        weights=resolved.weights,
        preset=preset.name if preset else None,
        num_prefix_tokens=num_prefix,
        pos_embed=pos_embed.record(model, rule),
        final_norm=final_norm,
        rope_periods=rope_periods(model),
    )


@dataclass(frozen=True)
class BackboneInfo:
    """What `maxa backbones` lists about a model, read without allocating or downloading weights."""

    model: str
    stride: int  # patch size of a ViT, output stride of the last stage of a CNN
    width: int  # channels of the last feature level
    input_size: int  # the pretrained config's default square side
    levels: int  # feature levels `--layers` can index
    num_prefix_tokens: int
    params: int
    patch: int | None = None  # ViT-style models: inputs must be a multiple of it
    strides: tuple[int, ...] = ()  # output stride of each feature level
    channels: tuple[int, ...] = ()  # channels of each feature level


def describe(name: str) -> BackboneInfo:
    """The facts of a timm name (with or without tag), read without memory or weights."""
    arch, _, tag = name.partition(".")
    info = _describe_architecture(arch)
    cfg = timm.models.get_pretrained_cfg(name) if tag else None
    input_size = (
        cfg.input_size if cfg is not None and cfg.input_size else (3, info.input_size, info.input_size)
    )
    return replace(info, model=name, input_size=int(input_size[-1]))


@functools.cache
def _describe_architecture(arch: str) -> BackboneInfo:
    """Instantiate on the meta device (no memory, no weights) and read the facts off the model."""
    try:
        with torch.device("meta"):
            try:  # initialising meta tensors is slow and pointless: skip it where the family can
                model = _timm_create(arch, pretrained=False, num_classes=0, weight_init="skip")
            except (TypeError, AssertionError):  # no such argument, or a family that rejects "skip"
                model = _timm_create(arch, pretrained=False, num_classes=0)
    except Exception:  # some inits compute on tensors; build it for real then
        model = _timm_create(arch, pretrained=False, num_classes=0)
    info = getattr(model, "feature_info", None) or [{}]
    input_size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size") or (3, 224, 224)
    return BackboneInfo(
        model=arch,
        stride=int(info[-1].get("reduction", 0)),
        width=int(info[-1].get("num_chs", getattr(model, "num_features", 0))),
        input_size=int(input_size[-1]),
        levels=len(info),
        num_prefix_tokens=int(getattr(model, "num_prefix_tokens", 0) or 0),
        params=sum(p.numel() for p in model.parameters()),
        patch=max(patch_size(model) or (0,)) or None,
        strides=tuple(int(level.get("reduction", 0)) for level in info),
        channels=tuple(int(level.get("num_chs", 0)) for level in info),
    )
