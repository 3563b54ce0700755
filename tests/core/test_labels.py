"""Targets derived from label maps (core/labels.py), shared by the readers and the scorers."""

from __future__ import annotations

import numpy as np

from maxa.core.labels import instance_boxes


def test_instance_boxes_cover_each_instance() -> None:
    instances = np.zeros((6, 8), np.int32)
    instances[1:3, 2:5] = 4
    instances[4, 7] = 9
    np.testing.assert_array_equal(instance_boxes(instances), [[2, 1, 5, 3], [7, 4, 8, 5]])
    assert instance_boxes(np.zeros((3, 3), np.int32)).shape == (0, 4)
