"""resize_nearest_pil (evaluate/local/propagation.py): Pillow's nearest rule, as DINO resizes DAVIS labels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from maxa.evaluate.local.propagation import resize_nearest_pil
from maxa.extract.transforms import resize_nearest


@pytest.mark.parametrize(
    ("src", "dst"), [((480, 854), (30, 52)), ((480, 832), (480, 854)), ((100, 100), (33, 47))]
)
def test_equals_pillows_nearest_on_uint8_ids(src: tuple[int, int], dst: tuple[int, int]) -> None:
    ids = np.random.default_rng(0).integers(0, 7, size=src).astype(np.uint8)
    expected = np.asarray(Image.fromarray(ids).resize((dst[1], dst[0]), Image.Resampling.NEAREST))
    out = resize_nearest_pil(ids, dst)
    assert out.dtype == np.uint8 and out.shape == dst
    np.testing.assert_array_equal(out, expected)


def test_ties_break_like_pillow_not_like_resize_nearest() -> None:
    ids = np.arange(100, dtype=np.int64)[:, None].repeat(3, 1)  # row index as the id
    pil = resize_nearest_pil(ids, (47, 3))[:, 0]
    ours = resize_nearest(ids, (47, 3))[:, 0]
    assert (pil != ours).any()  # exact ties (e.g. output row 23 -> source 50) resolve differently
    assert np.abs(pil - ours).max() == 1


def test_wide_ids_survive_and_same_size_is_identity() -> None:
    ids = np.array([[70000, 1], [2, 3]], dtype=np.int64)
    assert (
        resize_nearest_pil(ids, (4, 4)).max() == 70000 and resize_nearest_pil(ids, (4, 4)).dtype == np.int64
    )
    assert resize_nearest_pil(ids, (2, 2)) is ids
    with pytest.raises(ValueError, match="outside int32"):
        resize_nearest_pil(np.array([[2**40]], dtype=np.int64), (2, 2))
