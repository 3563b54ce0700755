"""The one training engine: K members trained on shared batches, a single run being K = 1.

Every batch read from the store (and its encoded targets) feeds all K members; each steps on it with its
own model, optimiser and random stream (probe/member.py), so a member ends bit-for-bit where training it
alone ends. Around the steps, in one place: the resumable state (probe/resume.py: saved every
`checkpoint_every` steps and on Ctrl-C, restored by `--resume` for a run and a sweep alike), the progress
bar, the caller's step callback, and the validation losses that select a sweep's member.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from tqdm import tqdm

from maxa.probe.config import ProbeConfig
from maxa.probe.data import StorePair, resolve_layers
from maxa.probe.fitting import Fit, Fitted, Job, run_info
from maxa.probe.inputs import loader_for
from maxa.probe.member import Member, loss_size, new_member
from maxa.probe.resume import restore_state, resume_path, save_state
from maxa.probe.stepping import make_stepper, resolve_mode
from maxa.probe.tasks import Task
from maxa.probe.validation import validation_losses


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


def channels_of(pair: StorePair, names: list[str]) -> torch.Tensor | None:
    """Indices of `names`' channels in the pair's concatenated features (None: all, in order)."""
    if names == pair.layers:
        return None
    offsets, at = {}, 0
    for name in pair.layers:
        width = int(pair.features.array(name).shape[-1])
        offsets[name] = (at, at + width)
        at += width
    return torch.cat([torch.arange(*offsets[name]) for name in names])


class GradientFit:
    """The strategy of every trained adapter (probe/fitting.py): members through the training loop."""

    def check(self, config: ProbeConfig, task: Task) -> None:
        """Nothing beyond ProbeConfig's own checks: every task trains."""

    def fit(self, job: Job) -> Fit:
        config, members, setup, task = job.config, job.members, job.setup, job.task
        names = [resolve_layers(setup.pair.features, c.layers()) for c in members]
        pair = setup.pair.with_layers(list(dict.fromkeys(n for group in names for n in group)))
        with cpu_threads(config.threads):
            trained = []
            for member_config, group in zip(members, names, strict=True):
                channels = channels_of(pair, group)
                width = pair.feature_shape[2] if channels is None else len(channels)
                trained.append(
                    new_member(
                        member_config, width, task, setup.stats, pair.num_classes, setup.device, channels
                    )
                )
            info, val = train_members(job, trained, pair)
        losses = val if val is not None else [None] * len(trained)
        fitted = [
            Fitted(m.config, m.model, m.losses, loss, m.config.adapter_options())
            for m, loss in zip(trained, losses, strict=True)
        ]
        return Fit(fitted, info)


def start_step(job: Job, members: list[Member], fingerprints: list[str]) -> int:
    """The step the members continue from: that of this run's saved state with `--resume`, else 0 (an
    earlier run's state is then replaced, with a warning)."""
    state_file = resume_path(job.out)
    if job.config.resume and state_file.exists():
        return restore_state(state_file, job.config, fingerprints, members)
    if state_file.exists():
        warnings.warn(
            f"{state_file} from an earlier run is replaced (pass --resume to continue it)", stacklevel=3
        )
    return 0


def step_mode(config: ProbeConfig, members: list[Member], device: torch.device) -> str:
    """How the members share a step: a single run has no one to share it with; a sweep's `--sweep-mode`."""
    if not config.is_sweep():
        return "loop"
    heads = any(member.head is not None for member in members)
    return resolve_mode(config.sweep_mode, device, len(members), torch.get_num_threads(), heads=heads)


class Progress:
    """The progress bar of a run or sweep: steps done, the best member's recent loss, samples/s."""

    def __init__(self, job: Job, members: list[Member], start: int, what: str) -> None:
        config = job.config
        self.members, self.start, self.batch_size = members, start, config.batch_size
        self.iterations, self.started = config.iterations, time.perf_counter()
        label = f"sweep {len(members)} x {what}" if config.is_sweep() else f"probe {what}"
        self.bar = tqdm(total=config.iterations, initial=start, desc=label, disable=not job.progress)

    def done(self, steps: int) -> None:
        self.bar.update(1)
        if steps % 10 == 0 or steps == self.iterations:
            rate = (steps - self.start) * self.batch_size / max(time.perf_counter() - self.started, 1e-9)
            best = min(sum(m.losses[-10:]) / len(m.losses[-10:]) for m in self.members)
            self.bar.set_postfix(loss=f"{best:.3f}", samples_s=f"{rate:.0f}")

    def close(self) -> None:
        self.bar.close()


def train_members(
    job: Job, members: list[Member], pair: StorePair
) -> tuple[dict[str, Any], list[float] | None]:
    """The loop: `iterations` steps of every member (reading `pair`, the union of their layers) from where
    a saved state left them; returns the run info and each member's validation loss (None: no hold-out)."""
    config, task, setup = job.config, job.task, job.setup
    fingerprints = [pair.features.fingerprint, pair.targets.fingerprint]
    start = start_step(job, members, fingerprints)
    mode = step_mode(config, members, setup.device)
    loaded = time.perf_counter()
    loader = loader_for(config, pair, task, setup.device, setup.holdout, progress=job.progress)
    load_seconds = time.perf_counter() - loaded
    size = loss_size(task, members[0].model, pair.label_size)  # members differ in lr, seed, layer only
    what = f"{config.adapter}/{config.task} ({loader.kind}{', ' + mode if config.is_sweep() else ''})"
    progress = Progress(job, members, start, what)
    stepper = make_stepper(mode, members, task)
    batches = loader.batches(start)
    updating = False
    started = time.perf_counter()
    try:
        for step in range(start, config.iterations):
            x, y = next(batches)
            updating = True  # an interrupt from here on leaves a half-updated model: not saved
            stepper.step(x, y, size, step)
            updating = False
            done = step + 1
            if config.checkpoint_every and done % config.checkpoint_every == 0 and done < config.iterations:
                stepper.sync()
                save_state(resume_path(job.out), config, fingerprints, members)
            progress.done(done)
            if job.callback is not None:
                job.callback(step, members[0].losses[-1])
    except KeyboardInterrupt:
        if not updating:
            stepper.sync()
            save_state(resume_path(job.out), config, fingerprints, members)
        raise
    finally:
        batches.close()
        progress.close()
        stepper.close()
    stepper.sync()
    info = run_info(
        loader.kind, load_seconds, time.perf_counter() - started, config.iterations - start, config
    )
    info["resumed_from_step"] = start
    if config.is_sweep():
        info |= {"sweep_members": len(members), "sweep_mode": mode}
    if setup.holdout is None:
        return info, None
    return info, validation_losses(members, pair, task, setup.holdout, config.batch_size, setup.device)
