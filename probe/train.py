"""`maxa probe`: train one adapter for one task from a feature store and a target store only.

No backbone runs here. The run is resumable: every `checkpoint_every` steps (and on Ctrl-C) the model,
optimizer, schedule and step go to `<out>.resume`; `--resume` continues from it to the same final weights,
because the batch of every step is a function of the seed and the step alone (probe/loader.py).
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from maxa.core import store as st
from maxa.core.checkpoint_meta import CHECKPOINT_FORMAT, CheckpointMeta
from maxa.core.device import resolve_device
from maxa.core.errors import MaxaError
from maxa.core.records import check_writable, run_id
from maxa.probe.adapters import build_adapter, count_parameters, is_trainable, set_output_bias
from maxa.probe.checkpoint import load_checkpoint, read_meta, save_checkpoint
from maxa.probe.checkpoint import save_atomic as _save_atomic
from maxa.probe.config import ProbeConfig
from maxa.probe.data import StorePair, open_pair
from maxa.probe.knn import build_bank
from maxa.probe.loader import Loader, blocks_of_rows, holdout_rows, make_loader
from maxa.probe.schedule import build_schedule
from maxa.probe.tasks import Stats, Task, fit_stats, get_task

__all__ = [
    "CHECKPOINT_FORMAT",
    "Member",
    "ProbeConfig",
    "can_resume",
    "load_checkpoint",
    "resume_path",
    "train",
]

StepCallback = Callable[[int, float], None]


def resume_path(out: str | Path) -> Path:
    """Where a run writing `out` keeps its resumable state."""
    return Path(f"{out}.resume")


def check_output(config: ProbeConfig, out: str, overwrite: bool) -> None:
    """Before any work: a finished checkpoint is never replaced without `overwrite`, `--resume` needs
    saved state, and `out` must be writable (not found after hours of training)."""
    finished = Path(out).is_file()
    if finished and not overwrite:
        try:
            rid = read_meta(out).run_id or "unknown run"
        except MaxaError:
            rid = "not a maxa checkpoint"
        what = "nothing to resume" if config.resume else "it is not replaced"
        raise MaxaError(
            f"checkpoint {out} already holds a finished run ({rid}); {what}: pass --overwrite to retrain, "
            "or choose another --out"
        )
    if config.resume and not resume_path(out).exists():
        raise MaxaError(
            f"--resume: no saved state at {resume_path(out)} (nothing was interrupted); run without --resume"
        )
    check_writable(out, "checkpoint")
    check_writable(resume_path(out), "resume state")


@functools.lru_cache(maxsize=8)
def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype of a device (None: full precision); asked once per device."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _state_difference(state: dict[str, Any], config: ProbeConfig, fingerprints: list[str]) -> str | None:
    """Why a saved resumable state belongs to another run (None: it is this run's)."""
    expected = {"config": config.result_fields(), "stores": fingerprints}
    for key, want in expected.items():
        if state.get(key) != want:
            have = state.get(key) or {}
            if key == "config" and isinstance(have, dict):
                changed = (f"{k}: {have.get(k)!r} -> {v!r}" for k, v in want.items() if have.get(k) != v)
                return ", ".join(changed)
            return "different feature or target store"
    return None


def _load_state(path: Path, config: ProbeConfig, pair: StorePair) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    diff = _state_difference(state, config, [pair.features.fingerprint, pair.targets.fingerprint])
    if diff is not None:
        raise MaxaError(
            f"cannot --resume from {path}: it was saved by a different run ({diff}); "
            "delete it or rerun without --resume"
        )
    return state


def can_resume(config: ProbeConfig, features_url: str, targets_url: str, out: str) -> bool:
    """Whether `<out>.resume` holds a state this very run saved (same result fields, same stores): what
    `maxa probe --update` (the generated DVC stage) resumes; any other state is started over."""
    path = resume_path(out)
    if config.is_sweep() or not path.is_file():
        return False
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a state cut off mid-write by a crash is started over, like any foreign state
        return False
    fingerprints = [st.open_store(features_url, "features").fingerprint]
    fingerprints.append(st.open_store(targets_url, "targets").fingerprint)
    return isinstance(state, dict) and _state_difference(state, config, fingerprints) is None


@dataclass
class Member:
    """One adapter being trained: its config, model, optimiser state and own random stream.

    Several members can share every batch (probe/sweep.py); each keeps the CPU RNG state between its
    steps, so interleaving members draws exactly what training each alone would.
    """

    config: ProbeConfig
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    channels: Tensor | None = None  # feature channels of this member's layers (None: all)
    head: nn.Module | None = None  # training-only task parameters (instance: one class per instance)
    losses: list[float] = field(default_factory=list)
    rng: Tensor = field(default_factory=torch.get_rng_state)

    def use(self, task: Task) -> None:
        """Point the task at this member's own head before its loss is computed (members share a task)."""
        if self.head is not None:
            task.head = self.head


def new_member(
    config: ProbeConfig,
    in_channels: int,
    task: Task,
    stats: Stats,
    num_classes: int,
    device: torch.device,
    channels: Tensor | None = None,
) -> Member:
    """A freshly initialised adapter (seeded by config.seed) with AdamW and `config.schedule`."""
    torch.manual_seed(config.seed)
    model = build_adapter(
        config.adapter, in_channels, task.out_channels(num_classes), config.adapter_options()
    )
    set_output_bias(model, task.output_bias(stats))
    model.to(device).train()
    head = task.build_head(stats)
    if head is not None:
        head.to(device).train()
    params = [*model.parameters(), *(head.parameters() if head is not None else ())]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    schedule = build_schedule(config.schedule, optimizer, config.iterations)
    scaler = torch.amp.GradScaler(enabled=_autocast_dtype(device) == torch.float16)
    if channels is not None:
        channels = channels.to(device)  # indexed every step: kept where the batches are
    return Member(config, model, optimizer, schedule, scaler, channels, head, [], torch.get_rng_state())


def loss_size(task: Task, model: nn.Module, label_size: tuple[int, int]) -> tuple[int, int]:
    """The output size the training loss sees: the task picks the label size or the adapter's own."""
    native = getattr(model, "native_size", None)
    return task.loss_size((int(label_size[0]), int(label_size[1])), native)


def _select(channels: Tensor | None, x: Tensor) -> Tensor:
    return x if channels is None else x.index_select(-1, channels.to(x.device))


def train_step(
    member: Member,
    x: Tensor,
    y: Tensor,
    task: Task,
    output_size: tuple[int, int],
    step: int,
    *,
    swap_rng: bool = True,
) -> float:
    """One optimisation step of one member on a (possibly shared) batch; returns its loss.

    `swap_rng=False` leaves the global CPU random stream alone (members stepping in parallel threads,
    whose caller checks that no step draws from it).
    """
    amp_dtype = _autocast_dtype(x.device)
    if swap_rng:
        torch.set_rng_state(member.rng)
    member.use(task)
    with torch.autocast(x.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        output = member.model(_select(member.channels, x), output_size=output_size)
    loss = task.loss(output.float(), y)
    if not torch.isfinite(loss):
        raise MaxaError(
            f"training diverged at step {step} (loss {loss.item()}) with lr {member.config.lr}; lower --lr"
        )
    member.optimizer.zero_grad(set_to_none=True)
    member.scaler.scale(loss).backward()
    member.scaler.step(member.optimizer)
    member.scaler.update()
    member.schedule.step()
    if swap_rng:
        member.rng = torch.get_rng_state()
    value = float(loss.item())
    member.losses.append(value)
    return value


@torch.inference_mode()
def validation_losses(
    members: list[Member],
    pair: StorePair,
    task: Task,
    rows: np.ndarray,
    batch_size: int,
    device: torch.device,
) -> list[float]:
    """Mean task loss of each member over the held-out training rows (one read shared by all)."""
    totals, count = [0.0] * len(members), 0
    for member in members:
        member.model.eval()
    for feats, raw in blocks_of_rows(pair, rows, keep=True):
        assert feats is not None
        encoded = task.encode(raw)
        for start in range(0, len(raw), batch_size):
            x = torch.from_numpy(feats[start : start + batch_size]).to(device)
            y = torch.from_numpy(encoded[start : start + batch_size]).to(device)
            for i, member in enumerate(members):
                member.use(task)
                size = loss_size(task, member.model, pair.label_size)
                output = member.model(_select(member.channels, x), output_size=size)
                totals[i] += float(task.loss(output.float(), y)) * len(y)
            count += len(y)
    for member in members:
        member.model.train()
    return [t / max(count, 1) for t in totals]


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
    holdout: np.ndarray | None = None,
) -> tuple[nn.Module, list[float], dict[str, Any]]:
    """The optimisation loop of one adapter: AdamW, its schedule, AMP on GPU, periodic resumable state."""
    c = pair.feature_shape[2]
    member = new_member(config, c, task, stats, pair.num_classes, device)
    model, optimizer, schedule, scaler = member.model, member.optimizer, member.schedule, member.scaler

    state_file = resume_path(out)
    start = 0
    if config.resume and state_file.exists():
        state = _load_state(state_file, config, pair)
        model.load_state_dict(state["model"])
        if member.head is not None:
            member.head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start, member.losses = int(state["step"]), [float(v) for v in state["losses"]]
        if "rng" in state:
            member.rng = state["rng"]
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
            "losses": member.losses[:step],
            "model": model.state_dict(),
            "head": member.head.state_dict() if member.head is not None else {},
            "optimizer": optimizer.state_dict(),
            "scheduler": schedule.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": member.rng,
        }
        _save_atomic(blob, state_file)

    loaded = time.perf_counter()
    loader = loader_for(config, pair, task, device, holdout, progress=progress)
    load_seconds = time.perf_counter() - loaded
    output_size = loss_size(task, model, pair.label_size)
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
            updating = True  # an interrupt from here on leaves a half-updated model: not saved
            train_step(member, x, y, task, output_size, step)
            updating = False
            losses = member.losses
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
            save_state(len(member.losses))
        raise
    finally:
        batches.close()
        bar.close()
    info = run_info(loader, load_seconds, time.perf_counter() - started, config.iterations - start, config)
    info["resumed_from_step"] = start
    if holdout is not None:
        info["val_loss"] = validation_losses([member], pair, task, holdout, config.batch_size, device)[0]
    return model, member.losses, info


