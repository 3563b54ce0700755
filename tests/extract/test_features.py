"""The extraction loop: stored features equal the models' own forward, for every family; the pipeline
(workers, background writing, OOM retry, resume, precision) never changes what is stored."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
import zarr
from torch import nn

from maxa.core import store as st
from maxa.core.errors import MaxaError
from maxa.extract import features as features_module
from maxa.extract.backbones import RANDOM_INIT_SEED, Backbone, load_backbone, timm
from maxa.extract.config import ExtractConfig
from maxa.extract.features import BatchedForward, _Prefetch, extract
from maxa.extract.shard_writer import ShardWriter
from maxa.extract.targets import dataset_from_targets
from maxa.extract.transforms import normalize, resize_image
from tests.extract.conftest import small_targets
from tests.kit.stores import empty_store

NUM_IMAGES = 10
SHARD = 4  # three shards, the last one partial


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> str:
    return small_targets(tmp_path_factory, NUM_IMAGES, SHARD)


def run(targets: str, out: Path, **options: Any) -> zarr.Group:
    config = ExtractConfig(**{"batch_size": 4, "shard_size": SHARD, **options})
    extract(config, targets, str(out), progress=False)
    return zarr.open_group(str(out), mode="r")


def inputs(targets: str, side: int, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """The split's images, resized and normalized: what the backbone saw."""
    dataset = dataset_from_targets(st.open_store(targets, "targets"))
    images = np.stack([resize_image(dataset[i].image, (side, side)) for i in range(NUM_IMAGES)])
    return normalize(torch.from_numpy(images), mean, std)


