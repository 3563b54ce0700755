"""The k-NN baseline behind the adapter interface: what it cannot do is refused before a store is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from maxa.core.errors import MaxaError
from maxa.probe.adapter_specs import ADAPTERS
from maxa.probe.bank_fit import BankFit
from maxa.probe.config import ProbeConfig
from maxa.probe.engine import GradientFit
from maxa.probe.train import strategy_for, train


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sweep_seeds": "0,1"}, "--adapter knn is not trained: there is nothing to sweep"),
        ({"val_fraction": 0.25}, "--val-fraction applies to trained adapters; the k-NN bank is not trained"),
        ({"task": "boundary"}, "k-NN baseline does not support task 'boundary'"),
    ],
)
def test_knn_refuses_before_any_store_is_read(tmp_path: Path, options: dict, message: str) -> None:
    missing = str(tmp_path / "no_such_store.zarr")  # reading it would fail with another message
    with pytest.raises(MaxaError, match=message):
        train(ProbeConfig(adapter="knn", **options), missing, missing, str(tmp_path / "m.pt"), progress=False)


def test_each_adapter_has_the_strategy_its_entry_declares() -> None:
    assert isinstance(strategy_for("knn"), BankFit)
    assert isinstance(strategy_for("maxa"), GradientFit) and isinstance(strategy_for("linear"), GradientFit)
    assert all(isinstance(strategy_for(n), BankFit) != ADAPTERS.get(n).trainable for n in ADAPTERS.names())
