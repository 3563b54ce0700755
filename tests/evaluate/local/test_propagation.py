"""Video label propagation (evaluate/local/propagation.py) on synthetic moving squares."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from maxa.core.dataset_facts import dino_input_size
from maxa.core.errors import MaxaError
from maxa.evaluate.local.config import PropagationConfig
from maxa.evaluate.local.jf import score_sequence, summarize
from maxa.evaluate.local.propagation import (
    evaluate_propagation,
    frame_names,
    neighbourhood,
    propagate,
    resize_nearest_pil,
    seed_labels,
    sequences_from_ids,
    upsample_size,
    video_sequences,
)
from tests.kit.stores import BACKBONE

GRID, SCALE, SIDE = 12, 4, 3


def moving_squares(frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two 3x3-patch objects (one drifting right, one down) and features = one-hot of the object id
    under each patch plus a little noise: (T, h, w, C) features, (T, H, W) instance ids."""
    rng = np.random.default_rng(seed)
    patches = np.zeros((frames, GRID, GRID), dtype=np.int64)
    for t in range(frames):
        patches[t, 1 : 1 + SIDE, 1 + t : 1 + SIDE + t] = 1
        patches[t, 5 + t // 2 : 5 + SIDE + t // 2, 7 : 7 + SIDE] = 2
    feats = np.eye(4)[patches] + rng.normal(0.0, 0.05, size=(frames, GRID, GRID, 4))
    labels = np.kron(patches, np.ones((SCALE, SCALE), dtype=np.int64)).astype(np.int32)
    return feats.astype(np.float32), labels


def jf(labels: np.ndarray, pred: np.ndarray) -> float:
    return summarize([score_sequence("s", labels, pred)]).scores["J&F-Mean"]


def test_neighbourhood_is_a_square_window() -> None:
    mask = neighbourhood(6, 6, 1).reshape(6, 6, 6, 6)
    assert int(mask[3, 3].sum()) == 9 and int(mask[0, 0].sum()) == 4
    assert bool(mask[3, 3, 2, 4]) and not bool(mask[3, 3, 1, 3])


def test_seed_labels_one_hot_at_the_grid() -> None:
    mask = np.kron(np.array([[0, 1], [2, 255]]), np.ones((4, 4), dtype=np.int64))
    seed = seed_labels(mask, (2, 2), 3)
    assert seed.argmax(0).tolist() == [[0, 1], [2, 0]]  # void seeds background
    assert seed.sum(0).eq(1).all()


def test_moving_squares_are_tracked_and_noise_features_are_not() -> None:
    feats, labels = moving_squares(8)
    pred = propagate(torch.from_numpy(feats), labels[0], n_last_frames=3, radius=2, topk=5)
    assert pred.shape == labels.shape
    assert (pred[0] == labels[0]).all()
    good = jf(labels, pred)
    assert good > 0.9
    noise = np.random.default_rng(1).normal(size=feats.shape).astype(np.float32)
    broken = propagate(torch.from_numpy(noise), labels[0], n_last_frames=3, radius=2, topk=5)
    assert jf(labels, broken) < good - 0.3


def test_sequences_follow_frame_numbers_not_row_order() -> None:
    ids = [
        "davis-bike-packing-00002",
        "davis-dog-00000",
        "davis-bike-packing-00000",
        "davis-bike-packing-00001",
    ]
    assert sequences_from_ids(ids) == {"bike-packing": [2, 3, 0], "dog": [1]}
    with pytest.raises(MaxaError, match="does not name a video frame"):
        sequences_from_ids(["frame7"])


def test_propagation_from_stores(make_stores) -> None:
    feats_a, labels_a = moving_squares(6, seed=0)
    feats_b, labels_b = moving_squares(5, seed=1)
    ids = [f"davis-walk-ing-{t:05d}" for t in range(6)] + [f"davis-cat-{t:05d}" for t in range(5)]
    order = np.random.default_rng(0).permutation(11)  # rows out of frame order
    feats = np.concatenate([feats_a, feats_b])[order]
    labels = np.concatenate([labels_a, labels_b])[order]
    f_url, t_url = make_stores(
        "davis", {"layer_5": feats}, {"instances": labels}, ids=[ids[i] for i in order], dataset="davis"
    )
    config = PropagationConfig(n_last_frames=3, radius=2, device="cpu", davis_protocol="any")
    metrics = evaluate_propagation(config, f_url, t_url, progress=False)
    assert metrics["primary"]["name"] == "J&F-Mean" and metrics["primary"]["value"] > 0.9
    assert metrics["protocol"]["davis_protocol"] == "differs"  # 64-px square input, 48-px labels, no norm
    assert len(metrics["protocol"]["davis_protocol_differences"]) == 3
    static = metrics["scores"]["static_baseline"]["J&F-Mean"]  # copying frame 0 loses the moving squares
    assert static < metrics["primary"]["value"] - 0.2
    assert set(metrics["scores"]["per_object"]) == {"walk-ing_1", "walk-ing_2", "cat_1", "cat_2"}
    assert metrics["protocol"]["sequences"] == 2 and metrics["protocol"]["layer"] == "layer_5"
    # the interval is a bootstrap over the 2 videos: its ends are what one video's objects alone score
    per_video = {
        name: np.mean(
            [(v["J"] + v["F"]) / 2 for k, v in metrics["scores"]["per_object"].items() if k.startswith(name)]
        )
        for name in ("walk-ing_", "cat_")
    }
    interval = metrics["uncertainty"]["J&F-Mean"]
    assert interval["n"] == 2 and interval["mean"] == pytest.approx(metrics["primary"]["value"])
    assert interval["low"] == pytest.approx(min(per_video.values()))
    assert interval["high"] == pytest.approx(max(per_video.values()))
    assert (metrics["task"], metrics["dataset"]) == ("propagation", "davis")
    flat = [f"frame{i}" for i in range(11)]
    f2, t2 = make_stores("flat", {"layer_5": feats}, {"instances": labels}, ids=flat, dataset="davis")
    with pytest.raises(MaxaError, match="does not name a video frame"):
        evaluate_propagation(
            PropagationConfig(sequences="ids", device="cpu", davis_protocol="any"), f2, t2, progress=False
        )


def test_image_datasets_with_video_like_ids_are_refused(tmp_path) -> None:
    from maxa.core.store import open_store
    from maxa.extract.targets import PrepareConfig, prepare, reader_of

    config = PrepareConfig(split="val", label_size=16, options={"num_images": 3, "image_size": 16})
    store = prepare(config, str(tmp_path / "t.zarr"), progress=False)
    assert sequences_from_ids(store.ids())  # "synthetic-val-000000" parses as sequence "val"...
    reopened = open_store(store.url, "targets")
    with pytest.raises(MaxaError, match="not a video dataset"):  # ...but the reader knows better
        video_sequences(reopened, reopened, np.arange(3), "auto", reader_of)


# ------------------------------------------------- DINO's procedure, re-implemented independently
# facebookresearch/dino eval_video_segmentation.py: read_seg (PIL nearest to the grid, one-hot, line
# 239), label_propagation (lines 113-150: exp(cos/0.1) affinities masked to the neighbourhood, the
# top-k per query kept by thresholding at the k-th value, columns normalized), the queue of the
# n_last_frames soft maps (lines 57-71), upsampling by the patch size, norm_mask and argmax (74-76),
# PIL nearest back to the annotation's size (80).


def dino_reference(
    feats: np.ndarray, first: np.ndarray, patch: int, n_last: int, radius: int, topk: int
) -> np.ndarray:
    from PIL import Image

    t_count, h, w, _ = feats.shape
    big_h, big_w = first.shape
    seed = np.asarray(Image.fromarray(first.astype(np.uint8)).resize((w, h), Image.NEAREST)).astype(np.int64)
    n_ids = int(first.max()) + 1
    seed_onehot = torch.from_numpy(np.eye(n_ids, dtype=np.float32)[seed]).permute(2, 0, 1)[None]
    unit = torch.nn.functional.normalize(torch.from_numpy(feats).float().reshape(t_count, h * w, -1), dim=-1)
    ys, xs = np.divmod(np.arange(h * w), w)
    near = (np.abs(ys[:, None] - ys[None]) <= radius) & (np.abs(xs[:, None] - xs[None]) <= radius)
    near_t = torch.from_numpy(near.astype(np.float32))  # [key, query] (symmetric)
    queue: list[tuple[torch.Tensor, torch.Tensor]] = []
    out = [first.copy()]
    for t in range(1, t_count):
        sources = [unit[0]] + [f for f, _ in queue]
        segs = [seed_onehot] + [s for _, s in queue]
        aff = torch.stack(
            [torch.exp(src @ unit[t].T / 0.1) * near_t for src in sources]
        )  # n x keys x queries
        aff = aff.reshape(-1, h * w)
        kth = torch.topk(aff, k=topk, dim=0).values.min(0).values
        aff[aff < kth] = 0
        aff = aff / aff.sum(0, keepdim=True)
        stacked = torch.cat(segs).reshape(len(segs), n_ids, -1).transpose(2, 1).reshape(-1, n_ids).T
        soft = (stacked @ aff).reshape(1, n_ids, h, w)
        if len(queue) == n_last:
            queue.pop(0)
        queue.append((unit[t], soft))
        up = torch.nn.functional.interpolate(soft, scale_factor=patch, mode="bilinear", align_corners=False)[
            0
        ]
        for c in range(n_ids):
            if up[c].max() > 0:
                up[c] = (up[c] - up[c].min()) / (up[c] - up[c].min()).max()
        ids = up.argmax(0).numpy().astype(np.uint8)
        out.append(np.asarray(Image.fromarray(ids).resize((big_w, big_h), Image.NEAREST)))
    return np.stack(out).astype(np.int64)


@pytest.mark.parametrize("radius", [2, 12])
def test_propagation_equals_dinos_procedure_on_a_non_square_grid(radius: int) -> None:
    rng = np.random.default_rng(radius)
    frames, h, w, patch = 7, 5, 9, 8  # 40x72 network input, annotations at 45x77 ("480x854")
    first = np.zeros((45, 77), dtype=np.int64)
    first[5:25, 10:40] = 1
    first[20:40, 45:70] = 2
    layout = resize_nearest_pil(first, (h, w))
    feats = np.eye(3)[layout][None].repeat(frames, 0) + rng.normal(0, 0.6, (frames, h, w, 3))
    feats = np.concatenate([feats, rng.normal(0, 0.3, (frames, h, w, 5))], -1).astype(np.float32)
    expected = dino_reference(feats, first, patch, n_last=3, radius=radius, topk=5)
    got = propagate(
        torch.from_numpy(feats), first, upsample_size=(h * patch, w * patch), n_last_frames=3, radius=radius
    )
    assert got.shape == expected.shape == (frames, 45, 77)
    assert 0 < (got[1:] != 0).mean() < 1  # objects survive and do not cover everything
    np.testing.assert_array_equal(got, expected)


def test_upsample_size_is_the_grid_times_the_stride() -> None:
    assert upsample_size((30, 52), [480, 832]) == (480, 832)  # DAVIS at DINO's 480x832, patch 16
    assert upsample_size((60, 104), [480, 832]) == (480, 832)  # patch 8
    assert upsample_size((15, 26), [480, 840]) == (480, 832)  # a CNN's stride 32 (840 // 26 = 32)
    assert frame_names(["davis-dog-00007", "odd"]) == ["00007", "00001"]


DINO_BACKBONE = {**BACKBONE, "input_size": [480, 448], "norm": True}  # 48x48 frames
NATIVE_LABELS = {"label_resolution": "native"}


def _davis_pair(make_stores, name: str, backbone: dict, target_provenance: dict) -> tuple[str, str]:
    """One moving-squares sequence as a DAVIS store pair with the given provenance."""
    feats, labels = moving_squares(5)
    ids = [f"davis-walk-{t:05d}" for t in range(5)]
    return make_stores(
        name,
        {"layer_11": feats},
        {"instances": labels},
        ids=ids,
        dataset="davis",
        backbone=backbone,
        target_provenance=target_provenance,
    )


def test_davis_stores_made_as_dino_evaluates_davis_are_scored_and_recorded_so(make_stores) -> None:
    """48x48 frames: DINO's read_frame gives short side 480, long side floor(480 * 48 / 48 / 64) * 64."""
    assert dino_input_size(48, 48) == (480, 448) and dino_input_size(480, 854) == (480, 832)
    f_url, t_url = _davis_pair(make_stores, "dino", DINO_BACKBONE, NATIVE_LABELS)
    metrics = evaluate_propagation(PropagationConfig(radius=2, device="cpu"), f_url, t_url, progress=False)
    protocol = metrics["protocol"]
    assert (protocol["davis_protocol"], protocol["davis_protocol_differences"]) == ("dino", [])
    assert protocol["norm"] is True and protocol["scored_at_native_resolution"] is True


@pytest.mark.parametrize(
    ("backbone", "target_provenance", "named"),
    [
        (BACKBONE, NATIVE_LABELS, r"input size 64x64 \(DINO: 480x448 for 48x48 frames\); features without"),
        (DINO_BACKBONE, {}, r"labels at 48x48 \(DINO: the annotations' own"),
        ({**DINO_BACKBONE, "norm": False}, NATIVE_LABELS, r"without the final norm"),
    ],
)
def test_davis_stores_made_otherwise_are_refused_with_the_commands_that_make_them(
    make_stores, backbone: dict, target_provenance: dict, named: str
) -> None:
    f_url, t_url = _davis_pair(make_stores, "other", backbone, target_provenance)
    config = PropagationConfig(radius=2, device="cpu")
    with pytest.raises(MaxaError, match=named) as refused:
        evaluate_propagation(config, f_url, t_url, progress=False)
    message = str(refused.value)
    assert "\n" not in message and "--davis-protocol any" in message
    assert "--label-size native" in message and re.search(r"--input-size 480x\d+ --norm", message)
    config = PropagationConfig(radius=2, device="cpu", davis_protocol="any")
    scored = evaluate_propagation(config, f_url, t_url, progress=False)
    assert scored["protocol"]["davis_protocol"] == "differs"


def test_other_video_datasets_have_no_dino_protocol_to_follow(make_stores) -> None:
    feats, labels = moving_squares(4)
    ids = [f"clips-walk-{t:05d}" for t in range(4)]
    f_url, t_url = make_stores("clips", {"layer_0": feats}, {"instances": labels}, ids=ids, dataset="clips")
    metrics = evaluate_propagation(PropagationConfig(radius=2, device="cpu"), f_url, t_url, progress=False)
    assert metrics["protocol"]["davis_protocol"] == "not DAVIS"
