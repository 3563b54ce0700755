"""The checkpoint record: trained weights plus the metadata every later stage joins on.

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

from maxa.core.errors import MaxaError
from maxa.core.records import backbone_fields, backbone_fingerprint, require_fields
from maxa.extract import store as st

CHECKPOINT_FORMAT = 3
"""3: run_id, dataset, backbone_fingerprint and the stores' fingerprints are required fields."""

REQUIRED = (
    "format",
    "run_id",
    "config",
    "in_channels",
    "out_channels",
    "output_size",
    "num_classes",
    "class_names",
    "backbone",
    "backbone_fingerprint",
    "dataset",
    "layers",
    "feature_store",
    "target_store",
)
"""Fields a format-3 checkpoint must carry; older formats are read with what they have."""


LEGACY_OPTIONS = {"semantic_loss_size": "label", "center_decoders": "shared", "instance_head": "trained"}
"""What checkpoints written before these task options existed were trained with (read as recorded)."""


def file_fingerprint(path: str | Path) -> str:
    """First 16 hex of sha256 of a file's bytes, streamed (what a metrics record names a checkpoint by)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def save_checkpoint(path: str | Path, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write weights + metadata through a temporary file and a rename (a crash leaves no half file)."""
    require_fields(meta, REQUIRED, "checkpoint metadata")
    save_atomic({"state_dict": state_dict, "meta": meta}, Path(path))


def save_atomic(blob: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw blob {state_dict, meta}, refused in one line when missing, foreign or newer."""
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
    if not isinstance(meta, dict):
        raise MaxaError(f"checkpoint {path} is not a maxa checkpoint (metadata is not a mapping)")
    if int(meta.get("format", 0)) > CHECKPOINT_FORMAT:
        raise MaxaError(
            f"checkpoint {path} has format {meta.get('format')}, this maxa reads up to {CHECKPOINT_FORMAT}; "
            "upgrade maxa"
        )
    if int(meta.get("format", 0)) >= 3:
        require_fields(meta, REQUIRED, f"checkpoint {path}")
    for record in (meta.get("task_options"), meta.get("config")):
        if isinstance(record, dict):
            for key, value in LEGACY_OPTIONS.items():
                record.setdefault(key, value)
    return blob


def load_checkpoint(path: str, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the trained adapter from a checkpoint (plain tensors + JSON-like metadata only)."""
    from maxa.probe.adapters import build_adapter
    from maxa.probe.config import ProbeConfig

    blob = read_checkpoint(path)
    meta = blob["meta"]
    known = {f.name for f in fields(ProbeConfig)}
    config = ProbeConfig(**{k: v for k, v in meta["config"].items() if k in known})
    options = meta.get("adapter_options") or config.adapter_options()
    model = build_adapter(config.adapter, meta["in_channels"], meta["out_channels"], options)
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MaxaError(
            f"checkpoint {path}: weights do not fit its {config.adapter} adapter ({first})"
        ) from exc
    return model.to(device).eval(), meta


def check_join(
    meta: dict[str, Any], path: str, features: st.Store, targets: st.Store, layers: list[str]
) -> None:
    """Refuse stores that are not what the checkpoint was trained on, naming the differing field:
    backbone fingerprint, layers, dataset and class names (the class space)."""
    fprov, tprov = features.provenance, targets.provenance
    problems: list[str] = []
    want_backbone = meta.get("backbone_fingerprint")
    have_backbone = backbone_fingerprint(fprov)
    if want_backbone is not None and want_backbone != have_backbone:
        problems.append(
            f"backbone fingerprint {want_backbone} ({meta.get('backbone')}) vs {have_backbone} "
            f"({fprov.get('name', fprov.get('model'))}) in {features.url}{_differing(meta, fprov)}"
        )
    want_layers = list(meta.get("layers") or [])
    if want_layers and want_layers != list(layers):
        problems.append(f"layers {want_layers} vs {list(layers)}")
    dataset = meta.get("dataset")
    if dataset is not None and dataset != tprov.get("dataset"):
        problems.append(f"dataset {dataset!r} vs {tprov.get('dataset')!r} in {targets.url}")
    names = meta.get("class_names")
    if names and list(names) != list(tprov.get("class_names") or []):
        problems.append(f"class names {_short(names)} vs {_short(tprov.get('class_names') or [])}")
    if problems:
        raise MaxaError(f"checkpoint {path} does not fit these stores: {'; '.join(problems)}")


def _differing(meta: dict[str, Any], fprov: dict[str, Any]) -> str:
    """`: differs in norm (False vs True), ...`: the backbone fields behind a fingerprint mismatch
    (checkpoints from before `backbone_fields` was recorded can only show the fingerprints)."""
    trained = meta.get("backbone_fields")
    if not isinstance(trained, dict):
        return ""
    have = backbone_fields(fprov)
    diff = [f"{k} ({trained.get(k)!r} vs {have[k]!r})" for k in have if trained.get(k) != have[k]]
    return f": differs in {', '.join(diff)}" if diff else ""


def _short(names: list[str]) -> str:
    return "[" + ", ".join(names[:4]) + (", ..." if len(names) > 4 else "") + f"] ({len(names)})"
