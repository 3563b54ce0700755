"""DAVIS J and F (evaluate/local/jf.py) against hand-made masks and independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from maxa.evaluate.local.jf import (
    SequenceScores,
    boundary_map,
    boundary_radius,
    f_measure,
    jaccard,
    score_sequence,
    statistics,
    summarize,
)


def square(size: int, top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[top : top + side, left : left + side] = True
    return mask


def brute_force_f(gt: np.ndarray, pred: np.ndarray, radius: int) -> float:
    """Boundary F from pairwise pixel distances (no dilation): a pixel matches within the disk."""
    pb, gb = np.argwhere(boundary_map(pred)), np.argwhere(boundary_map(gt))
    dist = np.sqrt(((pb[:, None, :] - gb[None, :, :]) ** 2).sum(-1))
    precision = float((dist.min(1) <= radius).mean())
    recall = float((dist.min(0) <= radius).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def test_jaccard_of_overlapping_squares_and_of_two_empty_masks() -> None:
    a, b = square(8, 0, 0, 4), square(8, 2, 2, 4)
    assert jaccard(a, b) == pytest.approx(4 / 28)
    assert jaccard(np.zeros((5, 5)), np.zeros((5, 5))) == 1.0
    void = np.zeros((8, 8), dtype=bool)
    void[:2] = True  # hides 8 pixels of a, none of the overlap
    assert jaccard(a, b, void) == pytest.approx(4 / 20)


def test_boundary_map_matches_a_hand_drawn_one() -> None:
    expected = np.array(
        [
            [1, 1, 1, 0, 0],
            [1, 0, 1, 0, 0],
            [1, 1, 1, 0, 0],
            [0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0],
        ],
        dtype=bool,
    )
    assert (boundary_map(square(5, 1, 1, 2)) == expected).all()


def test_tolerance_is_ceil_of_0_008_times_the_diagonal() -> None:
    assert boundary_radius((64, 64)) == math.ceil(0.008 * math.hypot(64, 64)) == 1
    assert boundary_radius((480, 854)) == 8
    assert boundary_radius((64, 64), bound_th=3) == 3


@pytest.mark.parametrize("shift", [0, 1, 2, 4])
def test_f_measure_agrees_with_pairwise_distances(shift: int) -> None:
    gt = square(64, 20, 20, 16)
    pred = square(64, 20 + shift, 20 + shift // 2, 16)
    radius = boundary_radius(gt.shape)
    assert f_measure(gt, pred) == pytest.approx(brute_force_f(gt, pred, radius))
    assert f_measure(gt, pred, bound_th=4) == pytest.approx(brute_force_f(gt, pred, 4))


def test_f_measure_special_cases() -> None:
    gt = square(32, 5, 5, 8)
    empty = np.zeros_like(gt)
    assert f_measure(gt, gt) == 1.0
    assert f_measure(gt, empty) == 0.0  # no predicted boundary: P=1, R=0
    assert f_measure(empty, gt) == 0.0  # no true boundary: P=0, R=1
    assert f_measure(empty, empty) == 1.0
    assert f_measure(gt, square(32, 20, 20, 8)) == 0.0  # boundaries far apart


def test_statistics_mean_recall_and_decay() -> None:
    mean, recall, decay = statistics(np.array([1, 1, 1, 0.5, 0.5, 0, 0, 0]))
    assert mean == pytest.approx(4 / 8)
    assert recall == pytest.approx(3 / 8)
    # DAVIS bins 8 frames as [0:3], [2:5], [4:6], [5:8]: first-quarter mean 1, last 0.
    assert decay == pytest.approx(1.0)
    assert statistics(np.full(10, 0.8)) == pytest.approx((0.8, 1.0, 0.0))


def test_sequence_scores_skip_first_and_last_frames_and_count_objects_of_frame_zero() -> None:
    gt = np.zeros((5, 16, 16), dtype=np.int64)
    gt[:, 2:6, 2:6] = 1
    gt[:, 10:14, 10:14] = 2
    pred = gt.copy()
    pred[1:4][pred[1:4] == 2] = 0  # object 2 lost in every scored frame
    pred[0] = 0  # frames 0 and 4 are not scored, so errors there do not count
    scores = score_sequence("seq", gt, pred)
    assert scores.j.shape == (2, 3)
    assert scores.j[0].tolist() == [1.0, 1.0, 1.0] and scores.j[1].tolist() == [0.0, 0.0, 0.0]
    summary = summarize([scores])
    assert summary.scores["J-Mean"] == pytest.approx(0.5)
    assert summary.scores["F-Mean"] == pytest.approx(0.5)
    assert summary.scores["J&F-Mean"] == pytest.approx(0.5)
    assert set(summary.per_object) == {"seq_1", "seq_2"}


def test_summary_averages_over_objects_not_sequences() -> None:
    one = SequenceScores("a", np.array([[1.0, 1.0]]), np.array([[1.0, 1.0]]))
    three = SequenceScores("b", np.zeros((3, 2)), np.zeros((3, 2)))
    assert summarize([one, three]).scores["J&F-Mean"] == pytest.approx(1 / 4)


# An independent implementation of davis2017-evaluation's f_measure (davis2017/metrics.py, lines 57-178):
# _seg2bmap's shifted-XOR boundary, a dilation by skimage's disk (here scipy.ndimage with the same
# footprint, where the reference calls cv2.dilate), and its precision/recall cases.


def official_seg2bmap(seg: np.ndarray) -> np.ndarray:
    seg = seg.astype(bool)
    padded = np.pad(seg, ((0, 1), (0, 1)), mode="edge")  # beyond the last row/column: no change
    right, down, diag = padded[:-1, 1:], padded[1:, :-1], padded[1:, 1:]
    bmap = (seg != right) | (seg != down) | (seg != diag)
    bmap[-1, :] = seg[-1, :] != right[-1, :]
    bmap[:, -1] = seg[:, -1] != down[:, -1]
    bmap[-1, -1] = False
    return bmap


def official_f_measure(segmentation: np.ndarray, annotation: np.ndarray, void=None, bound_th=0.008):
    from scipy import ndimage

    void = np.zeros(segmentation.shape, bool) if void is None else void.astype(bool)
    bound_pix = bound_th if bound_th >= 1 else np.ceil(bound_th * np.linalg.norm(segmentation.shape))
    axis = np.arange(-bound_pix, bound_pix + 1)
    footprint = axis[:, None] ** 2 + axis[None, :] ** 2 <= bound_pix**2
    fg = official_seg2bmap(segmentation.astype(bool) & ~void)
    gt = official_seg2bmap(annotation.astype(bool) & ~void)
    fg_dil = ndimage.binary_dilation(fg, footprint, border_value=0)
    gt_dil = ndimage.binary_dilation(gt, footprint, border_value=0)
    n_fg, n_gt = fg.sum(), gt.sum()
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision, recall = (fg & gt_dil).sum() / n_fg, (gt & fg_dil).sum() / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def random_blobs(rng: np.random.Generator, shape: tuple[int, int], count: int) -> np.ndarray:
    """Union of random discs and rectangles, some touching the frame's edges."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, dtype=bool)
    for _ in range(count):
        cy, cx = rng.integers(-5, shape[0] + 5), rng.integers(-5, shape[1] + 5)
        r = rng.integers(1, max(2, min(shape) // 3))
        if rng.random() < 0.5:
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        else:
            mask |= (abs(yy - cy) <= r) & (abs(xx - cx) <= rng.integers(1, r + 1))
    return mask


def test_official_boundary_map_reimplementation_matches_maxa() -> None:
    rng = np.random.default_rng(3)
    for shape in [(1, 1), (1, 7), (7, 1), (9, 13), (64, 64)]:
        seg = rng.random(shape) < 0.5
        assert (boundary_map(seg) == official_seg2bmap(seg)).all(), shape


@pytest.mark.parametrize("shape", [(16, 16), (37, 53), (120, 90), (480, 854)])
def test_f_measure_equals_the_official_definition_on_random_masks(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    trials = 3 if shape[0] > 200 else 12
    for trial in range(trials):
        gt = random_blobs(rng, shape, int(rng.integers(1, 5)))
        pred = random_blobs(rng, shape, int(rng.integers(1, 5)))
        if trial % 4 == 1:
            pred = rng.random(shape) < 0.3  # fragmented: long, ragged boundaries
        void = (rng.random(shape) < 0.05) if trial % 3 == 2 else None
        for bound_th in (0.008, 2):
            expected = official_f_measure(pred, gt, void, bound_th)
            assert f_measure(gt, pred, void, bound_th) == pytest.approx(expected, abs=1e-12), (
                trial,
                bound_th,
            )


def test_f_measure_edge_cases_equal_the_official_ones() -> None:
    shape = (40, 60)
    empty = np.zeros(shape, dtype=bool)
    blob = np.zeros(shape, dtype=bool)
    blob[10:20, 15:30] = True
    whole = np.ones(shape, dtype=bool)  # all-foreground: its only boundary is none at all
    for gt, pred in [
        (empty, empty),
        (blob, empty),
        (empty, blob),
        (whole, whole),
        (whole, blob),
        (blob, whole),
    ]:
        assert f_measure(gt, pred) == official_f_measure(pred, gt)
    assert f_measure(blob, blob, void=blob) == official_f_measure(blob, blob, blob) == 1.0