def run_info(
    loader: Loader, load_seconds: float, elapsed: float, steps: int, config: ProbeConfig
) -> dict[str, Any]:
    """How a run (or a sweep) read and trained: the loader, its load time, training time and rate."""
    return {
        "loader": loader.kind,
        "load_seconds": load_seconds,
        "train_seconds": elapsed,
        "samples_per_second": steps * config.batch_size / elapsed if elapsed > 0 else math.nan,
        "resumed_from_step": 0,
    }


@contextmanager
def cpu_threads(count: int) -> Iterator[None]:
    """torch's CPU threads set to `count` for the block (0: left as they are), restored afterwards."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class RunSetup:
    """What a run (or every member of a sweep) trains from."""

    pair: StorePair
    device: torch.device
    holdout: np.ndarray | None
    stats: Stats


def setup_run(
    config: ProbeConfig, features_url: str, targets_url: str, task: Task, layers: str | list[str]
) -> RunSetup:
    """Join the stores (refusing empty ones, or ones whose provenance lacks what checkpoints record),
    resolve the device, hold out the validation rows and fit the target statistics on the others."""
    pair = open_pair(features_url, targets_url, layers, task.target)
    if len(pair) == 0:
        raise MaxaError(f"feature store {features_url} holds no samples")
    for name in ("model", "backbone_params"):  # what every checkpoint records of the backbone
        pair.fprov.need(name, f"feature store {features_url}")
    holdout = holdout_of(config, pair, task)
    return RunSetup(pair, resolve_device(config.device), holdout, training_stats(task, pair, holdout))


def loader_for(
    config: ProbeConfig,
    pair: StorePair,
    task: Task,
    device: torch.device,
    holdout: np.ndarray | None,
    *,
    progress: bool = True,
) -> Loader:
    """The batches a run (or a whole sweep: one read for every member) trains on, held-out rows excluded."""
    return make_loader(
        pair,
        task,
        batch_size=config.batch_size,
        seed=config.batch_seed(),
        exclude=holdout,
        device=device,
        mode=config.loader,
        memory_budget_gb=config.memory_budget_gb,
        shuffle_shards=config.shuffle_shards,
        prefetch=config.prefetch,
        threads=config.read_threads,
        progress=progress,
    )


def training_stats(task: Task, pair: StorePair, holdout: np.ndarray | None) -> Stats:
    """Target statistics (output bias, constant baseline) of the training rows only."""
    blocks = blocks_of_rows(pair, holdout, keep=False, features=False)
    return fit_stats(task, (raw for _, raw in blocks), pair.num_classes)


def holdout_of(config: ProbeConfig, pair: StorePair, task: Task) -> np.ndarray | None:
    """The training rows held out for model selection (none without --val-fraction)."""
    if config.val_fraction <= 0:
        return None
    if not task.validates:
        raise MaxaError(
            f"--val-fraction: the {task.name} task has no loss on held-out images ({task.validates_why}); "
            "set val_fraction 0 for it (a seeds-only sweep needs none)"
        )
    return holdout_rows(len(pair), config.val_fraction, config.val_seed)


def checkpoint_meta(
    config: ProbeConfig,
    pair: StorePair,
    task: Task,
    stats: Stats,
    model: nn.Module,
    losses: list[float],
    info: dict[str, Any],
    adapter_options: dict[str, Any],
    urls: tuple[str, str],
    holdout: np.ndarray | None,
    val_loss: float | None = None,
) -> CheckpointMeta:
    """Everything evaluation and the report need to rebuild and describe the adapter."""
    features_url, targets_url = urls
    h, w, c = pair.feature_shape
    num_classes = pair.num_classes
    fprov, tprov = pair.fprov, pair.tprov
    adapter_params = count_parameters(model)
    backbone_params = int(fprov.need("backbone_params", f"feature store {features_url}"))
    backbone = fprov.backbone
    held = 0 if holdout is None else len(holdout)
    return CheckpointMeta(
        run_id=run_id(
            backbone,
            config.adapter,
            config.task,
            config.result_fields(),
            pair.features.fingerprint,
            pair.targets.fingerprint,
        ),
        config=asdict(config),
        task_options=config.task_options(),
        adapter_options=adapter_options,
        in_channels=c,
        out_channels=int(getattr(model, "out_channels", task.out_channels(num_classes))),
        output_size=list(pair.label_size),
        num_classes=num_classes,
        class_names=list(tprov.class_names),
        stats=stats,
        backbone=backbone,
        backbone_fingerprint=fprov.backbone_fingerprint,
        backbone_fields=fprov.backbone_fields,  # what a refused join names when the fingerprint differs
        dataset=tprov.dataset.name,
        split=tprov.dataset.split,  # evaluate refuses this split unless told (--allow-training-split)
        feature_store={"url": features_url, "fingerprint": pair.features.fingerprint},
        target_store={"url": targets_url, "fingerprint": pair.targets.fingerprint},
        feature_shape=[h, w, c],
        layers=list(pair.layers),
        adapter_params=adapter_params,
        backbone_params=backbone_params,
        adapter_pct_of_backbone=adapter_pct(adapter_params, backbone_params),
        train_samples=len(pair) - held,
        validation={
            "fraction": config.val_fraction,
            "seed": config.val_seed,
            "samples": held,
            "data_seed": config.batch_seed(),
            "loss": val_loss,
        },
        losses=losses,
        other=info,
    )


NO_BACKBONE = "the feature store records no backbone parameters (a control store, or one written by hand)"
"""Why `adapter_pct_of_backbone` is null (the metrics record's `nulls` says so)."""


def adapter_pct(adapter_params: int, backbone_params: int) -> float | None:
    """The adapter's size in % of the backbone's; None when the store names no backbone parameters."""
    return 100.0 * adapter_params / backbone_params if backbone_params > 0 else None


def save_model(model: nn.Module, meta: CheckpointMeta, out: str | Path) -> None:
    """The adapter's tensors (on CPU) and its metadata record, written atomically."""
    save_checkpoint(out, {k: v.detach().cpu() for k, v in model.state_dict().items()}, meta)


def train(
    config: ProbeConfig,
    features_url: str,
    targets_url: str,
    out: str,
    *,
    progress: bool = True,
    callback: StepCallback | None = None,
    overwrite: bool = False,
) -> CheckpointMeta:
    """Train (or, for k-NN, build), save a checkpoint (state dict + metadata) at `out`, return the metadata.

    A config with sweep fields trains its whole grid in one pass (probe/sweep.py); `out` then holds the
    member chosen on the validation hold-out. `callback(step, loss)` runs after every optimisation step.
    A finished checkpoint at `out` is only replaced with `overwrite`.
    """
    check_output(config, out, overwrite)
    if config.is_sweep():
        from maxa.probe.sweep import train_sweep

        if callback is not None:
            raise MaxaError("a step callback follows one run; a sweep (--sweep-*) trains several at once")
        return train_sweep(config, features_url, targets_url, out, progress=progress)
    task = get_task(config.task, **config.task_options())
    if not is_trainable(config.adapter):
        task.require_knn()  # before any store is read
    setup = setup_run(config, features_url, targets_url, task, config.layers())
    pair, device, holdout, stats = setup.pair, setup.device, setup.holdout, setup.stats
    adapter_options = config.adapter_options()
    if is_trainable(config.adapter):
        with cpu_threads(config.threads):
            model, losses, info = _fit(
                config, pair, task, stats, out, device, progress=progress, callback=callback, holdout=holdout
            )
    else:
        if holdout is not None:
            raise MaxaError("--val-fraction applies to trained adapters; the k-NN bank is not trained")
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
    val_loss = info.pop("val_loss", None)
    urls = (features_url, targets_url)
    meta = checkpoint_meta(
        config, pair, task, stats, model, losses, info, adapter_options, urls, holdout, val_loss
    )
    save_model(model, meta, out)
    resume_path(out).unlink(missing_ok=True)
    return meta
