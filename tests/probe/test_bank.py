"""The one k-NN memory bank (probe/bank.py): sampling from stores and bounded top-k aggregation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maxa.probe.bank import ImagePatches, PatchBank, UniformPatches, collect
from maxa.probe.data import open_pair
from maxa.probe.tasks import get_task


def reference(keys, values, queries, k, temperature, num_classes):
    """Brute force in float64 against unit `keys`: sort every similarity row, weight the first k, sum their
    (one-hot) values."""
    queries = reference_unit(queries)
    out = []
    for row in queries @ keys.T:
        near = np.argsort(-row)[:k]
        w = np.ones(len(near)) if temperature is None else np.exp(row[near] / temperature)
        rows = np.eye(num_classes)[values[near]] if values.ndim == 1 else values[near]
        out.append((w[:, None] * rows).sum(0) / w.sum())
    return np.array(out)


def reference_unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("temperature", [None, 0.2])
@pytest.mark.parametrize("kind", ["vectors", "class ids"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_chunked_query_equals_brute_force(temperature, kind, dtype) -> None:
    rng = np.random.default_rng(0)
    features, queries = rng.normal(size=(53, 7)), rng.normal(size=(29, 7))
    keep = np.array([0, 2, 3, 6])
    values = rng.integers(0, 4, size=53) if kind == "class ids" else rng.normal(size=(53, 3))
    bank = PatchBank.from_features(
        torch.from_numpy(features),
        torch.from_numpy(values).float() if kind == "vectors" else torch.from_numpy(values),
        keep=torch.from_numpy(keep),
        dtype=dtype,
        num_classes=4,
    )
    assert len(bank) == 53 and bank.keys.dtype == dtype and bank.keys.shape == (53, 4)
    ks = [1, 4, 9, 60]  # 60 > bank: all of it
    out = bank.query(torch.from_numpy(queries), ks, temperature=temperature, query_chunk=6, bank_chunk=5)
    stored = bank.keys.double().numpy()  # the bank's key precision; selection and sums are the reference's
    np.testing.assert_allclose(
        stored, reference_unit(features[:, keep]), atol=1e-3 if dtype == torch.float16 else 1e-6
    )
    for k in ks:
        expected = reference(stored, values, queries[:, keep], k, temperature, 4)
        np.testing.assert_allclose(out[k].numpy(), expected, atol=1e-5)
    whole = bank.query(torch.from_numpy(queries), ks, temperature=temperature)  # one block: same answers
    for k in ks:
        torch.testing.assert_close(whole[k], out[k])


def test_both_samplings_read_the_same_patches(stores: dict[str, str]) -> None:
    """All patches of all images == a uniform draw of at least every patch; given targets == read ones."""
    task = get_task("semantic")
    pair = open_pair(stores["features_train"], stores["targets_train"], "layer_1", task.target)

    def values(raw, grid):
        return task.patch_values(raw, grid, pair.num_classes)

    uniform = collect(pair, UniformPatches(10**9, seed=0), values)
    images = collect(pair, ImagePatches(np.arange(len(pair))), values)
    for a, b in zip(uniform, images, strict=True):
        assert torch.equal(a, b)
    rows = np.array([3, 40, 41, 90])
    raw = pair.targets.read_rows("semantic", pair.target_rows[rows])
    picked = collect(pair, ImagePatches(rows), values)
    given = collect(pair, ImagePatches(rows), values, targets=raw)
    for a, b in zip(picked, given, strict=True):
        assert torch.equal(a, b)
    h, w, _ = pair.feature_shape
    valid = task.patch_values(raw, (h, w), pair.num_classes)[1].reshape(-1)
    expected = torch.from_numpy(pair.read_features(0, len(pair))[rows].reshape(-1, pair.feature_shape[2]))
    assert torch.equal(picked[0], expected[valid])


def test_uniform_sampling_is_seeded_and_bounded(stores: dict[str, str]) -> None:
    task = get_task("depth")
    pair = open_pair(stores["features_train"], stores["targets_train"], "layer_0", task.target)

    def values(raw, grid):
        return task.patch_values(raw, grid, pair.num_classes)

    first = collect(pair, UniformPatches(300, seed=4), values)
    again = collect(pair, UniformPatches(300, seed=4), values)
    assert first[0].shape == (300, 64) and first[1].shape == (300, 1)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], collect(pair, UniformPatches(300, seed=5), values)[0])
