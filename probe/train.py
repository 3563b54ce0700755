"""`maxa probe`: fit one adapter (or a sweep's grid of them) for one task from a feature store and a
target store only.

No backbone runs here. The adapter's strategy (probe/fitting.py) fits it: every trained adapter goes
through the one training engine (probe/engine.py), which is resumable: every `checkpoint_every` steps
(and on Ctrl-C) every member's state goes to `<out>.resume`, and `--resume` continues from it to the same
final weights; the k-NN baseline fills a memory bank. A single run is written to `out`; a sweep writes
every member and its choice (probe/sweep.py).
"""

from __future__ import annotations

from pathlib import Path

from maxa.core.checkpoint_meta import CheckpointMeta
from maxa.core.errors import MaxaError
from maxa.core.records import check_writable
from maxa.core.registry import resolve
from maxa.probe.adapter_specs import ADAPTERS
from maxa.probe.checkpoint import load_checkpoint, read_meta
from maxa.probe.config import ProbeConfig
from maxa.probe.fitting import Job, StepCallback, Strategy
from maxa.probe.inputs import setup_run
from maxa.probe.record import checkpoint_meta, save_model
from maxa.probe.resume import can_resume, resume_path
from maxa.probe.sweep import write_sweep
from maxa.probe.tasks import get_task

__all__ = ["ProbeConfig", "can_resume", "load_checkpoint", "resume_path", "strategy_for", "train"]


def strategy_for(adapter: str) -> Strategy:
    """How the adapter `adapter` gets its weights, as its registry entry declares (`fit`): trained by the
    engine (probe/engine.py), or built from a memory bank (probe/bank_fit.py)."""
    strategy: Strategy = resolve(ADAPTERS.get(adapter).fit)()
    return strategy


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
    """Fit, save a checkpoint (state dict + metadata) at `out`, return the metadata.

    A config with sweep fields trains its whole grid in one pass; `out` then holds the member chosen on
    the validation hold-out. `callback(step, loss)` runs after every optimisation step of a single run.
    A finished checkpoint at `out` is only replaced with `overwrite`.
    """
    check_output(config, out, overwrite)
    if config.is_sweep() and callback is not None:
        raise MaxaError("a step callback follows one run; a sweep (--sweep-*) trains several at once")
    task = get_task(config.task, **config.task_options())
    strategy = strategy_for(config.adapter)
    strategy.check(config, task)  # before any store is read
    members = config.members() if config.is_sweep() else [config]
    setup = setup_run(config, features_url, targets_url, task, members[0].layers())
    fit = strategy.fit(Job(config, members, setup, task, out, progress, callback))
    urls = (features_url, targets_url)
    if config.is_sweep():
        meta = write_sweep(config, fit, setup, task, urls, out)
    else:
        (fitted,) = fit.fitted
        meta = checkpoint_meta(fitted, setup, task, dict(fit.info), urls)
        save_model(fitted.model, meta, out)
    resume_path(out).unlink(missing_ok=True)
    return meta
