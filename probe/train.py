"""`maxa probe`: train one adapter for one task from a feature store and a target store only."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from maxa.extract.device import resolve_device
from maxa.extract.errors import MaxaError
from maxa.extract.sample import IGNORE_INDEX
from maxa.probe.adapters import build_adapter, count_parameters
from maxa.probe.data import PairedData, load_pair
from maxa.probe.tasks import get_task

CHECKPOINT_FORMAT = 1


@dataclass
class ProbeConfig:
    """The `probe` section of params.yaml."""

    task: str = "semantic"
    adapter: str = "maxa"
    layer: str = "-1"
    iterations: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    query_grid: int = 28
    width: int = 16
    heads: int = 8
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.batch_size < 1:
            raise MaxaError("--iterations and --batch-size must be >= 1")
        if self.lr <= 0:
            raise MaxaError(f"--lr must be positive, got {self.lr}")
        get_task(self.task)

    def adapter_options(self) -> dict[str, Any]:
        return {"query_grid": self.query_grid, "width": self.width, "heads": self.heads}


def class_prior(targets: torch.Tensor, num_classes: int) -> list[float]:
    """Training-set class frequencies: the constant-prediction baseline evaluation compares against."""
    labels = targets[targets != IGNORE_INDEX].long()
    counts = torch.bincount(labels.flatten(), minlength=num_classes)[:num_classes].double()
    return (counts / counts.sum().clamp(min=1)).tolist()


def train(
    config: ProbeConfig, features_url: str, targets_url: str, out: str, *, progress: bool = True
) -> dict:
    """Train, save a checkpoint (state dict + config) at `out`, and return its metadata."""
    torch.manual_seed(config.seed)
    task = get_task(config.task)
    data: PairedData = load_pair(features_url, targets_url, config.layer, task.target)
    device = resolve_device(config.device)
    num_classes = int(data.target_store.provenance["num_classes"])
    in_channels = int(data.features.shape[-1])
    out_channels = task.out_channels(num_classes)
    output_size = tuple(int(s) for s in data.targets.shape[1:])
    model = build_adapter(config.adapter, in_channels, out_channels, config.adapter_options()).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.iterations)
    scaler = torch.amp.GradScaler(enabled=device.type == "cuda")
    generator = torch.Generator().manual_seed(config.seed)
    features = data.features.to(device) if device.type == "cuda" else data.features
    targets = data.targets
    n = len(data)
    order = torch.randperm(n, generator=generator)
    cursor, losses = 0, []
    model.train()
    started = time.perf_counter()
    bar = tqdm(range(config.iterations), desc=f"probe {config.adapter}/{config.task}", disable=not progress)
    for step in bar:
        if cursor + config.batch_size > n:
            order, cursor = torch.randperm(n, generator=generator), 0
        idx = order[cursor : cursor + config.batch_size]
        cursor += config.batch_size
        x = features[idx].to(device, non_blocking=True)
        y = task.prepare_target(targets[idx]).to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = task.loss(model(x, output_size=output_size), y)
        if not torch.isfinite(loss):
            raise MaxaError(f"training diverged at step {step} (loss {loss.item()}); lower --lr")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        losses.append(loss.item())
        if step % 10 == 0:
            elapsed = time.perf_counter() - started
            bar.set_postfix(
                loss=f"{np.mean(losses[-10:]):.3f}", samples_s=f"{(step + 1) * len(idx) / elapsed:.0f}"
            )
    elapsed = time.perf_counter() - started
    fprov = data.feature_store.provenance
    adapter_params = count_parameters(model)
    backbone_params = int(fprov["backbone_params"])
    meta = {
        "format": CHECKPOINT_FORMAT,
        "config": asdict(config),
        "in_channels": in_channels,
        "out_channels": out_channels,
        "output_size": list(output_size),
        "num_classes": num_classes,
        "class_names": list(data.target_store.provenance["class_names"]),
        "class_prior": class_prior(targets, num_classes) if config.task == "semantic" else None,
        "backbone": fprov.get("name", fprov["model"]),
        "feature_store": {"url": features_url, "fingerprint": data.feature_store.fingerprint},
        "target_store": {"url": targets_url, "fingerprint": data.target_store.fingerprint},
        "feature_shape": list(data.features.shape[1:]),
        "layer": data.layer,
        "adapter_params": adapter_params,
        "backbone_params": backbone_params,
        "adapter_pct_of_backbone": 100.0 * adapter_params / max(backbone_params, 1),
        "train_samples": n,
        "losses": losses,
        "samples_per_second": config.iterations * config.batch_size / elapsed if elapsed > 0 else math.nan,
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {k: v.cpu() for k, v in model.state_dict().items()}, "meta": meta}, out)
    return meta


def load_checkpoint(path: str, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the trained adapter from a checkpoint (plain tensors + JSON-like metadata only)."""
    if not Path(path).is_file():
        raise MaxaError(f"checkpoint {path} does not exist; run `maxa probe` first")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    meta = blob["meta"]
    if meta.get("format", 0) > CHECKPOINT_FORMAT:
        raise MaxaError(f"checkpoint {path} was written by a newer maxa; upgrade maxa")
    config = ProbeConfig(**meta["config"])
    model = build_adapter(config.adapter, meta["in_channels"], meta["out_channels"], config.adapter_options())
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval(), meta
