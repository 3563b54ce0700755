"""The stages end to end through the `maxa` CLI on a tiny synthetic set, and the CLI's errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import zarr

from tests.kit.cli import flags, invoke, ok

pytestmark = pytest.mark.heavy  # one module-wide run of every stage through the CLI (minutes)

BACKBONES = {
    "vit": ["--model", "vit_tiny_patch16_224", "--input-size", "96", "--layers=-1"],
    "cnn": ["--model", "convnext_atto", "--input-size", "96", "--layers=2"],
}


def _extract(root: Path, name: str, split: str, out: Path, backbone: str | None = None) -> list[str]:
    """`maxa extract` arguments of backbone `backbone` (default: `name`) on a split of the pipeline's data."""
    targets = root / f"targets/{split}.zarr"
    options = flags(targets=targets, name=name, batch_size=16, shard_size=16, out=out)
    return ["extract", *options, *BACKBONES[backbone or name]]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    for split, n in (("train", 96), ("val", 24)):
        data = [f"num_images={n}", "image_size=96", "num_classes=3"]
        ok(
            "prepare",
            *flags(split=split, o=data, label_size=32, shard_size=16, out=root / f"targets/{split}.zarr"),
        )
    for name in BACKBONES:
        for split in ("train", "val"):
            ok(*_extract(root, name, split, root / f"features/{name}/{split}.zarr"))
        features, models = root / f"features/{name}", root / f"models/{name}.pt"
        ok(
            "probe",
            *flags(features=features / "train.zarr", targets=root / "targets/train.zarr", iterations=250),
            *flags(batch_size=16, query_grid=4, out=models),
        )
        ok(
            "evaluate",
            *flags(checkpoint=models, features=features / "val.zarr", targets=root / "targets/val.zarr"),
            *flags(out=root / f"metrics/{name}.json"),
        )
    ok("report", str(root / "metrics"), "--out", str(root / "reports"))
    return root


def test_target_store_layout(pipeline: Path) -> None:
    group = zarr.open_group(str(pipeline / "targets/train.zarr"), mode="r")
    assert group["semantic"].shape == (96, 32, 32)
    assert group["image"].shape == (96, 32, 32, 3)
    assert group["semantic"].dtype == "uint8"
    assert group.attrs["maxa"]["provenance"]["num_classes"] == 4  # 3 shapes + background
    assert bool(group["done"][:].all())


def test_feature_store_shapes_and_provenance(pipeline: Path) -> None:
    vit = zarr.open_group(str(pipeline / "features/vit/train.zarr"), mode="r")
    cnn = zarr.open_group(str(pipeline / "features/cnn/train.zarr"), mode="r")
    assert vit["layer_11"].shape == (96, 6, 6, 192)  # 96 px / patch 16
    assert vit["layer_11"].dtype == "float16"
    assert vit["layer_11"].chunks == (1, 6, 6, 192)
    assert vit["layer_11"].shards == (16, 6, 6, 192)
    assert tuple(vit["layer_11"].metadata.dimension_names) == ("image", "y", "x", "channel")
    assert cnn["layer_2"].shape == (96, 6, 6, 160)  # stage 2 of ConvNeXt: stride 16
    prov = vit.attrs["maxa"]["provenance"]
    assert prov["model"] == "vit_tiny_patch16_224"
    assert prov["weights"] == "random-init"
    assert prov["input_size"] == [96, 96]
    assert prov["patch_size"] == [16, 16]
    assert prov["layers"] == ["layer_11"]
    assert prov["mean"] == [0.5, 0.5, 0.5]
    assert prov["backbone_params"] > 5_000_000
    assert (
        prov["dataset"]["fingerprint"]
        == zarr.open_group(str(pipeline / "targets/train.zarr"), mode="r").attrs["maxa"]["provenance"][
            "dataset_fingerprint"
        ]
    )
    assert [bytes(row).rstrip(b"\0").decode() for row in vit["ids"][:3]] == [  # uint8 UTF-8 codes
        "synthetic-train-000000",
        "synthetic-train-000001",
        "synthetic-train-000002",
    ]


def test_features_are_the_model_forward(pipeline: Path) -> None:
    """What the store holds for image 0 is the backbone's own output on that image."""
    from maxa.extract.backbones import load_backbone
    from maxa.extract.config import BackboneSpec
    from maxa.extract.datasets import build_dataset
    from maxa.extract.transforms import normalize, resize_image

    backbone = load_backbone(BackboneSpec("vit_tiny_patch16_224", input_size=96, layers=(-1,)))
    image = build_dataset("synthetic", split="train", num_images=96, image_size=96, num_classes=3)[0].image
    x = normalize(torch.from_numpy(resize_image(image, (96, 96)).copy())[None], backbone.mean, backbone.std)
    expected = backbone.features(x)["layer_11"][0].half()
    stored = torch.from_numpy(
        zarr.open_group(str(pipeline / "features/vit/train.zarr"), mode="r")["layer_11"][0]
    )
    torch.testing.assert_close(stored, expected, atol=2e-3, rtol=2e-3)


