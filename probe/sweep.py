"""`maxa probe` with a grid: what a sweep of K adapters (layers x learning rates x seeds) writes.

The members are trained together by the one training engine (probe/engine.py: one pass over the store,
every member on every batch, each ending bit-for-bit where training it alone ends; resumable like a
single run). The batch order is seeded by the grid's shared `data_seed` (default: `--seed`), recorded in
every member's config. How the members share a step is `--sweep-mode` (probe/stepping.py); the (layer, lr)
is chosen on the validation hold-out of the training split (probe/validation.py).

On disk: every member is a normal checkpoint `<out>.sweep/<member>.pth` with its own run id and config;
`out` is a copy of the chosen member with the first seed, whose `meta["sweep"]` records the grid, every
member's validation loss and checkpoint, the choice, and the chosen member's checkpoints over all seeds
(which `maxa evaluate` scores to give mean, std and interval over seeds).
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from maxa.core.checkpoint_meta import CheckpointMeta
from maxa.probe.config import ProbeConfig
from maxa.probe.fitting import Fit
from maxa.probe.inputs import RunSetup
from maxa.probe.record import checkpoint_meta, save_model
from maxa.probe.tasks import Task
from maxa.probe.validation import CRITERION, choose, constant_val_loss

__all__ = ["CRITERION", "MEMBER_SUFFIX", "choose", "member_name", "sweep_dir", "write_sweep"]

MEMBER_SUFFIX = ".pth"
"""Member checkpoints are `.pth`, so tools collecting a folder's `*.pt` runs (`maxa plots --checkpoints
models`) see the chosen runs, not every member."""


def sweep_dir(out: str | Path) -> Path:
    """The folder holding every member checkpoint of the sweep writing `out`."""
    return Path(f"{Path(out).with_suffix('')}.sweep")


def member_name(config: ProbeConfig) -> str:
    layer = re.sub(r"[^A-Za-z0-9.-]+", "+", config.layer)
    return f"layer{layer}_lr{config.lr:g}_seed{config.seed}"


def write_sweep(
    config: ProbeConfig, fit: Fit, setup: RunSetup, task: Task, urls: tuple[str, str], out: str
) -> CheckpointMeta:
    """Save every member, copy the chosen one to `out`; return its metadata."""
    # A member without a hold-out has no validation loss: NaN in the sweep record and member checkpoints.
    fitted = [f if f.val_loss is not None else replace(f, val_loss=math.nan) for f in fit.fitted]
    configs = [f.config for f in fitted]
    val = [float(f.val_loss) for f in fitted if f.val_loss is not None]
    layer, lr = choose(configs, val)
    folder = sweep_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    metas = []
    for member in fitted:
        mc = member.config
        meta = checkpoint_meta(member, setup, task, dict(fit.info), urls)
        path = folder / f"{member_name(mc)}{MEMBER_SUFFIX}"
        save_model(member.model, meta, path)
        metas.append(meta)
        records.append(
            {
                "run_id": meta.run_id,
                "layer": mc.layer,
                "lr": mc.lr,
                "seed": mc.seed,
                "val_loss": member.val_loss,
                "checkpoint": str(path),
            }
        )
    chosen = [i for i, c in enumerate(configs) if (c.layer, c.lr) == (layer, lr)]
    mean_val = float(np.mean([val[i] for i in chosen]))
    holdout = setup.holdout
    constant = (
        None
        if holdout is None
        else constant_val_loss(setup.pair, task, setup.stats, holdout, config.batch_size)
    )
    sweep = {
        "grid": {"layers": config.grid_layers(), "lrs": config.grid_lrs(), "seeds": config.grid_seeds()},
        "data_seed": config.batch_seed(),
        "val_fraction": config.val_fraction,
        "val_seed": config.val_seed,
        "val_samples": 0 if holdout is None else len(holdout),
        "criterion": CRITERION,
        "members": records,
        "chosen": {
            "layer": layer,
            "lr": lr,
            "mean_val_loss": mean_val,
            "run_ids": [records[i]["run_id"] for i in chosen],
            # Selection never hides a probe that lost to the constant it started from.
            "worse_than_constant": None if constant is None else mean_val > constant,
        },
        "constant_val_loss": constant,
        "seed_checkpoints": [records[i]["checkpoint"] for i in chosen],
    }
    meta = replace(metas[chosen[0]], sweep=sweep)
    save_model(fitted[chosen[0]].model, meta, out)
    return meta
