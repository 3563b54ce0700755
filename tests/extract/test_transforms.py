"""Tests for the resizing and target helpers in extract/transforms.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maxa.extract.transforms import instance_boundaries, normalize, resize_image, resize_nearest


@pytest.mark.parametrize("size", [(7, 5), (32, 48), (3, 3), (64, 16)])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_resize_nearest_keeps_only_input_values(size: tuple[int, int], dtype: type) -> None:
    rng = np.random.default_rng(0)
    label = rng.choice(np.array([0, 3, 7, 255], dtype=dtype), size=(13, 21))
    if dtype is np.float32:
        label[0, 0] = np.nan  # an invalid depth stays invalid, never averaged
    out = resize_nearest(label, size)
    assert out.shape == size
    assert out.dtype == label.dtype
    assert set(np.unique(out[~np.isnan(out)] if dtype is np.float32 else out)) <= set(
        np.unique(label[~np.isnan(label)] if dtype is np.float32 else label)
    )


def test_resize_nearest_identity_at_same_size() -> None:
    label = np.arange(30, dtype=np.int32).reshape(5, 6)
    out = resize_nearest(label, (5, 6))
    np.testing.assert_array_equal(out, label)


def test_resize_nearest_integer_factors() -> None:
    label = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    up = resize_nearest(label, (4, 4))
    np.testing.assert_array_equal(up, np.kron(label, np.ones((2, 2), dtype=np.uint8)))
    np.testing.assert_array_equal(resize_nearest(up, (2, 2)), label)
    # Downsampling by 2 samples the pixel nearest each output centre.
    big = np.arange(16).reshape(4, 4)
    np.testing.assert_array_equal(resize_nearest(big, (2, 2)), big[1::2, 1::2])


def test_resize_image_shape_and_identity() -> None:
    image = np.random.default_rng(1).integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    assert resize_image(image, (20, 30)) is image
    out = resize_image(image, (10, 12))
    assert out.shape == (10, 12, 3) and out.dtype == np.uint8
    flat = np.full((20, 30, 3), 77, dtype=np.uint8)
    assert (resize_image(flat, (9, 11)) == 77).all()


def _reference_boundaries(ids: np.ndarray) -> np.ndarray:
    """deap's rule written out: skimage find_boundaries(connectivity=9, mode='thick') = 3x3 grey dilation
    != 3x3 grey erosion with reflected edges, then skimage dilation with ones((h // 100, w // 100)): the
    even footprint padded with a zero row/column first (offsets -(k-1)//2 .. k//2), reflected edges."""
    h, w = ids.shape
    padded = np.pad(ids, 1, mode="symmetric")
    windows = [padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    thick = np.max(windows, axis=0) != np.min(windows, axis=0)
    kh, kw = max(1, h // 100), max(1, w // 100)
    out = np.zeros_like(thick)
    p = max(kh, kw)
    big = np.pad(thick, p, mode="symmetric")
    for dy in range(-((kh - 1) // 2), kh // 2 + 1):
        for dx in range(-((kw - 1) // 2), kw // 2 + 1):
            out |= big[p + dy : p + dy + h, p + dx : p + dx + w]
    return out.astype(np.uint8)


@pytest.mark.parametrize("shape", [(5, 7), (64, 64), (224, 224), (448, 448), (300, 517)])
def test_instance_boundaries_match_the_reference_rule(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    ids = np.zeros(shape, np.int32)
    for k in range(1, 9):  # overlapping boxes, some touching the image edges
        y0, x0 = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        ids[y0 : y0 + rng.integers(1, shape[0]), x0 : x0 + rng.integers(1, shape[1])] = k
    out = instance_boundaries(ids)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, _reference_boundaries(ids))


def test_instance_boundaries_hand_drawn() -> None:
    instances = np.array(
        [
            [0, 0, 0, 0, 0],
            [0, 1, 1, 0, 0],
            [0, 1, 1, 0, 0],
            [0, 0, 0, 0, 2],
        ],
        dtype=np.int32,
    )
    # Every pixel with a differing id among its 8 neighbours (no dilation below 200 px).
    expected = np.array(
        [
            [1, 1, 1, 1, 0],
            [1, 1, 1, 1, 0],
            [1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1],
        ],
        dtype=np.uint8,
    )
    np.testing.assert_array_equal(instance_boundaries(instances), expected)


def test_instance_boundaries_are_one_percent_of_the_side_wide() -> None:
    assert not instance_boundaries(np.full((4, 4), 3)).any()
    ids = np.zeros((448, 448), np.int32)
    ids[:, 200:] = 1  # one vertical edge between columns 199 and 200
    cols = np.flatnonzero(instance_boundaries(ids).any(axis=0))
    # thick edge: columns 199-200; dilated by a 4-wide window covering offsets -1..+2
    assert cols.tolist() == list(range(197, 202))


def test_normalize_matches_manual() -> None:
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(2, 5, 4, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    out = normalize(torch.from_numpy(images), mean, std)
    assert out.shape == (2, 3, 5, 4)
    assert out.dtype == torch.float32
    expected = (images.astype(np.float64) / 255.0 - np.array(mean)) / np.array(std)
    expected = expected.transpose(0, 3, 1, 2)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)
    # Channel order is preserved: a pure-red image is high only in channel 0.
    red = torch.zeros(1, 2, 2, 3, dtype=torch.uint8)
    red[..., 0] = 255
    red_out = normalize(red, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert torch.allclose(red_out[0, 0], torch.ones(2, 2))
    assert torch.allclose(red_out[0, 1:], -torch.ones(2, 2, 2))


def test_normalize_does_not_modify_input() -> None:
    images = torch.full((1, 2, 2, 3), 128, dtype=torch.uint8)
    before = images.clone()
    normalize(images, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert torch.equal(images, before)
