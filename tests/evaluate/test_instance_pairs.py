"""Instance-awareness scores beside deap's ARI: the matched-distance pair AUC and foreground-only ARI."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from maxa.core.positional import sincos_2d
from maxa.evaluate.instance_pairs import matched_distance_auc
from maxa.evaluate.metrics import InstanceARI
from maxa.extract.datasets import build_dataset


def _exhaustive_auc(embedding: np.ndarray, ids: np.ndarray, foreground: np.ndarray) -> float:
    """Every foreground pair, every (same, different) comparison at equal rounded distance, by loops."""
    points = list(zip(*np.nonzero(foreground), strict=True))
    by_distance: dict[int, tuple[list[float], list[float]]] = {}
    for (ya, xa), (yb, xb) in itertools.combinations(points, 2):
        d = int(np.rint(np.hypot(ya - yb, xa - xb)))
        closeness = -float(np.linalg.norm(embedding[:, ya, xa] - embedding[:, yb, xb]))
        same, different = by_distance.setdefault(d, ([], []))
        (same if ids[ya, xa] == ids[yb, xb] else different).append(closeness)
    wins = total = 0.0
    for same, different in by_distance.values():
        for s in same:
            for o in different:
                wins += 1.0 if s > o else 0.5 if s == o else 0.0
                total += 1
    return wins / total


def test_sampled_auc_equals_the_exhaustive_definition() -> None:
    rng = np.random.default_rng(0)
    ids = np.zeros((12, 12), np.int64)
    ids[1:6, 1:7], ids[6:11, 3:11], ids[2:5, 8:11] = 1, 2, 3
    embedding = rng.normal(0, 1, (4, 12, 12)) + 1.5 * np.stack([ids == k for k in (1, 2, 3, 0)])
    foreground = ids > 0
    expected = _exhaustive_auc(embedding, ids, foreground)
    assert 0.6 < expected < 0.95
    sampled = matched_distance_auc(embedding, ids, foreground, pairs=400_000, seed=1)
    assert sampled == pytest.approx(expected, abs=0.01)
    single = np.where(foreground, 1, 0)
    assert matched_distance_auc(embedding, single, foreground) is None  # no different-instance pair


def _scores(kind: str, images: int = 12) -> dict[str, float]:
    """The instance scores of an embedding at the demo's 8x8 patch grid over synthetic instance maps."""
    dataset = build_dataset("synthetic", split="val", num_images=images, image_size=128)
    rng = np.random.default_rng(0)
    metric = InstanceARI(size=56, n_init=2)
    grid = 8
    for i in range(images):
        ids = np.asarray(dataset[i].targets["instances"])
        centres = np.arange(grid) * ids.shape[0] // grid + ids.shape[0] // (2 * grid)
        patch_ids = ids[np.ix_(centres, centres)]
        if kind == "instances":  # a random code per object, none for the background
            codes = rng.normal(0, 1, (int(ids.max()) + 1, 8))
            codes[0] = 0
            embedding = codes[patch_ids].transpose(2, 0, 1) + rng.normal(0, 0.1, (8, grid, grid))
        elif kind == "noise":
            embedding = rng.normal(0, 1, (8, grid, grid))
        elif kind == "position":
            embedding = sincos_2d(grid, grid, 16).numpy().reshape(grid, grid, 16).transpose(2, 0, 1)
        else:  # pixel coordinates
            embedding = np.stack(np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")).astype(float)
        metric.update_image(embedding.astype(np.float32), ids)
    return metric.compute()


@pytest.mark.heavy
def test_instance_codes_beat_noise_and_position_by_a_wide_margin() -> None:
    truth = _scores("instances")
    controls = {kind: _scores(kind) for kind in ("noise", "position", "coordinates")}
    assert truth["pair_auc"] > 0.65
    for kind, scores in controls.items():
        assert abs(scores["pair_auc"] - 0.5) < 0.06, kind
        assert truth["pair_auc"] - scores["pair_auc"] > 0.15, kind
    # why the variant exists: deap's ARI gives coordinates alone most of what the instances get
    assert controls["coordinates"]["ari"] > 0.75 * truth["ari"]


def test_foreground_ari_clusters_the_foreground_only() -> None:
    ids = np.zeros((32, 32), np.int64)
    ids[2:14, 2:14], ids[18:30, 18:30] = 1, 2
    # The background holds two far-apart blobs; the objects differ only slightly: k-means over every
    # pixel spends both clusters on the background, over the foreground it separates the objects.
    embedding = np.zeros((1, 32, 32))
    embedding[0][ids == 2] = 1.0
    embedding[0, 20:, :8] = 40.0
    metric = InstanceARI(size=32, n_init=3)
    metric.update_image(embedding, ids)
    scores = metric.compute()
    assert scores["ari_fg"] == pytest.approx(1.0)
    assert scores["ari"] < 0.5
