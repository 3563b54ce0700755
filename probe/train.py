"""`maxa probe`: train one adapter for one task from a feature store and a target store only.

No backbone runs here. The run is resumable: every `checkpoint_every` steps (and on Ctrl-C) the model,
optimizer, schedule and step go to `<out>.resume`; `--resume` continues from it to the same final weights,
because the batch of every step is a function of the seed and the step alone (probe/loader.py).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from maxa.extract.device import resolve_device
from maxa.extract.errors import MaxaError
from maxa.probe.adapters import build_adapter, count_parameters, is_trainable, set_output_bias
from maxa.probe.config import ProbeConfig
from maxa.probe.data import StorePair, open_pair
from maxa.probe.knn import build_bank
from maxa.probe.loader import make_loader, sequential_blocks
from maxa.probe.schedule import build_schedule
from maxa.probe.tasks import Stats, Task, fit_stats, get_task

__all__ = ["CHECKPOINT_FORMAT", "ProbeConfig", "load_checkpoint", "resume_path", "train"]

CHECKPOINT_FORMAT = 2
StepCallback = Callable[[int, float], None]


def resume_path(out: str | Path) -> Path:
    """Where a run writing `out` keeps its resumable state."""
    return Path(f"{out}.resume")


def _save_atomic(blob: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _load_state(path: Path, config: ProbeConfig, pair: StorePair) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    expected = {
        "config": config.result_fields(),
        "stores": [pair.features.fingerprint, pair.targets.fingerprint],
    }
    for key, want in expected.items():
        if state.get(key) != want:
            have = state.get(key) or {}
            if key == "config" and isinstance(have, dict):
                diff = ", ".join(
                    f"{k}: {have.get(k)!r} -> {v!r}" for k, v in want.items() if have.get(k) != v
                )
            else:
                diff = "different feature or target store"
            raise MaxaError(
                f"cannot --resume from {path}: it was saved by a different run ({diff}); "
                "delete it or rerun without --resume"
            )
    return state


def _fit(
    config: ProbeConfig,
    pair: StorePair,
    task: Task,
    stats: Stats,
    out: str,
    device: torch.device,
    *,
    progress: bool,
    callback: StepCallback | None,
) -> tuple[nn.Module, list[float], dict[str, Any]]:
    """The optimisation loop: AdamW, `config.schedule` LR, AMP on GPU, periodic resumable state."""
    c = pair.feature_shape[2]
    torch.manual_seed(config.seed)
    model = build_adapter(config.adapter, c, task.out_channels(pair.num_classes), config.adapter_options())
    set_output_bias(model, task.output_bias(stats))
    model.to(device).train()
    head = task.build_head(stats)  # training-only task parameters (instance: one class per instance)
    if head is not None:
        head.to(device).train()
    params = [*model.parameters(), *(head.parameters() if head is not None else ())]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    schedule = build_schedule(config.schedule, optimizer, config.iterations)
    amp_dtype = _autocast_dtype(device)
    scaler = torch.amp.GradScaler(enabled=amp_dtype == torch.float16)

    state_file = resume_path(out)
    start, losses = 0, []
    if config.resume and state_file.exists():
        state = _load_state(state_file, config, pair)
        model.load_state_dict(state["model"])
        if head is not None:
            head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start, losses = int(state["step"]), [float(v) for v in state["losses"]]
    elif state_file.exists():
        warnings.warn(
            f"{state_file} from an earlier run is replaced (pass --resume to continue it)", stacklevel=2
        )

    def save_state(step: int) -> None:
        blob = {
            "format": CHECKPOINT_FORMAT,
            "config": config.result_fields(),
            "stores": [pair.features.fingerprint, pair.targets.fingerprint],
            "step": step,
            "losses": losses[:step],
            "model": model.state_dict(),
            "head": head.state_dict() if head is not None else {},
            "optimizer": optimizer.state_dict(),
            "scheduler": schedule.state_dict(),
            "scaler": scaler.state_dict(),
        }
        _save_atomic(blob, state_file)

    loaded = time.perf_counter()
    loader = make_loader(
        pair,
        task,
        batch_size=config.batch_size,
        seed=config.seed,
        device=device,
        mode=config.loader,
        memory_budget_gb=config.memory_budget_gb,
        shuffle_shards=config.shuffle_shards,
        prefetch=config.prefetch,
        threads=config.read_threads,
    )
    load_seconds = time.perf_counter() - loaded
    output_size = pair.label_size
    batches = loader.batches(start)
    bar = tqdm(
        range(start, config.iterations),
        initial=start,
        total=config.iterations,
        desc=f"probe {config.adapter}/{config.task} ({loader.kind})",
        disable=not progress,
    )
    step, updating = start, False
    started = time.perf_counter()
    try:
        for step in bar:
            x, y = next(batches)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                output = model(x, output_size=output_size)
            loss = task.loss(output.float(), y)
            if not torch.isfinite(loss):
                raise MaxaError(f"training diverged at step {step} (loss {loss.item()}); lower --lr")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            updating = True  # an interrupt from here on leaves a half-updated model: not saved
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            losses.append(float(loss.item()))
            updating = False
            done = step + 1
            if config.checkpoint_every and done % config.checkpoint_every == 0 and done < config.iterations:
                save_state(done)
            if done % 10 == 0 or done == config.iterations:
                rate = (done - start) * config.batch_size / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}", samples_s=f"{rate:.0f}")
            if callback is not None:
                callback(step, losses[-1])
    except KeyboardInterrupt:
        if not updating:
            save_state(len(losses))
        raise
    finally:
        batches.close()
        bar.close()
    elapsed = time.perf_counter() - started
    steps = config.iterations - start
    info = {
        "loader": loader.kind,
        "load_seconds": load_seconds,
        "train_seconds": elapsed,
        "samples_per_second": steps * config.batch_size / elapsed if elapsed > 0 else math.nan,
        "resumed_from_step": start,
    }
    return model, losses, info


def train(
    config: ProbeConfig,
    features_url: str,
    targets_url: str,
    out: str,
    *,
    progress: bool = True,
    callback: StepCallback | None = None,
) -> dict[str, Any]:
    """Train (or, for k-NN, build), save a checkpoint (state dict + metadata) at `out`, return the metadata.

    `callback(step, loss)` runs after every optimisation step (progress reporting, tests).
    """
    task = get_task(config.task, **config.task_options())
    if not is_trainable(config.adapter):
        task.require_knn()  # before any store is read
    pair = open_pair(features_url, targets_url, config.layers(), task.target)
    if len(pair) == 0:
        raise MaxaError(f"feature store {features_url} holds no samples")
    device = resolve_device(config.device)
    num_classes = pair.num_classes
    stats = fit_stats(task, (raw for _, raw in sequential_blocks(pair, features=False)), num_classes)
    h, w, c = pair.feature_shape
    adapter_options = config.adapter_options()
    if is_trainable(config.adapter):
        threads = torch.get_num_threads()
        if config.threads:
            torch.set_num_threads(config.threads)
        try:
            model, losses, info = _fit(
                config, pair, task, stats, out, device, progress=progress, callback=callback
            )
        finally:
            torch.set_num_threads(threads)
    else:
        started = time.perf_counter()
        knn = build_bank(
            pair, task, bank_size=config.knn_bank, k=config.knn_k, seed=config.seed, progress=progress
        )
        elapsed = time.perf_counter() - started
        model, losses = knn, []
        adapter_options.update({"bank_size": int(knn.keys.shape[0]), "knn_link": knn.link})
        info = {
            "loader": "sequential",
            "load_seconds": elapsed,
            "train_seconds": 0.0,
            "samples_per_second": math.nan,
        }
    fprov = pair.features.provenance
    tprov = pair.targets.provenance
    adapter_params = count_parameters(model)
    backbone_params = int(fprov["backbone_params"])
    meta = {
        "format": CHECKPOINT_FORMAT,
        "config": asdict(config),
        "task_options": config.task_options(),
        "adapter_options": adapter_options,
        "in_channels": c,
        "out_channels": int(getattr(model, "out_channels", task.out_channels(num_classes))),
        "output_size": list(pair.label_size),
        "num_classes": num_classes,
        "class_names": list(tprov.get("class_names", [])),
        "stats": stats,
        "class_prior": stats.get("class_prior"),
        "backbone": fprov.get("name", fprov["model"]),
        "feature_store": {"url": features_url, "fingerprint": pair.features.fingerprint},
        "target_store": {"url": targets_url, "fingerprint": pair.targets.fingerprint},
        "feature_shape": [h, w, c],
        "layer": ",".join(pair.layers),
        "layers": list(pair.layers),
        "adapter_params": adapter_params,
        "backbone_params": backbone_params,
        "adapter_pct_of_backbone": 100.0 * adapter_params / max(backbone_params, 1),
        "train_samples": len(pair),
        "losses": losses,
        **info,
    }
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _save_atomic({"state_dict": state, "meta": meta}, Path(out))
    resume_path(out).unlink(missing_ok=True)
    return meta


def load_checkpoint(path: str, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the trained adapter from a checkpoint (plain tensors + JSON-like metadata only)."""
    if not Path(path).is_file():
        raise MaxaError(f"checkpoint {path} does not exist; run `maxa probe` first")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        meta = blob["meta"]
    except Exception as exc:
        raise MaxaError(f"checkpoint {path} is not a maxa checkpoint ({type(exc).__name__}: {exc})") from exc
    if meta.get("format", 0) > CHECKPOINT_FORMAT:
        raise MaxaError(f"checkpoint {path} was written by a newer maxa; upgrade maxa")
    known = {f.name for f in fields(ProbeConfig)}
    config = ProbeConfig(**{k: v for k, v in meta["config"].items() if k in known})
    options = meta.get("adapter_options") or config.adapter_options()
    model = build_adapter(config.adapter, meta["in_channels"], meta["out_channels"], options)
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval(), meta
