"""Non-square inputs (`--input-size HxW`) and native-resolution target stores (`--label-size native`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from maxa.core.dataset_facts import dino_input_size
from maxa.core.errors import MaxaError
from maxa.core.store import open_store
from maxa.extract.backbones import RANDOM_INIT_SEED, timm
from maxa.extract.config import ExtractConfig, input_hw, parse_input_size
from maxa.extract.features import extract
from maxa.extract.targets import PrepareConfig, dataset_from_targets, prepare
from maxa.extract.transforms import normalize, resize_image


@pytest.mark.parametrize(
    ("value", "expected"),
    [(224, 224), ("224", 224), ("480x832", (480, 832)), ("480 832", (480, 832)), ("480,832", (480, 832)),
     ([480, 832], (480, 832)), ((64, 64), 64), (None, None)],
)  # fmt: skip
def test_input_size_forms(value: object, expected: object) -> None:
    assert parse_input_size(value) == expected


def test_bad_input_sizes_are_refused() -> None:
    for value in ("big", "1x2x3", []):
        with pytest.raises(MaxaError, match="--input-size must be a side or HxW"):
            parse_input_size(value)
    with pytest.raises(MaxaError, match="must be >= 16 pixels"):
        ExtractConfig(model="vit_tiny_patch16_224", input_size="8x64")
    assert input_hw(96) == (96, 96) and input_hw((32, 64)) == (32, 64)


def test_dino_keeps_the_aspect_ratio_and_floors_the_long_side_to_64() -> None:
    # eval_video_segmentation.py read_frame: short side 480, long side * 480 / short, floored to 64.
    for h, w in [(480, 854), (854, 480), (480, 640), (1080, 1920), (500, 500)]:
        short, long = min(h, w), max(h, w)
        expected_long = int((480 * long / short) // 64 * 64)
        expected = (480, expected_long) if h <= w else (expected_long, 480)
        assert dino_input_size(h, w) == expected
    assert dino_input_size(480, 854) == (480, 832)


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = str(tmp_path_factory.mktemp("t") / "t.zarr")
    prepare(
        PrepareConfig(
            split="val", label_size="native", shard_size=4, options={"num_images": 5, "image_size": 40}
        ),
        url,
        progress=False,
    )
    return url


def test_native_label_size_keeps_the_images_own_resolution(targets: str) -> None:
    store = open_store(targets, "targets")
    assert store.provenance["label_size"] == [40, 40] and store.provenance["label_resolution"] == "native"
    dataset = dataset_from_targets(store)
    np.testing.assert_array_equal(np.asarray(store.array("semantic")[2]), dataset[2].targets["semantic"])
    np.testing.assert_array_equal(np.asarray(store.array("image")[2]), dataset[2].image)
    square = PrepareConfig(label_size="32")
    assert square.label_size == 32
    with pytest.raises(MaxaError, match="--label-size must be a side in pixels or 'native'"):
        PrepareConfig(label_size="full")


def test_native_label_size_refuses_mixed_image_sizes(tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for name, size in [("a", (20, 30)), ("b", (20, 30)), ("c", (24, 30))]:
        Image.fromarray(np.zeros((*size, 3), np.uint8)).save(folder / f"{name}.png")
    config = PrepareConfig(dataset="folder", split="all", root=str(folder), label_size="native")
    with pytest.raises(MaxaError, match=r"sample .*c.* is 24x30 but the split's first image is 20x30"):
        prepare(config, str(tmp_path / "t.zarr"), progress=False)


def test_non_square_features_equal_timms_forward(targets: str, tmp_path: Path) -> None:
    config = ExtractConfig(
        model="vit_tiny_patch16_224", weights="random-init", input_size="32x64", layers=[-1],
        batch_size=4, shard_size=4, device="cpu",
    )  # fmt: skip
    extract(config, targets, str(tmp_path / "f.zarr"), progress=False)
    group = zarr.open_group(str(tmp_path / "f.zarr"), mode="r")
    prov = group.attrs["maxa"]["provenance"]
    assert prov["input_size"] == [32, 64] and prov["patch_size"] == [16, 16]
    stored = np.asarray(group["layer_11"][:])
    assert stored.shape == (5, 2, 4, 192)
    dataset = dataset_from_targets(open_store(targets, "targets"))
    images = np.stack([resize_image(dataset[i].image, (32, 64)) for i in range(5)])
    x = normalize(torch.from_numpy(images), prov["mean"], prov["std"])
    torch.manual_seed(RANDOM_INIT_SEED)
    model = timm.create_model("vit_tiny_patch16_224", num_classes=0, dynamic_img_size=True).eval()
    with torch.inference_mode():  # the last block's tokens, without the final norm (norm=False)
        expected = model.blocks(model.norm_pre(model._pos_embed(model.patch_embed(x))))
    torch.testing.assert_close(
        torch.from_numpy(stored).float(),
        expected[:, model.num_prefix_tokens :].reshape(5, 2, 4, 192).float(),
        atol=2e-2,
        rtol=1e-2,
    )
    with pytest.raises(MaxaError, match=r"--input-size 40 is not a multiple of .* patch size 16"):
        extract(
            ExtractConfig(
                model="vit_tiny_patch16_224", weights="random-init", input_size="32x40", device="cpu"
            ),
            targets,
            str(tmp_path / "bad.zarr"),
            progress=False,
        )
