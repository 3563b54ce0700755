"""The checkpoint file: trained weights plus their record (maxa.core.checkpoint_meta.CheckpointMeta).

Loading a checkpoint imports only this module and the adapters, never the trainer. The file holds plain
tensors and JSON-like metadata (`torch.load(weights_only=True)`); `format` versions the metadata.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from maxa.core import store as st
from maxa.core.checkpoint_meta import CheckpointMeta
from maxa.core.errors import MaxaError
from maxa.core.provenance import FeatureProvenance, TargetProvenance


def file_fingerprint(path: str | Path) -> str:
    """First 16 hex of sha256 of a file's bytes, streamed (what a metrics record names a checkpoint by)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def save_checkpoint(path: str | Path, state_dict: dict[str, torch.Tensor], meta: CheckpointMeta) -> None:
    """Write weights + metadata through a temporary file and a rename (a crash leaves no half file)."""
    save_atomic({"state_dict": state_dict, "meta": meta.to_dict()}, Path(path))


def save_atomic(blob: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """The weights and the record, refused in one line when missing, foreign or newer."""
    if not Path(path).is_file():
        raise MaxaError(f"checkpoint {path} does not exist; run `maxa probe` first")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        meta = blob["meta"]
        blob["state_dict"]
    except Exception as exc:
        first = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else ""
        raise MaxaError(
            f"checkpoint {path} is not a maxa checkpoint ({type(exc).__name__}: {first})"
        ) from exc
    return blob["state_dict"], CheckpointMeta.from_dict(meta, f"checkpoint {path}")


def read_meta(path: str | Path) -> CheckpointMeta:
    """Only the record of a checkpoint (report, plots and intervals need no weights)."""
    return read_checkpoint(path)[1]


def load_checkpoint(path: str, device: str | torch.device = "cpu") -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the trained adapter from a checkpoint (plain tensors + JSON-like metadata only)."""
    from maxa.probe.adapters import build_adapter
    from maxa.probe.config import ProbeConfig

    state_dict, meta = read_checkpoint(path)
    known = {f.name for f in fields(ProbeConfig)}
    config = ProbeConfig(**{k: v for k, v in meta.config.items() if k in known})
    options = meta.adapter_options or config.adapter_options()
    model = build_adapter(config.adapter, meta.in_channels, meta.out_channels, options)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MaxaError(
            f"checkpoint {path}: weights do not fit its {config.adapter} adapter ({first})"
        ) from exc
    return model.to(device).eval(), meta


def check_join(
    meta: CheckpointMeta, path: str, features: st.Store, targets: st.Store, layers: list[str]
) -> None:
    """Refuse stores that are not what the checkpoint was trained on, naming the differing field:
    backbone fingerprint, layers, dataset and class names (the class space)."""
    fprov, tprov = FeatureProvenance.of(features), TargetProvenance.of(targets)
    problems: list[str] = []
    want_backbone = meta.backbone_fingerprint
    have_backbone = fprov.backbone_fingerprint
    if want_backbone is not None and want_backbone != have_backbone:
        problems.append(
            f"backbone fingerprint {want_backbone} ({meta.backbone}) vs {have_backbone} "
            f"({fprov.backbone}) in {features.url}{_differing(meta, fprov)}"
        )
    want_layers = list(meta.layers)
    if want_layers and want_layers != list(layers):
        problems.append(f"layers {want_layers} vs {list(layers)}")
    dataset = meta.dataset
    if dataset is not None and dataset != tprov.dataset.name:
        problems.append(f"dataset {dataset!r} vs {tprov.dataset.name!r} in {targets.url}")
    names = meta.class_names
    if names and list(names) != tprov.class_names:
        problems.append(f"class names {_short(names)} vs {_short(tprov.class_names)}")
    if problems:
        raise MaxaError(f"checkpoint {path} does not fit these stores: {'; '.join(problems)}")


def _differing(meta: CheckpointMeta, fprov: FeatureProvenance) -> str:
    """`: differs in norm (False vs True), ...`: the backbone fields behind a fingerprint mismatch
    (checkpoints from before `backbone_fields` was recorded can only show the fingerprints)."""
    trained = meta.backbone_fields
    if not isinstance(trained, dict):
        return ""
    have = fprov.backbone_fields
    diff = [f"{k} ({trained.get(k)!r} vs {have[k]!r})" for k in have if trained.get(k) != have[k]]
    return f": differs in {', '.join(diff)}" if diff else ""


def _short(names: list[str]) -> str:
    return "[" + ", ".join(names[:4]) + (", ..." if len(names) > 4 else "") + f"] ({len(names)})"
