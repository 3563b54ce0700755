"""Control stores: the named model's store shape, holding seeded noise or only each patch's position."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import zarr

from maxa.extract import features
from maxa.extract.config import ExtractConfig
from maxa.extract.controls import NOISE, POSITION, position_codes
from maxa.extract.features import extract
from tests.extract.conftest import small_targets

NUM_IMAGES = 6
SHARD = 4


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> str:
    return small_targets(tmp_path_factory, NUM_IMAGES, SHARD)


def run(targets: str, out: Path, **options: object) -> zarr.Group:
    config = ExtractConfig(
        **{"model": "vit_tiny_patch16_224", "input_size": 64, "batch_size": 4, "shard_size": SHARD, **options}
    )
    extract(config, targets, str(out), progress=False)
    return zarr.open_group(str(out), mode="r")


def test_controls_have_the_models_shape_and_say_what_they_are(targets: str, tmp_path: Path) -> None:
    model = run(targets, tmp_path / "model.zarr", weights="random-init", layers=[-1, 5])
    for kind in (NOISE, POSITION):
        control = run(targets, tmp_path / f"{kind[8:]}.zarr", weights=kind, layers=[-1, 5])
        for name in ("layer_11", "layer_5"):
            assert control[name].shape == model[name].shape == (NUM_IMAGES, 4, 4, 192)
        prov = control.attrs["maxa"]["provenance"]
        assert prov["weights"] == kind and prov["control"]["kind"] == kind
        assert prov["backbone_params"] == 0 and prov["weights_sha256"] is None
        assert prov["feature_shapes"] == model.attrs["maxa"]["provenance"]["feature_shapes"]


def test_noise_is_iid_standard_normal_and_a_function_of_the_row(targets: str, tmp_path: Path) -> None:
    a = np.asarray(run(targets, tmp_path / "a.zarr", weights=NOISE)["layer_11"][:], np.float64)
    b = np.asarray(run(targets, tmp_path / "b.zarr", weights=NOISE, batch_size=3)["layer_11"][:], np.float64)
    np.testing.assert_array_equal(a, b)  # batching does not change what a row holds
    assert abs(a.mean()) < 0.05 and abs(a.std() - 1.0) < 0.05
    flat = a.reshape(NUM_IMAGES, -1)
    correlation = np.corrcoef(flat)[~np.eye(NUM_IMAGES, dtype=bool)]
    assert np.abs(correlation).max() < 0.1  # images do not share values


def test_position_control_is_the_same_for_every_image_and_encodes_the_grid(
    targets: str, tmp_path: Path
) -> None:
    grid = np.asarray(run(targets, tmp_path / "p.zarr", weights=POSITION)["layer_11"][:], np.float64)
    assert (grid == grid[:1]).all()
    # Independent definition: channels [sin(y f_k), cos(y f_k), sin(x f_k), cos(x f_k)], f_k = 1e4^(-k/48).
    f = [10000.0 ** (-k / 48) for k in range(48)]
    y, x = 2, 3
    expected = [math.sin(y * v) for v in f] + [math.cos(y * v) for v in f]
    expected += [math.sin(x * v) for v in f] + [math.cos(x * v) for v in f]
    np.testing.assert_allclose(grid[0, y, x], expected, atol=2e-3)  # stored as float16
    codes = grid[0].reshape(16, -1)
    assert len({tuple(np.round(c, 3)) for c in codes}) == 16  # every patch its own code


def test_position_codes_pad_odd_channel_counts_and_zero_prefix_tokens() -> None:
    codes = position_codes((2, 3, 10))
    assert codes.shape == (2, 3, 10) and (codes[..., 8:] == 0).all() and codes[..., :8].any()
    assert not position_codes((5, 10)).any()


def test_control_extraction_opens_and_decodes_no_image(
    targets: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a control store decoded an image or opened the dataset")

    monkeypatch.setattr(features, "read_image", refuse)
    monkeypatch.setattr(features, "dataset_from_targets", refuse)
    store = run(targets, tmp_path / "n.zarr", weights=NOISE)
    assert store["layer_11"].shape[0] == NUM_IMAGES and np.asarray(store["done"][:]).all()
    with pytest.raises(AssertionError, match="decoded an image"):
        run(targets, tmp_path / "m.zarr", weights="random-init")
