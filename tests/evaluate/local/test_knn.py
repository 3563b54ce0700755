"""k-NN patch labelling (evaluate/local/knn.py) on hand-made stores whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from maxa.core.errors import MaxaError
from maxa.core.sample import IGNORE_INDEX
from maxa.evaluate.local.config import KnnConfig
from maxa.evaluate.local.knn import evaluate_knn, select_shots, upsample_votes
from maxa.evaluate.local.similarity import kept_dimensions
from maxa.probe.bank import PatchBank, aggregate, topk_cosine, unit
from maxa.probe.data import open_pair
from maxa.probe.knn import build_bank as build_probe_bank
from maxa.probe.patch_labels import patch_labels
from maxa.probe.tasks import get_task

GRID, SCALE, CLASSES, CHANNELS = 4, 4, 3, 8


def split(
    rng: np.random.Generator, n: int, prototypes: np.ndarray, noise: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Patch-aligned label maps (some patches ignored) and features = class prototype + noise."""
    patches = rng.integers(0, CLASSES, size=(n, GRID, GRID))
    patches[rng.random(patches.shape) < 0.1] = IGNORE_INDEX
    labels = np.kron(patches, np.ones((SCALE, SCALE), dtype=np.int64)).astype(np.uint8)
    feats = rng.normal(0.0, noise, size=(n, GRID, GRID, prototypes.shape[1]))
    known = patches != IGNORE_INDEX
    feats[known] += prototypes[patches[known]]
    return feats, labels


@pytest.fixture
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    prototypes = rng.normal(size=(CLASSES, CHANNELS))
    train_x, train_y = split(rng, 12, prototypes)
    val_x, val_y = split(rng, 8, prototypes)
    return {
        "train_x": train_x,
        "train_y": train_y,
        "val_x": val_x,
        "val_y": val_y,
        "noise": rng.normal(size=val_x.shape),
    }


def _run(make_stores, data, config: KnnConfig, *, train_layers=None, val_layers=None, train_y=None):
    train_f, train_t = make_stores(
        "train",
        train_layers or {"layer_3": data["train_x"]},
        {"semantic": data["train_y"] if train_y is None else train_y},
        split="train",
        num_classes=CLASSES,
    )
    val_f, val_t = make_stores(
        "val", val_layers or {"layer_3": data["val_x"]}, {"semantic": data["val_y"]}, num_classes=CLASSES
    )
    return evaluate_knn(config, train_f, train_t, val_f, val_t, progress=False)


