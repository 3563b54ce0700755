"""The k-NN baseline's strategy behind the adapter interface (probe/fitting.py): a memory bank filled in
one pass over the training store (probe/knn.py). Nothing is trained, so there is nothing to sweep, resume
or validate, and a config asking for that is refused before any store is read.
"""

from __future__ import annotations

import math
import time

from maxa.core.errors import MaxaError
from maxa.probe.config import ProbeConfig
from maxa.probe.fitting import Fit, Fitted, Job
from maxa.probe.knn import build_bank
from maxa.probe.tasks import Task


class BankFit:
    """The k-NN baseline's strategy: a memory bank filled in one pass over the training store."""

    def check(self, config: ProbeConfig, task: Task) -> None:
        if config.is_sweep():
            raise MaxaError(f"--adapter {config.adapter} is not trained: there is nothing to sweep")
        task.require_knn()
        if config.val_fraction > 0:
            raise MaxaError("--val-fraction applies to trained adapters; the k-NN bank is not trained")

    def fit(self, job: Job) -> Fit:
        config, started = job.config, time.perf_counter()
        bank = build_bank(
            job.setup.pair,
            job.task,
            bank_size=config.knn_bank,
            k=config.knn_k,
            seed=config.seed,
            progress=job.progress,
        )
        elapsed = time.perf_counter() - started
        options = config.adapter_options() | {"bank_size": int(bank.keys.shape[0]), "knn_link": bank.link}
        info = {
            "loader": "sequential",
            "load_seconds": elapsed,
            "train_seconds": 0.0,
            "samples_per_second": math.nan,
        }
        return Fit([Fitted(config, bank, [], None, options)], info)
