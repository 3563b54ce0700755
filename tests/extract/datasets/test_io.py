"""File access shared by the readers: full decoding, label PNG modes, listings, option paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dataset_files import noise, truncate, write_grey_png, write_palette_png
from PIL import Image

from maxa.core.errors import MaxaError
from maxa.core.labels import instance_boxes
from maxa.extract.datasets.io import list_images, load_label_png, load_rgb, resolve_option_path


def test_truncated_files_fail_when_read(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    Image.fromarray(noise(64, 64, 0)).save(path)
    np.testing.assert_array_equal(load_rgb(path), noise(64, 64, 0))
    truncate(path, 0.6)
    with pytest.raises(MaxaError, match=r"x\.png is corrupt or unreadable"):
        load_rgb(path)
    (tmp_path / "y.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(MaxaError, match=r"y\.jpg is corrupt or unreadable"):
        load_rgb(tmp_path / "y.jpg")


def test_label_pngs_give_indices(tmp_path: Path) -> None:
    values = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    write_palette_png(tmp_path / "p.png", values)
    write_grey_png(tmp_path / "g.png", values)
    np.testing.assert_array_equal(load_label_png(tmp_path / "p.png"), values)
    np.testing.assert_array_equal(load_label_png(tmp_path / "g.png"), values)
    Image.fromarray(values.astype(np.uint16)).save(tmp_path / "i.png")  # 16-bit: ids would be cut
    with pytest.raises(MaxaError, match=r"i\.png has PNG mode 'I"):
        load_label_png(tmp_path / "i.png")


def test_list_images_and_option_paths(tmp_path: Path) -> None:
    for name in ("b/1.PNG", "a.jpg", "c.txt", "b/0.jpeg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)] == [
        "a.jpg",
        "b/0.jpeg",
        "b/1.PNG",
    ]
    assert resolve_option_path("splits.mat", tmp_path) == tmp_path / "splits.mat"
    assert resolve_option_path("/abs/splits.mat", tmp_path) == Path("/abs/splits.mat")


def test_instance_boxes_follow_ascending_ids() -> None:
    instances = np.zeros((6, 8), dtype=np.int32)
    instances[1:3, 2:5] = 7
    instances[4, 0] = 2
    np.testing.assert_array_equal(instance_boxes(instances), [[0, 4, 1, 5], [2, 1, 5, 3]])
    assert instance_boxes(np.zeros((3, 3), np.int32)).shape == (0, 4)