def test_probe_beats_constant_baseline(pipeline: Path) -> None:
    for name in BACKBONES:
        metrics = json.loads((pipeline / f"metrics/{name}.json").read_text())
        baseline = metrics["constant_baseline"]
        assert metrics["miou"] > baseline["miou"] + 0.05, (name, metrics["miou"], baseline)
        assert metrics["ce"] < baseline["ce"], (name, metrics["ce"], baseline)


def test_checkpoint_loads_weights_only(pipeline: Path) -> None:
    blob = torch.load(pipeline / "models/vit.pt", weights_only=True)
    meta = blob["meta"]
    assert meta["adapter_params"] == sum(
        v.numel() for v in blob["state_dict"].values() if v.is_floating_point()
    )
    assert meta["adapter_pct_of_backbone"] == pytest.approx(
        100 * meta["adapter_params"] / meta["backbone_params"]
    )


def test_report_lists_every_backbone(pipeline: Path) -> None:
    markdown = (pipeline / "reports/leaderboard.md").read_text()
    csv_text = (pipeline / "reports/leaderboard.csv").read_text()
    for name in BACKBONES:
        assert f"| {name} |" in markdown
        assert csv_text.count(f"\n{name},") == 1
    assert "adapter params" in markdown


def test_unknown_backbone_suggests_close_names(pipeline: Path, tmp_path: Path) -> None:
    targets = pipeline / "targets/val.zarr"
    result = invoke("extract", *flags(targets=targets, model="vit_tiny_patch16", out=tmp_path / "x.zarr"))
    assert result.exit_code == 1
    assert "unknown backbone 'vit_tiny_patch16'" in result.output
    assert "vit_tiny_patch16_224" in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_store_of_other_backbone_is_refused(pipeline: Path) -> None:
    store = pipeline / "features/vit/val.zarr"
    before = zarr.open_group(str(store), mode="r")["layer_11"][0]
    result = invoke(*_extract(pipeline, "vit", "val", store, backbone="cnn"))
    assert result.exit_code == 1
    assert "made from different inputs" in result.output and "model" in result.output
    after = zarr.open_group(str(store), mode="r")["layer_11"][0]
    assert (before == after).all()  # nothing overwritten


def test_finished_store_is_reused_not_recomputed(pipeline: Path) -> None:
    store = pipeline / "features/vit/val.zarr"
    mtime = (store / "layer_11" / "c" / "0" / "0" / "0" / "0").stat().st_mtime_ns
    ok(*_extract(pipeline, "vit", "val", store))
    assert (store / "layer_11" / "c" / "0" / "0" / "0" / "0").stat().st_mtime_ns == mtime


def test_missing_dataset_root(tmp_path: Path) -> None:
    result = invoke("prepare", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "t.zarr"))
    assert result.exit_code == 1
    assert "nowhere does not exist" in result.output


def test_empty_dataset(tmp_path: Path) -> None:
    result = invoke("prepare", "-o", "num_images=0", "--out", str(tmp_path / "t.zarr"))
    assert result.exit_code == 1
    assert "num_images" in result.output


def test_unknown_option_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke("probe", "--features", "a", "--targets", "b", "--out", "c", "--learning-rate", "1")
    assert result.exit_code == 2
    assert "No such option" in result.output and "--learning-rate" in result.output


def test_probe_refuses_mismatched_stores(pipeline: Path, tmp_path: Path) -> None:
    features, targets = pipeline / "features/vit/val.zarr", pipeline / "targets/train.zarr"
    result = invoke("probe", *flags(features=features, targets=targets, iterations=1, out=tmp_path / "m.pt"))
    assert result.exit_code == 1
    assert "describe different data (split:" in result.output


def test_missing_store_is_named(tmp_path: Path) -> None:
    missing = {"features": tmp_path / "none.zarr", "targets": tmp_path / "t.zarr", "out": tmp_path / "m.pt"}
    result = invoke("probe", *flags(**missing))
    assert result.exit_code == 1
    assert f"no maxa store at {tmp_path / 'none.zarr'}" in result.output


def test_prepare_a_real_dataset_from_its_params_entry(tmp_path: Path) -> None:
    """Pointing the pipeline at VOC on disk is a params.yaml entry; no command line or dvc.yaml changes."""
    import yaml

    from tests.extract.datasets.dataset_files import write_voc_tree

    voc = write_voc_tree(tmp_path / "data with space" / "VOCdevkit" / "VOC2012")
    params = {
        "datasets": {"voc": {"dataset": "voc", "root": str(voc), "label_size": 16, "shard_size": 2}},
        "backbones": {"vit": {"model": "vit_tiny_patch16_224"}},
        "tasks": {"semantic": {"task": "semantic", "dataset": "voc"}},
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    for role, count, split in (("train", 2, "train"), ("test", 1, "val")):
        out = tmp_path / f"{role}.zarr"
        ok("prepare", "--params", str(path), "--data", "voc", "--role", role, "--out", str(out))
        group = zarr.open_group(str(out), mode="r")
        prov = group.attrs["maxa"]["provenance"]
        assert (prov["dataset"], prov["split"], prov["num_classes"]) == ("voc", split, 21)
        assert group["semantic"].shape == (count, 16, 16)
