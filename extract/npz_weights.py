"""Original JAX/Flax `.npz` checkpoints (big_vision: SigLIP, SigLIP 2; the AugReg ViTs) for timm ViTs.

timm reads them with the ViT's own `load_pretrained` (timm.models.vision_transformer._load_weights),
which copies arrays into the model by name but resamples a patch kernel or position grid of another
size without a word and leaves parameters it has no array for untouched. So before loading, the
file's block count, patch size and position-token count are compared with the model's; after it,
every parameter must have been written (they start as NaN), or the load is refused naming them.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from maxa.core.errors import MaxaError

_PREFIXES = ("params/img/", "params/", "opt/target/", "")  # big_vision, big_vision, old JAX ViT, bare
_BLOCK = re.compile(r"Transformer/encoderblock_(\d+)/")


def _arrays(path: Path) -> dict[str, tuple[int, ...]]:
    """Array names and shapes of an .npz, read from the .npy headers only (not the data)."""
    headers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    shapes = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                with archive.open(member) as fh:
                    version = np.lib.format.read_magic(fh)
                    shape, _, _ = headers[version](fh)
                shapes[member.removesuffix(".npy")] = tuple(int(n) for n in shape)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise MaxaError(f"cannot read weights file {path} as an .npz archive: {exc}") from exc
    return shapes


def _check_shapes(model: nn.Module, arrays: dict[str, tuple[int, ...]], stem: str) -> None:
    prefix = next((p for p in _PREFIXES if f"{p}embedding/kernel" in arrays), None)
    if prefix is None:
        raise MaxaError(f"{stem}: no embedding/kernel array (not a big_vision/JAX ViT checkpoint)")
    kernel = arrays[f"{prefix}embedding/kernel"]  # (h, w, in, out)
    own_patch = tuple(model.get_parameter("patch_embed.proj.weight").shape[-2:])
    if tuple(kernel[:2]) != own_patch:
        raise MaxaError(f"{stem}: its patch size is {tuple(kernel[:2])}, the model's {own_patch}")
    blocks = {int(m.group(1)) for name in arrays if (m := _BLOCK.search(name)) and name.startswith(prefix)}
    own = len(model.blocks)  # type: ignore[arg-type]
    if blocks and len(blocks) != own:
        first = f"{prefix}Transformer/encoderblock_{min(len(blocks), own)}/"
        raise MaxaError(
            f"{stem}: the file has {len(blocks)} blocks, the model {own}; first differing keys: {first}*"
        )
    pos = arrays.get(f"{prefix}pos_embedding") or arrays.get(
        f"{prefix}Transformer/posembed_input/pos_embedding"
    )
    pos_param = getattr(model, "pos_embed", None)
    own_pos = int(pos_param.shape[1]) if isinstance(pos_param, torch.Tensor) else None
    if pos is not None and own_pos is not None and int(np.prod(pos[:-1])) != own_pos:
        raise MaxaError(
            f"{stem}: its pos_embedding has {int(np.prod(pos[:-1]))} positions, the model {own_pos} (another "
            "input size: build the model for the checkpoint's size)"
        )


def load_npz(
    model: nn.Module, path: Path, name: str, is_head: Callable[[str], bool], shown: Callable[[list[str]], str]
) -> None:
    """Load a big_vision/JAX .npz into a timm ViT exactly, or raise naming what does not fit."""
    stem = f"weights file {path} does not fit {name!r}"
    loader = getattr(model, "load_pretrained", None)
    if loader is None or not hasattr(model, "blocks") or not hasattr(model, "patch_embed"):
        raise MaxaError(
            f"{stem}: .npz (JAX/big_vision) checkpoints load into timm ViTs, not {type(model).__name__}"
        )
    _check_shapes(model, _arrays(path), stem)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for param in params.values():
            param.fill_(float("nan"))
        try:
            loader(str(path))
        except Exception as exc:  # timm's loader meets a missing array as a KeyError, a bad one as anything
            detail = str(exc).splitlines()[0][:160] if str(exc) else ""
            raise MaxaError(f"{stem}: timm's .npz loader failed ({type(exc).__name__}: {detail})") from exc
        unset = [k for k, p in params.items() if torch.isnan(p).any()]
        missing = [k for k in unset if not is_head(k)]
        if missing:
            raise MaxaError(f"{stem}: it has no values for {shown(missing)}")
        for key in unset:  # heads maxa does not use: zeros rather than NaN
            params[key].zero_()
