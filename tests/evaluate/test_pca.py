"""Tests for evaluate/pca.py's PCA-RGB mapping (the figure itself is tested on real stores in
test_qualitative.py)."""

from __future__ import annotations

import numpy as np

from maxa.evaluate.pca import pca_rgb


def test_structure_becomes_colour() -> None:
    """Two kinds of patches (left / right half) get two clearly different, internally uniform colours."""
    rng = np.random.default_rng(0)
    features = rng.normal(0, 0.01, size=(3, 4, 6, 32)).astype(np.float16)
    direction = rng.normal(size=32)
    features[:, :, :3] += direction.astype(np.float16)
    features[:, :, 3:] -= direction.astype(np.float16)
    rgb = pca_rgb(features)
    assert rgb.shape == (3, 4, 6, 3)
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    left, right = rgb[:, :, :3, 0], rgb[:, :, 3:, 0]  # the first component carries the split
    assert abs(left.mean() - right.mean()) > 0.8
    assert left.std() < 0.1 and right.std() < 0.1


def test_colours_comparable_across_images() -> None:
    """One PCA over all images: the same feature gets the same colour in every image."""
    rng = np.random.default_rng(1)
    base = rng.normal(size=(1, 3, 3, 8))
    features = np.concatenate([base, base, rng.normal(size=(1, 3, 3, 8))])
    rgb = pca_rgb(features)
    np.testing.assert_allclose(rgb[0], rgb[1], atol=1e-5)


def test_few_channels_padded() -> None:
    features = np.stack([np.arange(8.0).reshape(2, 2, 2), np.ones((2, 2, 2))], axis=-1)
    rgb = pca_rgb(features)
    assert rgb.shape == (2, 2, 2, 3)
    np.testing.assert_array_equal(rgb[..., 2], 0.0)  # only two components exist
    assert rgb[..., 0].max() == 1.0 and rgb[..., 0].min() == 0.0