def seeded(name: str, **kwargs: Any) -> nn.Module:
    """The random-init network, rebuilt here with timm alone (no maxa code)."""
    torch.manual_seed(RANDOM_INIT_SEED)
    return timm.create_model(name, num_classes=0, **kwargs).eval().requires_grad_(False)


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[Backbone]:
    """The backbones extract() builds, so a test can run the very same network another way."""
    seen: list[Backbone] = []

    def load(*args: Any, **kwargs: Any) -> Backbone:
        seen.append(load_backbone(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(features_module, "load_backbone", load)
    return seen


def output_of(module: nn.Module, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What `module` returns during a plain forward_features pass: an independent path to a level."""
    seen: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.inference_mode():
        model.forward_features(x)
    handle.remove()
    return seen[0]


def close(stored: Any, expected: torch.Tensor) -> None:
    torch.testing.assert_close(
        torch.from_numpy(np.asarray(stored)).float(), expected.float(), atol=2e-2, rtol=1e-2
    )


# ------------------------------------------------------------------ every family's features


@pytest.mark.heavy
def test_vit_with_registers(targets: str, tmp_path: Path, built: list[Backbone]) -> None:
    name, side, reg = "vit_small_patch14_reg4_dinov2", 42, 5
    g = run(
        targets,
        tmp_path / "f.zarr",
        model=name,
        input_size=side,
        layers=[4, -1],
        norm=True,
        store_prefix=True,
    )
    model = built[0].model
    x = inputs(targets, side, g.attrs["maxa"]["provenance"]["mean"], g.attrs["maxa"]["provenance"]["std"])
    with torch.inference_mode():
        final = model.forward_features(x)  # normed, prefix tokens first
    close(g["layer_11"][:], final[:, reg:].reshape(NUM_IMAGES, 3, 3, 384))
    close(g["prefix_layer_11"][:], final[:, :reg])
    block4 = model.norm(output_of(model.blocks[4], model, x))
    close(g["layer_4"][:], block4[:, reg:].reshape(NUM_IMAGES, 3, 3, 384))
    close(g["prefix_layer_4"][:], block4[:, :reg])
    assert g["prefix_layer_11"].metadata.dimension_names == ("image", "token", "channel")
    prov = g.attrs["maxa"]["provenance"]
    assert prov["num_prefix_tokens"] == reg and prov["store_prefix"] is True
    assert prov["patch_size"] == [14, 14]


@pytest.mark.heavy
def test_convnext(targets: str, tmp_path: Path, built: list[Backbone]) -> None:
    g = run(targets, tmp_path / "f.zarr", model="convnext_atto", input_size=64, layers=[1, -1], norm=True)
    model = built[0].model
    x = inputs(targets, 64, g.attrs["maxa"]["provenance"]["mean"], g.attrs["maxa"]["provenance"]["std"])
    with torch.inference_mode():
        final = model.forward_features(x)
        # --norm: the final LayerNorm timm keeps in the head, at every position (DINOv3's ConvNeXt rule)
        normed = F.layer_norm(
            final.permute(0, 2, 3, 1), (320,), model.head.norm.weight, model.head.norm.bias, 1e-6
        )
    close(g["layer_3"][:], normed)
    close(g["layer_1"][:], output_of(model.stages[1], model, x).permute(0, 2, 3, 1))
    assert g["layer_3"].shape == (NUM_IMAGES, 2, 2, 320)
    assert "head.norm" in g.attrs["maxa"]["provenance"]["final_norm"]


@pytest.mark.heavy
def test_resnet(targets: str, tmp_path: Path) -> None:
    g = run(targets, tmp_path / "f.zarr", model="resnet18", input_size=64, layers=[2, -1])
    model = seeded("resnet18")  # rebuilt with timm alone: the stored network is the seeded one
    x = inputs(targets, 64, g.attrs["maxa"]["provenance"]["mean"], g.attrs["maxa"]["provenance"]["std"])
    with torch.inference_mode():
        final = model.forward_features(x)
    close(g["layer_4"][:], final.permute(0, 2, 3, 1))
    close(g["layer_2"][:], output_of(model.layer2, model, x).permute(0, 2, 3, 1))
    assert g.attrs["maxa"]["provenance"]["patch_size"] == [32, 32]


@pytest.mark.heavy
def test_swin_channel_last_stages(targets: str, tmp_path: Path, built: list[Backbone]) -> None:
    name = "swin_tiny_patch4_window7_224"
    g = run(targets, tmp_path / "f.zarr", model=name, input_size=64, layers=[1, -1], norm=True)
    model = built[0].model
    x = inputs(targets, 64, g.attrs["maxa"]["provenance"]["mean"], g.attrs["maxa"]["provenance"]["std"])
    with torch.inference_mode():
        final = model.forward_features(x)  # (B, h, w, C): Swin works channel-last
    close(g["layer_3"][:], final)
    close(g["layer_1"][:], output_of(model.layers[1], model, x))
    assert g["layer_1"].shape == (NUM_IMAGES, 8, 8, 192)


def test_weights_file_features(targets: str, tmp_path: Path) -> None:
    torch.manual_seed(123)
    source = timm.create_model("vit_tiny_patch16_224", num_classes=0, dynamic_img_size=True).eval()
    weights = tmp_path / "w.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(weights))
    g = run(
        targets,
        tmp_path / "f.zarr",
        model="vit_tiny_patch16_224",
        weights=str(weights),
        input_size=48,
        norm=True,
    )
    x = inputs(targets, 48, g.attrs["maxa"]["provenance"]["mean"], g.attrs["maxa"]["provenance"]["std"])
    with torch.inference_mode():
        close(g["layer_11"][:], source.forward_features(x)[:, 1:].reshape(NUM_IMAGES, 3, 3, 192))
    assert g.attrs["maxa"]["provenance"]["weights"] == "file:w.safetensors"


# ------------------------------------------------------------------ the pipeline changes nothing


@pytest.fixture(scope="module")
def reference(targets: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("ref") / "f.zarr"
    g = run(targets, out, model="vit_tiny_patch16_224", input_size=32, layers=[5, -1])
    return {name: g[name][:] for name in ("layer_5", "layer_11")}


BASE = {"model": "vit_tiny_patch16_224", "input_size": 32, "layers": [5, -1]}


def same_as(reference: dict[str, np.ndarray], out: Path, exact: bool = True) -> None:
    """Equal to the reference store; `exact=False` where batch sizes differ (float rounding differs)."""
    store = st.open_store(str(out), "features")  # complete, or this raises
    for name, expected in reference.items():
        if exact:
            np.testing.assert_array_equal(store.array(name)[:], expected)
        else:
            np.testing.assert_allclose(store.array(name)[:], expected, rtol=4e-3, atol=2e-3)


def flaky_oom(backbone: Backbone, limit: int) -> Callable[..., Any]:
    real = backbone.model.forward_intermediates

    def forward(x: torch.Tensor, **kwargs: Any) -> Any:
        if x.shape[0] > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(x, **kwargs)

    return forward


def test_out_of_memory_halves_the_batch(
    targets: str,
    tmp_path: Path,
    reference: dict[str, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    def load(*args: Any, **kwargs: Any) -> Backbone:
        backbone = load_backbone(*args, **kwargs)
        backbone.model.forward_intermediates = flaky_oom(backbone, limit=1)  # type: ignore[method-assign]
        return backbone

    monkeypatch.setattr(features_module, "load_backbone", load)
    run(targets, tmp_path / "f.zarr", **BASE)
    err = capsys.readouterr().err
    assert "out of GPU memory at batch size 4; retrying with 2" in err
    assert "out of GPU memory at batch size 2; retrying with 1" in err
    assert err.count("retrying") == 2  # the smaller batch sticks: no retry per batch
    same_as(reference, tmp_path / "f.zarr", exact=False)


def test_out_of_memory_at_batch_one_is_a_clear_error() -> None:
    backbone = load_backbone(ExtractConfig(**BASE).spec)
    backbone.model.forward_intermediates = flaky_oom(backbone, limit=0)  # type: ignore[method-assign]
    forward = BatchedForward(backbone, 2, None, torch.device("cpu"))
    with pytest.raises(MaxaError, match="out of GPU memory even for one image"):
        list(forward(torch.zeros(2, 32, 32, 3, dtype=torch.uint8)))


def test_decoding_in_worker_processes(targets: str, tmp_path: Path, reference: dict[str, np.ndarray]) -> None:
    run(targets, tmp_path / "f.zarr", **BASE, num_workers=2)
    same_as(reference, tmp_path / "f.zarr")


def test_interrupted_write_resumes(
    targets: str, tmp_path: Path, reference: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = st.Store.write_shard

    def failing(self: st.Store, shard: int, arrays: Any) -> None:
        if shard == 1:
            raise OSError("disk full (simulated)")
        real(self, shard, arrays)

    monkeypatch.setattr(st.Store, "write_shard", failing)
    with pytest.raises(OSError, match="disk full"):
        run(targets, tmp_path / "f.zarr", **BASE)
    partial = st.open_store(str(tmp_path / "f.zarr"), "features", require_complete=False)
    assert partial.done_shards().tolist()[:2] == [True, False]
    monkeypatch.setattr(st.Store, "write_shard", real)
    run(targets, tmp_path / "f.zarr", **BASE)
    same_as(reference, tmp_path / "f.zarr")


def test_one_workers_shards(targets: str, tmp_path: Path, reference: dict[str, np.ndarray]) -> None:
    config = ExtractConfig(**BASE, batch_size=4, shard_size=SHARD)
    store = extract(config, targets, str(tmp_path / "f.zarr"), progress=False, shards=[2])
    assert store.done_shards().tolist() == [False, False, True]
    np.testing.assert_array_equal(store.array("layer_11")[8:], reference["layer_11"][8:])
    run(targets, tmp_path / "f.zarr", **BASE)
    same_as(reference, tmp_path / "f.zarr")


def test_extraction_decodes_images_only(
    targets: str, tmp_path: Path, reference: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    from maxa.extract.datasets import synthetic

    def no_targets(*args: object) -> None:
        raise AssertionError("extraction rendered targets it never stores")

    monkeypatch.setattr(synthetic, "_targets", no_targets)
    run(targets, tmp_path / "f.zarr", **BASE)
    same_as(reference, tmp_path / "f.zarr")


def test_feature_shards_are_written_raw(
    targets: str, tmp_path: Path, reference: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    from maxa.core.store import raw as shard_writer

    written: list[str] = []
    real = shard_writer._write_file

    def spy(path: Path, *args: Any) -> None:
        written.append(str(path.relative_to(tmp_path / "f.zarr")))
        real(path, *args)

    monkeypatch.setattr(shard_writer, "_write_file", spy)
    run(targets, tmp_path / "f.zarr", **BASE)
    expected = [f"{name}/c/{shard}/0/0/0" for name in reference for shard in range(3)]
    assert sorted(written) == sorted(expected)  # every layer's every shard, once, by the raw path
    same_as(reference, tmp_path / "f.zarr")


def test_writer_threads_write_whole_shards(tmp_path: Path) -> None:
    spec = {"x": st.ArraySpec((2,), "float16", ("image", "channel"))}
    store = empty_store(str(tmp_path / "s.zarr"), spec, 9, 2)
    writer = ShardWriter(store, threads=3)
    for shard in range(store.num_shards):
        start, stop = store.shard_range(shard)
        writer.put(shard, {"x": np.arange(start, stop, dtype=np.float16)[:, None].repeat(2, 1)})
    writer.close()
    assert store.complete
    np.testing.assert_array_equal(store.array("x")[:, 0], np.arange(9))


def test_bf16_precision_is_recorded_and_close(
    targets: str, tmp_path: Path, reference: dict[str, np.ndarray]
) -> None:
    g = run(targets, tmp_path / "f.zarr", **BASE, precision="bf16")
    assert g.attrs["maxa"]["provenance"]["precision"] == "bfloat16"
    scale = np.abs(reference["layer_11"]).max()
    np.testing.assert_allclose(g["layer_11"][:], reference["layer_11"], atol=0.1 * scale)
    with pytest.raises(MaxaError, match="precision: 'bfloat16' -> 'float32'"):
        run(targets, tmp_path / "f.zarr", **BASE)  # never mix precisions in one store


def test_bad_input_size_for_a_cnn_fails_before_writing(targets: str, tmp_path: Path) -> None:
    with pytest.raises(MaxaError, match="input size 16 does not work with 'convnext_atto'"):
        run(targets, tmp_path / "f.zarr", model="convnext_atto", input_size=16, layers=[-1])
    assert not (tmp_path / "f.zarr").exists()


def test_prefetch_keeps_order_and_errors() -> None:
    assert list(_Prefetch(iter(range(7)), depth=2)) == list(range(7))

    def broken() -> Any:
        yield 1
        raise ValueError("corrupt image (simulated)")

    with pytest.raises(ValueError, match="corrupt image"):
        list(_Prefetch(broken()))
    early = _Prefetch(iter(range(100)), depth=1)
    assert next(iter(early)) == 0
    early.close()  # a consumer that fails mid-way must not leave the thread blocked
    assert not early.thread.is_alive()