def test_patch_labels_take_the_majority_and_drop_ignore_dominated_patches() -> None:
    labels = np.array(
        [
            [1, 1, 0, 0, 2],
            [1, 2, 0, 255, 2],
            [255, 255, 0, 0, 2],
            [255, 1, 2, 2, 2],
            [255, 255, 2, 1, 1],
        ],
        dtype=np.uint8,
    )[None]
    # Rows/cols 0-2 fall in cell 0 (floor(3 * 2 / 5) = 1 is the first in cell 1), rows/cols 3-4 in cell 1.
    out = patch_labels(labels, (2, 2), num_classes=3)[0]
    expected = np.full((2, 2), -1)
    for cy in range(2):
        for cx in range(2):
            rows = [y for y in range(5) if (y * 2) // 5 == cy]
            cols = [x for x in range(5) if (x * 2) // 5 == cx]
            values = labels[0][np.ix_(rows, cols)].ravel()
            counts = {v: int((values == v).sum()) for v in set(values.tolist())}
            best = max(counts, key=lambda v: (counts[v], -v))
            expected[cy, cx] = IGNORE_INDEX if best == 255 else best
    assert out.tolist() == expected.tolist()
    assert out[1, 0] == IGNORE_INDEX  # bottom-left cell is 3 of 4 ignore pixels


def test_topk_cosine_merges_bank_chunks_exactly() -> None:
    gen = torch.Generator().manual_seed(0)
    queries = unit(torch.randn(50, 6, generator=gen))
    bank = unit(torch.randn(37, 6, generator=gen))
    sim, idx = topk_cosine(queries, bank, 4, bank_chunk=5)
    full = torch.topk(queries @ bank.T, 4, dim=1)
    torch.testing.assert_close(sim, full.values)
    torch.testing.assert_close(torch.gather(queries @ bank.T, 1, idx), full.values)


def test_votes_weight_neighbours_by_exp_similarity_over_temperature() -> None:
    sim = torch.tensor([[0.9, 0.89, 0.88]])
    idx = torch.tensor([[0, 1, 2]])
    labels = torch.tensor([0, 1, 1])
    votes = {k: aggregate(labels, sim, idx, k, temperature=0.1, num_classes=2) for k in (1, 3)}
    assert votes[1].tolist() == [[1.0, 0.0]]
    w = [math.exp(s / 0.1) for s in (0.9, 0.89, 0.88)]
    assert votes[3][0, 0].item() == pytest.approx(w[0] / sum(w), rel=1e-5)
    assert votes[3].argmax().item() == 1  # two slightly less similar neighbours outvote the nearest


def test_upsampling_reads_each_pixel_from_its_patch() -> None:
    votes = torch.nn.functional.one_hot(torch.tensor([[0, 1], [1, 2]]), 3).float()
    nearest = upsample_votes(votes, (4, 4), "nearest")
    assert nearest.tolist() == np.kron(np.array([[0, 1], [1, 2]]), np.ones((2, 2), dtype=int)).tolist()
    bilinear = upsample_votes(votes, (8, 8), "bilinear")
    assert [bilinear[0, 0].item(), bilinear[0, 7].item(), bilinear[7, 0].item(), bilinear[7, 7].item()] == [
        0,
        1,
        1,
        2,
    ]


def test_few_shot_choice_is_seeded_sorted_and_bounded() -> None:
    a, b = select_shots(20, 5, seed=1), select_shots(20, 5, seed=1)
    assert a.tolist() == b.tolist() == sorted(set(a.tolist()))
    assert select_shots(20, 5, seed=2).tolist() != a.tolist()
    assert select_shots(7, None, seed=0).tolist() == list(range(7))
    with pytest.raises(MaxaError, match="--shots 8 exceeds"):
        select_shots(7, 8, seed=0)


def test_separable_layer_labels_every_patch_and_noise_layer_does_not(make_stores, data) -> None:
    layers = {
        "layer_1": np.random.default_rng(5).normal(size=data["train_x"].shape),
        "layer_3": data["train_x"],
    }
    val_layers = {"layer_1": data["noise"], "layer_3": data["val_x"]}
    metrics = _run(
        make_stores, data, KnnConfig(k=[1, 5], device="cpu"), train_layers=layers, val_layers=val_layers
    )
    table = metrics["scores"]["layers"]
    assert list(table) == ["layer_1", "layer_3"]
    for k in ("k=1", "k=5"):
        assert table["layer_3"][k]["patch_miou"] > 0.95
        assert table["layer_3"][k]["miou"] > 0.95
        assert table["layer_1"][k]["miou"] < 0.6
    assert metrics["primary"] == {
        "name": "miou",
        "value": table["layer_3"]["k=1"]["miou"],
        "higher_is_better": True,
    }
    assert metrics["protocol"]["primary_layer"] == "layer_3"
    assert metrics["scores"]["constant_baseline"]["miou"] < 0.25  # one of 3 classes everywhere
    assert (metrics["task"], metrics["adapter"], metrics["backbone"]) == ("knn", "none", "fake")


def test_shuffled_training_labels_ruin_knn(make_stores, data) -> None:
    rng = np.random.default_rng(1)
    patches = data["train_y"][:, ::SCALE, ::SCALE].reshape(-1).copy()
    rng.shuffle(patches)
    shuffled = np.kron(patches.reshape(-1, GRID, GRID), np.ones((SCALE, SCALE), dtype=np.uint8))
    metrics = _run(make_stores, data, KnnConfig(k=[1], device="cpu"), train_y=shuffled)
    assert metrics["scores"]["layers"]["layer_3"]["k=1"]["miou"] < 0.6


def test_a_few_high_variance_dimensions_ruin_knn_and_dropping_them_restores_it(make_stores, data) -> None:
    rng = np.random.default_rng(2)

    def inject(x: np.ndarray) -> np.ndarray:
        return np.concatenate([x, rng.normal(0.0, 50.0, size=(*x.shape[:3], 3))], axis=-1)

    train, val = {"layer_3": inject(data["train_x"])}, {"layer_3": inject(data["val_x"])}
    ruined = _run(make_stores, data, KnnConfig(k=[1], device="cpu"), train_layers=train, val_layers=val)
    assert ruined["scores"]["layers"]["layer_3"]["k=1"]["miou"] < 0.6
    fixed = _run(
        make_stores, data, KnnConfig(k=[1], drop_dims=3, device="cpu"), train_layers=train, val_layers=val
    )
    assert fixed["scores"]["layers"]["layer_3"]["k=1"]["miou"] > 0.95
    assert fixed["protocol"]["drop_dims"] == 3


def test_kept_dimensions_drop_the_largest_variances() -> None:
    assert kept_dimensions(torch.tensor([1.0, 9.0, 0.5, 3.0]), 2).tolist() == [0, 2]
    with pytest.raises(MaxaError, match="--drop-dims"):
        kept_dimensions(torch.ones(3), 3)


def test_few_shot_bank_holds_only_the_chosen_images(make_stores, data) -> None:
    metrics = _run(make_stores, data, KnnConfig(k=[1], shots=2, seed=3, device="cpu"))
    chosen = select_shots(12, 2, seed=3)
    protocol = metrics["protocol"]
    assert protocol["shot_ids"] == [f"fakeset-train-{i:04d}" for i in chosen]
    valid = int((data["train_y"][chosen][:, ::SCALE, ::SCALE] != IGNORE_INDEX).sum())
    assert protocol["bank_patches"] == {"layer_3": valid}


def test_mismatched_stores_are_refused(make_stores, data) -> None:
    train_f, train_t = make_stores(
        "train", {"layer_3": data["train_x"]}, {"semantic": data["train_y"]}, split="train"
    )
    val_f, val_t = make_stores("val", {"layer_3": data["val_x"]}, {"semantic": data["val_y"]})
    with pytest.raises(MaxaError, match=r"describe different data \(split: .train. vs .val."):
        evaluate_knn(KnnConfig(device="cpu"), train_f, val_t, val_f, val_t, progress=False)
    with pytest.raises(MaxaError, match="hold the same split"):
        evaluate_knn(KnnConfig(device="cpu"), val_f, val_t, val_f, val_t, progress=False)
    with pytest.raises(MaxaError, match="has no layer"):
        evaluate_knn(KnnConfig(layers=[7], device="cpu"), train_f, train_t, val_f, val_t, progress=False)


def test_patch_labels_are_the_same_in_small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    labels = np.random.default_rng(4).integers(0, 4, size=(7, 12, 12)).astype(np.uint8)
    labels[labels == 3] = IGNORE_INDEX
    whole = patch_labels(labels, (3, 3), num_classes=3)
    monkeypatch.setattr("maxa.probe.patch_labels.COUNT_BUDGET", 40)  # one image (9 cells x 4 buckets) a step
    assert torch.equal(patch_labels(labels, (3, 3), num_classes=3), whole)


def brute_force(
    keys: np.ndarray,
    values: np.ndarray,
    queries: np.ndarray,
    k: int,
    temperature: float | None,
    num_classes: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Independent reference: float64 cosine similarities, a full sort per query and plain loops.

    Returns each query's answer (mean or softmax(sim / T)-weighted sum of its k nearest values, class
    ids counted as one-hot) and the gap between its k-th and (k+1)-th similarity (a near tie there
    may legitimately pick either neighbour).
    """
    keys = keys.astype(np.float64)
    keys = keys / np.linalg.norm(keys, axis=1, keepdims=True)
    queries = queries.astype(np.float64)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    answers, gaps = [], []
    for row in queries @ keys.T:
        order = np.argsort(-row, kind="stable")
        near = order[: min(k, len(order))]
        if temperature is None:
            weights = np.full(len(near), 1.0 / len(near))
        else:
            e = np.exp((row[near] - row[near].max()) / temperature)
            weights = e / e.sum()
        if values.ndim == 1:
            answer = np.zeros(num_classes)
            for j, weight in zip(near, weights, strict=True):
                answer[values[j]] += weight
        else:
            answer = (weights[:, None] * values[near]).sum(axis=0)
        answers.append(answer)
        gaps.append(row[order[len(near) - 1]] - row[order[len(near)]] if len(near) < len(order) else np.inf)
    return np.array(answers), np.array(gaps)


def test_both_users_query_the_one_bank_and_it_matches_brute_force(
    make_stores, data, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`maxa local knn` and the k-NN probe build the same PatchBank class from the same training stores
    and answer every query through PatchBank.query; each answer equals a brute-force k-NN."""
    calls: list[tuple[PatchBank, torch.Tensor, list[int], float | None, dict[int, torch.Tensor]]] = []
    original = PatchBank.query

    def spy(self: PatchBank, queries: torch.Tensor, ks, **options):
        out = original(self, queries, ks, **options)
        calls.append((self, queries.clone(), list(ks), options.get("temperature"), out))
        return out

    monkeypatch.setattr(PatchBank, "query", spy)
    train_f, train_t = make_stores(
        "train",
        {"layer_3": data["train_x"]},
        {"semantic": data["train_y"]},
        split="train",
        num_classes=CLASSES,
    )
    val_f, val_t = make_stores(
        "val", {"layer_3": data["val_x"]}, {"semantic": data["val_y"]}, num_classes=CLASSES
    )
    config = KnnConfig(k=[1, 5], temperature=0.1, device="cpu", query_chunk=32, bank_chunk=16)
    evaluate_knn(config, train_f, train_t, val_f, val_t, progress=False)
    local_calls = list(calls)
    task = get_task("semantic")
    probe = build_probe_bank(
        open_pair(train_f, train_t, "layer_3", "semantic"), task, bank_size=10**6, k=5, seed=0, progress=False
    )
    probe(torch.from_numpy(open_pair(val_f, val_t, "layer_3", "semantic").read_features(0, 8)))
    probe_calls = calls[len(local_calls) :]

    assert local_calls and probe_calls
    local_bank = local_calls[0][0]
    assert type(local_bank) is PatchBank and all(c[0] is local_bank and c[3] == 0.1 for c in local_calls)
    assert isinstance(probe, PatchBank) and all(c[0] is probe and c[3] is None for c in probe_calls)
    assert sum(len(c[1]) for c in local_calls) == sum(len(c[1]) for c in probe_calls) == 8 * GRID * GRID

    # Both banks hold every valid training patch, in store order: the local one float32 class ids, the
    # probe (uniform sample of at least all patches) float16 keys and one-hot values.
    patches = data["train_y"][:, ::SCALE, ::SCALE].reshape(-1)
    valid = patches != IGNORE_INDEX
    stored = data["train_x"].astype(np.float16).astype(np.float64).reshape(-1, CHANNELS)[valid]
    unit = stored / np.linalg.norm(stored, axis=1, keepdims=True)
    assert local_bank.values.tolist() == patches[valid].tolist()
    assert probe.values.argmax(1).tolist() == patches[valid].tolist()
    np.testing.assert_allclose(local_bank.keys.numpy(), unit, atol=1e-6)
    np.testing.assert_allclose(probe.keys.float().numpy(), unit, atol=1e-3)

    compared = total = 0
    for bank, queries, ks, temperature, out in calls:
        keep = np.arange(CHANNELS) if bank.keep is None else bank.keep.numpy()
        for k in ks:
            expected, gaps = brute_force(
                bank.keys.float().numpy(),
                bank.values.numpy(),
                queries.numpy()[:, keep],
                k,
                temperature,
                CLASSES,
            )
            clear = gaps > 1e-5
            np.testing.assert_allclose(out[k].numpy()[clear], expected[clear], atol=1e-5)
            compared, total = compared + int(clear.sum()), total + len(clear)
    assert compared > 0.95 * total


def _miou(matrix: np.ndarray) -> float:
    diag = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - diag
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.nanmean(np.where(union > 0, diag / union, np.nan)))


def test_image_matrices_bootstrap_is_the_percentile_bootstrap_of_pooled_miou() -> None:
    from maxa.evaluate.intervals import RESAMPLES, bootstrap
    from maxa.evaluate.local.knn import ImageMatrices

    rng = np.random.default_rng(3)
    images = ImageMatrices(CLASSES)
    images.matrices = [rng.integers(0, 20, size=(CLASSES, CLASSES)) for _ in range(9)]
    result = bootstrap(images, seed=0)["miou"]
    stack = np.stack(images.matrices)
    draws = np.random.default_rng(0).multinomial(9, np.full(9, 1 / 9), size=RESAMPLES)
    samples = [_miou(np.tensordot(counts, stack, axes=1)) for counts in draws]
    low, high = np.quantile(samples, [0.025, 0.975])
    assert result["mean"] == pytest.approx(_miou(stack.sum(0)))
    assert (result["low"], result["high"]) == pytest.approx((low, high))


def test_primary_score_carries_a_bootstrap_interval(make_stores, data) -> None:
    clean = _run(make_stores, data, KnnConfig(k=[1, 5], device="cpu"))
    rng = np.random.default_rng(1)
    patches = data["train_y"][:, ::SCALE, ::SCALE].reshape(-1).copy()
    rng.shuffle(patches)
    shuffled = np.kron(patches.reshape(-1, GRID, GRID), np.ones((SCALE, SCALE), dtype=np.uint8))
    noisy = _run(make_stores, data, KnnConfig(k=[1, 5], device="cpu"), train_y=shuffled)
    widths = []
    for metrics in (clean, noisy):
        interval = metrics["uncertainty"]["miou"]
        assert interval["mean"] == metrics["primary"]["value"] == metrics["scores"]["miou"]
        assert interval["method"] == "bootstrap" and interval["n"] == len(data["val_y"])
        assert interval["low"] <= interval["mean"] <= interval["high"]
        widths.append(interval["high"] - interval["low"])
    assert widths[0] < widths[1]  # every image labelled right: the resamples barely move
