"""Instance retrieval (evaluate/local/retrieval.py): pooling, ranking metrics and matching by id."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maxa.core.errors import MaxaError
from maxa.evaluate.local.config import RetrievalConfig
from maxa.evaluate.local.retrieval import evaluate_retrieval, pool, ranking_scores
from maxa.probe.bank import unit
from tests.kit.stores import BACKBONE


def test_pooling_mean_gem_and_tiles_against_hand_computation() -> None:
    x = torch.arange(2 * 4 * 4 * 3, dtype=torch.float32).reshape(2, 4, 4, 3)
    assert torch.allclose(pool(x)[:, 0], x.mean((1, 2)))
    gem = pool(x, "gem", p=3.0)[:, 0]
    assert torch.allclose(gem, x.clamp(min=1e-6).pow(3).mean((1, 2)).pow(1 / 3))
    tiles = pool(x, tiles=2)
    assert tiles.shape == (2, 4, 3)
    assert torch.allclose(tiles[:, 3], x[:, 2:, 2:].mean((1, 2)))  # bottom-right tile, row-major
    with pytest.raises(MaxaError, match="--tiles 5"):
        pool(x, tiles=5)


def test_ranking_scores_from_known_ranks() -> None:
    gallery = unit(torch.eye(4))
    # One query: similarities 0.9 > 0.5 > 0.3 (relevant) > 0.1 -> first relevant at rank 3.
    query = torch.tensor([[0.9, 0.5, 0.3, 0.1]])
    scores = ranking_scores(query, gallery, [[2]], [1, 5])
    assert scores["recall@1"] == 0.0 and scores["recall@5"] == 1.0
    assert scores["map"] == pytest.approx(1 / 3)
    # Two relevant items at ranks 1 and 3: AP = (1/1 + 2/3) / 2.
    assert ranking_scores(query, gallery, [[0, 2]], [1])["map"] == pytest.approx((1 + 2 / 3) / 2)


def test_ties_rank_irrelevant_items_first() -> None:
    constant = unit(torch.ones(5, 3))
    scores = ranking_scores(constant[:1], constant, [[2]], [1, 5])
    assert scores["recall@1"] == 0.0
    assert scores["mean_first_rank"] == 5.0


def _gallery(n: int = 12, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 4, 4, 16))


def _queries(gallery: np.ndarray, order: np.ndarray, noise: float = 0.05, seed: int = 1) -> np.ndarray:
    return gallery[order] + np.random.default_rng(seed).normal(0.0, noise, size=gallery[order].shape)


def test_noisy_copies_find_their_source_and_permuted_ones_do_not(make_stores) -> None:
    gallery = _gallery()
    g_url, _ = make_stores("gallery", {"layer_11": gallery})
    order = np.random.default_rng(2).permutation(len(gallery))
    ids = [f"aug-noise-fakeset-val-{i:04d}" for i in order]
    q_url, _ = make_stores("queries", {"layer_11": _queries(gallery, order)}, ids=ids, dataset="augmented")
    metrics = evaluate_retrieval(RetrievalConfig(device="cpu"), g_url, q_url, progress=False)
    scores = metrics["scores"]["layers"]["layer_11"]
    assert scores["recall@1"] == 1.0 and scores["map"] == pytest.approx(1.0)
    assert metrics["primary"]["name"] == "map" and metrics["primary"]["value"] == pytest.approx(1.0)
    assert metrics["protocol"]["augmentations"] == ["noise"] and metrics["protocol"]["queries"] == 12
    assert (metrics["task"], metrics["dataset"], metrics["adapter"]) == ("retrieval", "fakeset", "none")

    # the interval: a bootstrap over source images, inside [0, 1], around a perfect score a point
    interval = metrics["uncertainty"]["map"]
    assert interval["low"] == interval["high"] == pytest.approx(1.0) and interval["n"] == len(gallery)

    shuffled = _queries(gallery, np.roll(order, 1))  # features of another image under each id
    p_url, _ = make_stores("permuted", {"layer_11": shuffled}, ids=ids, dataset="augmented")
    wrong = evaluate_retrieval(RetrievalConfig(device="cpu"), g_url, p_url, progress=False)
    assert wrong["scores"]["layers"]["layer_11"]["recall@1"] < 0.2
    assert wrong["scores"]["layers"]["layer_11"]["map"] < 0.5
    spread = wrong["uncertainty"]["map"]
    assert 0.0 <= spread["low"] < wrong["primary"]["value"] < spread["high"] <= 1.0
    assert set(wrong["uncertainty"]) >= {"map", "recall@1", "mean_first_rank"}


def test_tiles_must_find_the_same_tile_of_the_source(make_stores) -> None:
    gallery = _gallery(6)
    g_url, _ = make_stores("gallery", {"layer_11": gallery})
    ids = [f"aug-blur-fakeset-val-{i:04d}" for i in range(6)]
    q_url, _ = make_stores(
        "queries", {"layer_11": _queries(gallery, np.arange(6))}, ids=ids, dataset="augmented"
    )
    tiled = evaluate_retrieval(RetrievalConfig(tiles=2, device="cpu"), g_url, q_url, progress=False)
    assert tiled["scores"]["layers"]["layer_11"]["recall@1"] == 1.0
    assert tiled["protocol"]["tiles"] == 2
    crops = [f"aug-crop-fakeset-val-{i:04d}" for i in range(6)]
    c_url, _ = make_stores("crops", {"layer_11": gallery}, ids=crops, dataset="augmented")
    with pytest.raises(MaxaError, match="crops are not"):
        evaluate_retrieval(RetrievalConfig(tiles=2, device="cpu"), g_url, c_url, progress=False)


def test_duplicate_gallery_images_are_both_relevant(make_stores) -> None:
    gallery = _gallery(6)
    gallery[5] = gallery[1]
    g_url, _ = make_stores("gallery", {"layer_11": gallery})
    ids = [f"aug-noise-fakeset-val-{i:04d}" for i in (1, 3)]
    q_url, _ = make_stores(
        "queries", {"layer_11": _queries(gallery, np.array([1, 3]))}, ids=ids, dataset="augmented"
    )
    metrics = evaluate_retrieval(RetrievalConfig(device="cpu"), g_url, q_url, progress=False)
    assert metrics["protocol"]["mean_relevant_per_query"] == 1.5
    assert metrics["scores"]["layers"]["layer_11"]["map"] == pytest.approx(1.0)


def test_queries_without_source_or_from_another_backbone_are_refused(make_stores) -> None:
    gallery = _gallery(4)
    g_url, _ = make_stores("gallery", {"layer_11": gallery})
    q_url, _ = make_stores("queries", {"layer_11": gallery}, ids=["aug-blur-elsewhere-1", "a", "b", "c"])
    with pytest.raises(MaxaError, match="'elsewhere-1' is not in the gallery"):
        evaluate_retrieval(RetrievalConfig(device="cpu"), g_url, q_url, progress=False)
    other = {**BACKBONE, "model": "another_vit"}
    o_url, _ = make_stores("other", {"layer_11": gallery}, backbone=other)
    with pytest.raises(MaxaError, match="different backbones"):
        evaluate_retrieval(RetrievalConfig(device="cpu"), g_url, o_url, progress=False)
