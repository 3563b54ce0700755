"""k-NN label transfer: the bank, the neighbour vote and the state-dict round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maxa.probe.adapters import build_adapter, count_parameters
from maxa.probe.data import open_pair
from maxa.probe.knn import KnnProbe, build_bank
from maxa.probe.tasks import get_task


def test_neighbour_vote_by_cosine_similarity() -> None:
    probe = KnnProbe(2, 3, bank_size=0, k=2)
    keys = torch.tensor([[1.0, 0.0], [10.0, 1.0], [0.0, 1.0], [-1.0, 0.0]])  # scale must not matter
    values = torch.eye(3)[[0, 0, 1, 2]]
    probe.set_bank(keys, values)
    queries = torch.tensor([[3.0, 0.1], [0.1, 2.0]])
    torch.testing.assert_close(probe.neighbour_mean(queries), torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0]]))
    out = probe(queries.view(1, 1, 2, 2), output_size=(1, 2))  # log vote fractions, floored
    assert out.shape == (1, 3, 1, 2)
    assert out.argmax(dim=1).tolist() == [[[0, 0]]]
    assert out[0, 2, 0, 0].item() == pytest.approx(np.log(1e-4))
    assert count_parameters(probe) == 0


def test_training_patches_find_their_own_labels(stores: dict[str, str]) -> None:
    """With k=1 and every patch in the bank, a training patch's output is its own (mode) label."""
    task = get_task("semantic")
    pair = open_pair(stores["features_train"], stores["targets_train"], "layer_0", task.target)
    probe = build_bank(pair, task, bank_size=10**6, k=1, seed=0, progress=False)
    raw = pair.read_targets(0, 16)
    labels, valid = task.patch_values(raw, (8, 8), pair.num_classes)
    assert probe.keys.shape[0] == int(
        sum(task.patch_values(pair.read_targets(a, b), (8, 8), 4)[1].sum() for a, b in pair.shard_ranges())
    )
    votes = probe(torch.from_numpy(pair.read_features(0, 16)))  # no output size: the feature grid
    agree = (votes.argmax(dim=1) == labels.argmax(dim=-1))[valid]
    assert agree.float().mean() > 0.99  # exact up to duplicate features with different labels


def test_bank_is_bounded_and_seeded(stores: dict[str, str]) -> None:
    task = get_task("depth")
    pair = open_pair(stores["features_train"], stores["targets_train"], "layer_1", task.target)
    first = build_bank(pair, task, bank_size=500, k=3, seed=1, progress=False)
    again = build_bank(pair, task, bank_size=500, k=3, seed=1, progress=False)
    other = build_bank(pair, task, bank_size=500, k=3, seed=2, progress=False)
    assert first.keys.shape == (500, 32) and first.values.shape == (
        500,
        1,
    )  # synthetic depth is never invalid
    assert torch.equal(first.keys, again.keys) and not torch.equal(first.keys, other.keys)
    assert float(first.values.min()) > 0.0


def test_state_dict_round_trip_through_the_registry() -> None:
    probe = KnnProbe(4, 2, bank_size=0, k=3, link="identity")
    probe.set_bank(torch.randn(20, 4), torch.rand(20, 2))
    rebuilt = build_adapter("knn", 4, 2, {"bank_size": 20, "knn_k": 3, "knn_link": "identity"})
    rebuilt.load_state_dict(probe.state_dict())
    x = torch.randn(2, 3, 3, 4)
    torch.testing.assert_close(rebuilt(x, output_size=(6, 6)), probe(x, output_size=(6, 6)))
