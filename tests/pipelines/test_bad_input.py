"""The bad-input suite (issue #10 item 14): every case ends with exit status != 0, one line that names
the file, option or store and what was expected, no traceback, and nothing computed lost or half-written.

Stores are tiny (synthetic targets, "pixel" features from tests/kit/stores.py) so the suite runs in
well under a minute on one core; only the cases that need a real backbone run one (vit_tiny at 32 px).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from click.testing import Result

from maxa.core import store as st
from maxa.core.errors import MaxaError
from maxa.extract.targets import PrepareConfig, prepare
from tests.extract.datasets.dataset_files import write_noise_pngs
from tests.kit.cli import invoke
from tests.kit.stores import copy_store, write_feature_store

TINY = ["--model", "vit_tiny_patch16_224", "--weights", "random-init", "--input-size", "32", "--layers=-1"]
FAST_PROBE = ["--adapter", "linear", "--iterations", "3", "--batch-size", "8", "--layer", "layer_0"]


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_evaluate(
    checkpoint: str | Path, features: str | Path, targets: str | Path, out: str | Path, *extra: str
) -> Result:
    """`maxa evaluate --checkpoint C --features F --targets T --out O [extra options]`."""
    return invoke(
        "evaluate",
        "--checkpoint",
        checkpoint,
        "--features",
        features,
        "--targets",
        targets,
        "--out",
        out,
        *extra,
    )


def run_probe(features: str | Path, targets: str | Path, out: str | Path, *extra: str) -> Result:
    """`maxa probe --features F --targets T --out O` with the fast settings and any extra options."""
    return invoke("probe", "--features", features, "--targets", targets, "--out", out, *FAST_PROBE, *extra)


def run_extract(targets: str | Path, out: str | Path, *extra: str, backbone: list[str] = TINY) -> Result:
    """`maxa extract --targets T --out O` of the tiny backbone (or `backbone`'s options) and extra options."""
    return invoke("extract", "--targets", targets, "--out", out, *extra, *backbone)


def refused(result: Result, *names: str, code: int = 1) -> str:
    """The command failed with one `Error:` line naming every given thing; returns that line."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = re.split(r"[\r\n]", result.output)  # a progress bar may end without a newline
    errors = [line[line.index("Error: ") :] for line in lines if "Error: " in line]
    assert len(errors) == 1, result.output
    line = errors[0]
    print(f"[refused] {line}")  # shown with -s: the message catalogue of the closing note
    for name in names:
        assert str(name) in line, f"{name!r} not named in: {line}"
    return line


def tree(path: Path) -> dict[str, bytes]:
    """Every file under a folder with its bytes: 'nothing was changed' is tree(before) == tree(after)."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _targets(out: Path, split: str, n: int, classes: int = 3) -> str:
    options = {"num_images": n, "image_size": 64, "num_classes": classes, "max_objects": 4}
    prepare(
        PrepareConfig(split=split, label_size=32, shard_size=16, options=options), str(out), progress=False
    )
    return str(out)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad input")  # a space in every path on purpose
    paths: dict[str, Path] = {}
    for split, n in (("train", 48), ("val", 16)):
        paths[f"t_{split}"] = Path(_targets(root / f"targets {split}.zarr", split, n))
        paths[f"f_{split}"] = Path(
            write_feature_store(str(paths[f"t_{split}"]), str(root / f"features {split}.zarr"))
        )
    paths["ckpt"] = root / "model one.pt"
    result = invoke(
        "probe",
        "--features",
        paths["f_train"],
        "--targets",
        paths["t_train"],
        "--out",
        paths["ckpt"],
        *FAST_PROBE,
    )
    assert result.exit_code == 0, result.output
    paths["root"] = root
    return paths


def _copy_store(source: Path, out: Path, *, nan_at: int | None = None, **changes: object) -> Path:
    """A copy of a store; with `nan_at`, image `nan_at` of layer_0 holds a NaN (recorded as kept on purpose,
    so the reader must be the one that refuses)."""

    def put_nan(arrays: dict[str, np.ndarray]) -> None:
        arrays["layer_0"][nan_at, 0, 0, 0] = np.nan

    if nan_at is not None:
        changes["nonfinite"] = "keep"
    return Path(copy_store(str(source), str(out), edit=None if nan_at is None else put_nan, **changes))


# ------------------------------------------------------------------ joins (item 4)


def test_checkpoint_on_another_class_space(data: dict[str, Path], tmp_path: Path) -> None:
    targets = Path(_targets(tmp_path / "other t.zarr", "val", 16, classes=5))
    features = write_feature_store(str(targets), str(tmp_path / "other f.zarr"))
    out = tmp_path / "m.json"
    line = refused(
        run_evaluate(data["ckpt"], features, targets, out),
        data["ckpt"],
        "class names",
    )
    assert not out.exists()
    assert "does not fit these stores" in line


def test_checkpoint_on_another_backbone(data: dict[str, Path], tmp_path: Path) -> None:
    other = _copy_store(data["f_val"], tmp_path / "b.zarr", model="other_net", name="B", norm=True)
    out = tmp_path / "m.json"
    line = refused(
        run_evaluate(data["ckpt"], other, data["t_val"], out),
        data["ckpt"],
        "backbone fingerprint",
        "differs in",
        "'other_net'",
    )
    differing = line.split("differs in ", 1)[1]
    assert "model (" in differing and "norm (" in differing and "input_size" not in differing
    assert not out.exists()


def test_feature_and_target_stores_of_different_splits(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    refused(
        invoke("probe", "--features", data["f_val"], "--targets", data["t_train"], "--out", out, *FAST_PROBE),
        data["f_val"],
        data["t_train"],
        "split: 'val' vs 'train'",
    )
    assert not out.exists()


# ------------------------------------------------------------------ non-finite values (item 5)


def test_nan_in_train_store_named_not_blamed_on_lr(data: dict[str, Path], tmp_path: Path) -> None:
    bad = _copy_store(data["f_train"], tmp_path / "nan.zarr", nan_at=5)
    out = tmp_path / "m.pt"
    line = refused(
        invoke("probe", "--features", bad, "--targets", data["t_train"], "--out", out, *FAST_PROBE),
        bad,
        "NaN or inf",
        repr(st.open_store(str(bad)).ids()[5]),
    )
    assert "--lr" not in line and not out.exists()


def test_nan_in_val_store_refused_by_evaluate(data: dict[str, Path], tmp_path: Path) -> None:
    bad = _copy_store(data["f_val"], tmp_path / "nan.zarr", nan_at=3)
    out = tmp_path / "m.json"
    refused(
        run_evaluate(data["ckpt"], bad, data["t_val"], out),
        bad,
        "NaN or inf",
        repr(st.open_store(str(bad)).ids()[3]),
    )
    assert not out.exists()


def test_nan_from_the_backbone_never_marks_a_shard_done(tmp_path: Path) -> None:
    store = st.create_or_resume(
        str(tmp_path / "f.zarr"),
        kind="features",
        provenance={"model": "m"},
        ids=["a", "b"],
        arrays={"layer_0": st.ArraySpec((1, 1, 2), "float16", ("image", "y", "x", "channel"))},
        shard_size=2,
    )
    with pytest.raises(MaxaError, match=r"layer_0 holds NaN or inf for 1 image\(s\) \(first: 'b'\)"):
        store.write_shard(0, {"layer_0": np.array([[[[0, 1]]], [[[np.inf, 0]]]], np.float16)})
    assert store.pending_shards() == [0]


# ------------------------------------------------------------------ content fingerprints, portability (6, 7)


def _folder(root: Path, n: int = 3, seed: int = 0) -> Path:
    return write_noise_pngs(root, n, seed * 1000, (20, 20), "im {}.png")


def test_image_swapped_after_prepare_refused_by_extract(tmp_path: Path) -> None:
    images = _folder(tmp_path / "my data")
    targets = tmp_path / "t.zarr"
    assert (
        invoke(
            "prepare", "--dataset", "folder", "--root", images, "--label-size", "8", "--out", targets
        ).exit_code
        == 0
    )
    _folder(tmp_path / "other", seed=5)
    shutil.copy(tmp_path / "other" / "im 1.png", images / "im 1.png")
    out = tmp_path / "f.zarr"
    refused(
        run_extract(targets, out),
        "'im 1.png'",
        "differs from what prepare read",
    )
    assert not st.open_store(str(out), require_complete=False).done_shards().any()


def test_root_typed_relative_is_stored_resolved_and_root_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _folder(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    assert (
        invoke(
            "prepare", "--dataset", "folder", "--root", "data", "--label-size", "8", "--out", "t.zarr"
        ).exit_code
        == 0
    )
    elsewhere = tmp_path / "colleague"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    shutil.move(str(tmp_path / "data"), str(elsewhere / "copy"))
    targets = str(tmp_path / "t.zarr")
    refused(run_extract(targets, "f.zarr"), str(tmp_path / "data"), "--root")
    result = run_extract(targets, "f.zarr", "--root", "copy")
    assert result.exit_code == 0, result.output
    assert st.open_store("f.zarr").complete


# ------------------------------------------------------------------ writable outputs, crash safety (8)


@pytest.fixture
def blocked(tmp_path: Path) -> Path:
    """A path under a plain file: nothing can be written there (works as root, unlike chmod)."""
    blocker = tmp_path / "a file"
    blocker.write_text("x")
    return blocker


def test_unwritable_probe_out_found_before_training(data: dict[str, Path], blocked: Path) -> None:
    refused(
        run_probe(data["f_train"], data["t_train"], blocked / "m.pt"), blocked / "m.pt", "cannot be written"
    )


def test_unwritable_outputs_of_every_stage(data: dict[str, Path], blocked: Path) -> None:
    refused(
        invoke("prepare", "-o", "num_images=4", "--out", blocked / "t.zarr"),
        blocked / "t.zarr",
        "cannot be written",
    )
    refused(run_extract(data["t_val"], blocked / "f.zarr"), blocked / "f.zarr")
    refused(
        run_evaluate(data["ckpt"], data["f_val"], data["t_val"], blocked / "m.json"),
        blocked / "m.json",
        "cannot be written",
    )
    refused(invoke("store", "stats", data["f_val"], "--out", blocked / "s.zarr"), blocked / "s.zarr")
    refused(
        invoke("store", "export-hdf5", data["f_val"], blocked / "x.h5"), blocked / "x.h5", "cannot be written"
    )
    metrics = blocked.parent / "m.json"
    result = run_evaluate(data["ckpt"], data["f_val"], data["t_val"], metrics)
    assert result.exit_code == 0, result.output
    refused(invoke("report", metrics, "--out", blocked / "reports"), blocked / "reports", "cannot be written")
    refused(
        invoke("plots", "--metrics", metrics, "--out", blocked / "plots"),
        blocked / "plots",
        "cannot be written",
    )


def test_kill_during_creation_then_resume(tmp_path: Path) -> None:
    out = tmp_path / "t.zarr"
    args = ("prepare", "-o", "num_images=8", "-o", "image_size=32", "--label-size", "8", "--shard-size", "4")
    assert invoke(*args, "--out", out).exit_code == 0
    reference = st.open_store(str(out)).read("image")
    meta = dict(zarr.open_group(str(out)).attrs["maxa"])
    shutil.rmtree(out)
    zarr.open_group(str(out), mode="w", attributes={"maxa": {**meta, "creating": True}})  # killed right after
    refused(invoke("store", "info", out), out, "interrupted while being created")
    assert invoke(*args, "--out", out).exit_code == 0  # no --overwrite needed
    np.testing.assert_array_equal(st.open_store(str(out)).read("image"), reference)


def test_ctrl_c_on_extract_says_how_to_resume(
    data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import maxa.extract.features as features

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(features, "extract", interrupted)
    out = tmp_path / "f.zarr"
    result = run_extract(data["t_val"], out)
    assert result.exit_code == 130
    assert f"finished shards of {out} are kept: re-run the same command to resume" in result.output


# ------------------------------------------------------------------ records and fingerprints (3, 6, 9)


def test_edited_provenance_refused_on_open_and_by_verify(data: dict[str, Path], tmp_path: Path) -> None:
    copy = _copy_store(data["f_val"], tmp_path / "c.zarr")
    group = zarr.open_group(str(copy), mode="r+")
    meta = dict(group.attrs["maxa"])
    group.attrs["maxa"] = {**meta, "provenance": {**meta["provenance"], "weights": "swapped"}}
    refused(invoke("store", "verify", copy), copy, f"fingerprint {meta['fingerprint']} does not match")
    refused(
        run_evaluate(data["ckpt"], copy, data["t_val"], tmp_path / "m.json"),
        copy,
        "does not match its provenance",
    )


def test_missing_provenance_field_refused_before_training(data: dict[str, Path], tmp_path: Path) -> None:
    src = st.open_store(str(data["f_train"]))
    prov = {k: v for k, v in src.provenance.items() if k != "backbone_params"}
    bad = _copy_store(data["f_train"], tmp_path / "nobp.zarr")
    group = zarr.open_group(str(bad), mode="r+")
    group.attrs["maxa"] = {
        **dict(group.attrs["maxa"]),
        "provenance": prov,
        "fingerprint": st.fingerprint(prov),
    }
    out = tmp_path / "m.pt"
    refused(
        invoke("probe", "--features", bad, "--targets", data["t_train"], "--out", out, *FAST_PROBE),
        bad,
        "backbone_params",
    )
    assert not out.exists()


def test_newer_store_format_refused(data: dict[str, Path], tmp_path: Path) -> None:
    copy = _copy_store(data["t_val"], tmp_path / "n.zarr")
    group = zarr.open_group(str(copy), mode="r+")
    group.attrs["maxa"] = {**dict(group.attrs["maxa"]), "format_version": st.FORMAT_VERSION + 1}
    before = tree(copy)
    refused(invoke("store", "info", copy), copy, "newer maxa")
    refused(invoke("prepare", "-o", "num_images=4", "--out", copy), copy, "newer maxa")
    assert tree(copy) == before


def test_store_stats_leave_the_store_byte_identical(data: dict[str, Path], tmp_path: Path) -> None:
    copy = _copy_store(data["f_val"], tmp_path / "s.zarr")
    before = tree(copy)
    assert invoke("store", "stats", copy, "--components", "2").exit_code == 0
    assert tree(copy) == before
    assert (tmp_path / "s.stats.zarr").is_dir()


def test_store_stats_in_a_dvc_project_land_outside_its_outputs(
    data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The generated layout keeps a store inside the folder output data/features/<ds>/<backbone>: a file
    beside the store would be a change of that output (issue 21: dvc status said modified)."""
    project = tmp_path / "project"
    (project / ".dvc").mkdir(parents=True)
    output = project / "data" / "features" / "syn" / "vit"
    store = _copy_store(data["f_val"], output / "test.zarr")
    before = tree(output)
    monkeypatch.chdir(project)
    result = invoke("store", "stats", "data/features/syn/vit/test.zarr", "--components", "2")
    assert result.exit_code == 0, result.output
    assert tree(output) == before  # the whole output folder, not only the store
    saved = project / "stats" / "data" / "features" / "syn" / "vit" / "test.stats.zarr"
    assert saved.is_dir() and str(saved) in result.output
    assert invoke("store", "stats", store, "--components", "2").exit_code == 0  # absolute URL: same place
    assert tree(output) == before


def test_export_to_missing_folder_and_truncated_import(data: dict[str, Path], tmp_path: Path) -> None:
    h5 = tmp_path / "x.h5"
    assert invoke("store", "export-hdf5", data["t_val"], h5).exit_code == 0
    cut = tmp_path / "cut.h5"
    cut.write_bytes(h5.read_bytes()[:4096])
    refused(invoke("store", "import-hdf5", cut, tmp_path / "back.zarr"), cut)
    refused(
        invoke("store", "import-hdf5", tmp_path / "none.h5", tmp_path / "back.zarr"),
        tmp_path / "none.h5",
        "does not exist",
    )


# ------------------------------------------------------------------ runs are identities (10)


def test_resume_without_state_and_finished_checkpoint(data: dict[str, Path], tmp_path: Path) -> None:
    before = data["ckpt"].read_bytes()
    args = ("probe", "--features", data["f_train"], "--targets", data["t_train"], *FAST_PROBE)
    refused(invoke(*args, "--out", data["ckpt"], "--resume"), data["ckpt"], "nothing to resume")
    refused(invoke(*args, "--out", data["ckpt"], "--lr", "0.5"), data["ckpt"], "--overwrite")
    assert data["ckpt"].read_bytes() == before
    fresh = tmp_path / "new.pt"
    refused(invoke(*args, "--out", fresh, "--resume"), f"{fresh}.resume", "no saved state")
    assert not fresh.exists()


def test_update_resumes_its_own_state_and_replaces_the_rest(data: dict[str, Path], tmp_path: Path) -> None:
    """`maxa probe --update` (what the generated DVC stages run): its own saved state is resumed, another
    run's state and a finished checkpoint of other settings are replaced, never refused."""
    from maxa.probe.train import ProbeConfig, resume_path, train

    args = ("probe", "--features", data["f_train"], "--targets", data["t_train"], *FAST_PROBE)
    out = tmp_path / "m.pt"
    settings = {"adapter": "linear", "batch_size": 8, "layer": "layer_0", "checkpoint_every": 2}

    def crash(step: int, loss: float) -> None:
        if step == 4:
            raise RuntimeError("machine down")

    with pytest.raises(RuntimeError):  # a crash after step 5: the periodic state holds step 4
        train(ProbeConfig(iterations=8, **settings), str(data["f_train"]), str(data["t_train"]), str(out),
              progress=False, callback=crash)  # fmt: skip
    assert torch.load(resume_path(out), weights_only=True)["step"] == 4
    update = (*args, "--iterations", "8", "--checkpoint-every", "2", "--out", out, "--update")
    assert invoke(*update).exit_code == 0
    resumed = torch.load(out, weights_only=True)
    assert resumed["meta"]["resumed_from_step"] == 4 and not resume_path(out).exists()
    fresh = tmp_path / "fresh.pt"
    assert invoke(*args, "--iterations", "8", "--out", fresh).exit_code == 0
    for key, value in torch.load(fresh, weights_only=True)["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key

    # changed settings: the finished checkpoint is retrained, not refused (DVC's cache keeps the old one)
    assert invoke(*update, "--lr", "0.01").exit_code == 0
    replaced = torch.load(out, weights_only=True)["meta"]
    assert replaced["config"]["lr"] == 0.01 and replaced["resumed_from_step"] == 0

    # another run's saved state is started over, not resumed and not refused
    with pytest.raises(RuntimeError):
        train(ProbeConfig(iterations=8, lr=0.5, **settings), str(data["f_train"]), str(data["t_train"]),
              str(tmp_path / "other.pt"), progress=False, callback=crash)  # fmt: skip
    with pytest.warns(UserWarning, match="from an earlier run is replaced"):
        assert invoke(*args, "--iterations", "8", "--out", tmp_path / "other.pt", "--update").exit_code == 0
    assert torch.load(tmp_path / "other.pt", weights_only=True)["meta"]["resumed_from_step"] == 0
    refused(invoke(*update, "--overwrite"), "--update", "--overwrite")


def test_metrics_record_names_run_checkpoint_and_stores(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    result = run_evaluate(data["ckpt"], data["f_val"], data["t_val"], out)
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())  # strict JSON
    meta = torch.load(data["ckpt"], weights_only=True)["meta"]
    assert record["run_id"] == meta["run_id"]
    assert record["checkpoint"]["fingerprint"] == hashlib.sha256(data["ckpt"].read_bytes()).hexdigest()[:16]
    assert record["stores"]["features"]["fingerprint"] == st.open_store(str(data["f_val"])).fingerprint
    assert record["format"] >= 1 and isinstance(record["nulls"], dict)


# ------------------------------------------------------------------ cases handled before (regressions)


def test_changed_settings_without_overwrite(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "t.zarr"
    assert invoke("prepare", "-o", "num_images=4", "--label-size", "8", "--out", out).exit_code == 0
    before = tree(out)
    refused(invoke("prepare", "-o", "num_images=4", "--label-size", "16", "--out", out), out, "--overwrite")
    assert tree(out) == before


def test_foreign_folder_never_replaced(tmp_path: Path) -> None:
    out = tmp_path / "t.zarr"
    zarr.open_group(str(out), mode="w").create_array("mine", shape=(2,), dtype="int8")[:] = 3
    refused(invoke("prepare", "-o", "num_images=4", "--out", out), out, "not a maxa store")
    assert zarr.open_group(str(out))["mine"][:].tolist() == [3, 3]


def test_unknown_backbone_and_bad_checkpoint(data: dict[str, Path], tmp_path: Path) -> None:
    refused(
        run_extract(data["t_val"], tmp_path / "f.zarr", backbone=["--model", "vit_tinyy_patch16_224"]),
        "vit_tinyy_patch16_224",
    )
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    refused(
        run_evaluate(junk, data["f_val"], data["t_val"], tmp_path / "m.json"),
        junk,
        "not a maxa checkpoint",
    )


def test_read_only_output_folder(data: dict[str, Path], tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes through permission bits")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        refused(
            run_evaluate(data["ckpt"], data["f_val"], data["t_val"], folder / "m.json"),
            folder / "m.json",
            "cannot be written",
        )
    finally:
        folder.chmod(stat.S_IRWXU)


def test_nan_features_from_extract_never_mark_a_shard_done(
    data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import maxa.extract.features as features

    real = features._ToHost.finish

    def poisoned(job: object) -> dict[str, np.ndarray]:
        arrays = real(job)  # type: ignore[arg-type]
        rows = job.indices  # type: ignore[attr-defined]
        for name in arrays:
            hit = np.flatnonzero(rows == 5)
            if len(hit):
                arrays[name][hit[0]] = np.nan
        return arrays

    monkeypatch.setattr(features._ToHost, "finish", staticmethod(poisoned))
    out = tmp_path / "f.zarr"
    ids = st.open_store(str(data["t_val"])).ids()
    small = ["--shard-size", "4", "--batch-size", "4"]
    refused(
        run_extract(data["t_val"], out, *small),
        out,
        "NaN or inf",
        repr(ids[5]),
        "not marked done",
    )
    done = st.open_store(str(out), require_complete=False).done_shards()
    assert not done[1]  # the shard holding image 5 stays undone, so a rerun recomputes it
    kept = tmp_path / "kept.zarr"
    result = run_extract(data["t_val"], kept, *small, "--keep-nonfinite")
    assert result.exit_code == 0, result.output
    store = st.open_store(str(kept))
    assert store.provenance["nonfinite"] == "keep"  # the choice is recorded (and fingerprinted)
    layer = next(name for name in store.array_names() if name.startswith("layer_"))
    assert np.isnan(store.array(layer)[5]).any()  # kept as computed, for inspection


def test_bad_input_size_corrupt_image_and_empty_folder(data: dict[str, Path], tmp_path: Path) -> None:
    size = [a if a != "32" else "40" for a in TINY]  # 40 px is not a multiple of the 16 px patch
    out = tmp_path / "f.zarr"
    refused(run_extract(data["t_val"], out, backbone=size), "40")
    images = _folder(tmp_path / "imgs")
    (images / "im 1.png").write_bytes(b"\x89PNG broken")
    refused(
        invoke("prepare", "--dataset", "folder", "--root", images, "--out", tmp_path / "t.zarr"),
        "im 1.png",
        "--skip-bad",
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(invoke("prepare", "--dataset", "folder", "--root", empty, "--out", tmp_path / "e.zarr"), empty)
    assert not (tmp_path / "e.zarr").exists()


def test_newer_checkpoint_format_refused(data: dict[str, Path], tmp_path: Path) -> None:
    blob = torch.load(data["ckpt"], weights_only=True)
    blob["meta"]["format"] = 99
    newer = tmp_path / "newer.pt"
    torch.save(blob, newer)
    refused(
        run_evaluate(newer, data["f_val"], data["t_val"], tmp_path / "m.json"),
        newer,
        "upgrade maxa",
    )


# ------------------------------------------------------------------ checks before the work (issue 21 item 4)


def _params_file(folder: Path, dataset: dict[str, object], backbone: dict[str, object]) -> Path:
    """A params.yaml of one dataset entry and one backbone entry (a semantic run joins them)."""
    import yaml

    raw = {
        "datasets": {"d": dataset},
        "backbones": {"b": backbone},
        "tasks": {"seg": {"task": "semantic", "dataset": "d"}},
    }
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


PRESET = {"model": "dino_s", "weights": "random-init"}  # checked from the stored facts (12 levels)


def test_params_expands_home_and_variables_in_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images = _folder(tmp_path / "home" / "data" / "imgs")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MAXA_TEST_DATA", str(tmp_path / "home" / "data"))
    for root in ("~/data/imgs", "$MAXA_TEST_DATA/imgs", "${MAXA_TEST_DATA}/imgs"):
        path = _params_file(tmp_path, {"dataset": "folder", "root": root, "test_split": "a"}, PRESET)
        result = invoke("params", path)
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["datasets"]["d"]["root"] == root  # as written; expanded when used
    typed = invoke("prepare", "--dataset", "folder", "--root", "~/data/imgs", "--out", tmp_path / "t.zarr")
    assert typed.exit_code == 0, typed.output  # a quoted ~ on the command line, as in README
    assert st.open_store(str(tmp_path / "t.zarr")).provenance["root"] == str(images.resolve())


def test_params_refuses_missing_root_weights_model_layer_and_option(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MAXA_UNSET_VAR", raising=False)
    cases = [
        ({"dataset": "folder", "root": str(tmp_path / "nowhere")}, PRESET, ["datasets.d.root", "nowhere"]),
        ({"dataset": "folder", "root": "$MAXA_UNSET_VAR/x"}, PRESET, ["$MAXA_UNSET_VAR is not set"]),
        (
            {"dataset": "synthetic"},
            {"model": "dino_s", "weights": "~/w.pth"},
            ["backbones.b.weights", "w.pth"],
        ),
        ({"dataset": "synthetic"}, {"model": "dinov2_bb"}, ["unknown backbone 'dinov2_bb'", "dinov2_b"]),
        (
            {"dataset": "synthetic"},
            {**PRESET, "layers": "12"},
            ["backbones.b", "layer 12", "12 feature levels"],
        ),
        (
            {"dataset": "synthetic", "options": {"num_image": 3}},
            PRESET,
            ["datasets.d.options", "no option 'num_image'", "did you mean 'num_images'"],
        ),
    ]
    for dataset, backbone, named in cases:
        path = _params_file(tmp_path, dataset, backbone)
        refused(invoke("params", path), path, *named)
    assert not (tmp_path / "dvc.yaml").exists()  # the guard stage refuses the same, once dvc.yaml is current
    assert invoke("pipeline", path).exit_code == 0
    refused(invoke("pipeline", path, "--check"), "no option 'num_image'")


def test_params_checks_plain_timm_names_against_timm(tmp_path: Path) -> None:
    path = _params_file(
        tmp_path, {"dataset": "synthetic"}, {"model": "vit_tiny_patch16_224", "layers": "-13"}
    )
    refused(invoke("params", path), "layer -13", "12 feature levels")
    path = _params_file(tmp_path, {"dataset": "synthetic"}, {"model": "vit_tiny_patch16_224", "layers": "-1"})
    assert invoke("params", path).exit_code == 0


def test_reader_option_typo_in_the_users_words(tmp_path: Path) -> None:
    line = refused(
        invoke("prepare", "--dataset", "synthetic", "-o", "num_image=3", "--out", tmp_path / "t.zarr"),
        "num_image",
        "num_images",
    )
    assert "__init__" not in line and "keyword argument" not in line
    assert not (tmp_path / "t.zarr").exists()


def test_num_images_beyond_the_split_refused(tmp_path: Path) -> None:
    images = _folder(tmp_path / "imgs", n=3)
    args = ["prepare", "--dataset", "folder", "--root", images, "-o", "num_images=5"]
    refused(invoke(*args, "--out", tmp_path / "t.zarr"), "num_images 5", "has 3 samples")
    assert not (tmp_path / "t.zarr").exists()


def test_skip_bad_after_a_failed_prepare_on_the_same_out(tmp_path: Path) -> None:
    images = _folder(tmp_path / "imgs", n=6)
    (images / "im 4.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "t.zarr"
    args = ["prepare", "--dataset", "folder", "--root", images, "--shard-size", "2", "--out", out]
    refused(invoke(*args), "im 4.png", "--skip-bad")
    assert out.exists() and not st.open_store(str(out), require_complete=False).complete
    fixed = invoke(*args, "--skip-bad")
    assert fixed.exit_code == 0, fixed.output  # the suggested fix works on the same --out, no --overwrite
    store = st.open_store(str(out))
    assert store.num_items == 5 and "im 4.png" not in " ".join(store.ids())
    other = _folder(tmp_path / "other", n=2, seed=1)
    refused(invoke(*args[:4], other, *args[5:], "--skip-bad"), out, "--overwrite")  # finished: kept


@pytest.mark.heavy
def test_evaluate_on_the_training_split_refused_unless_allowed(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    refused(
        run_evaluate(data["ckpt"], data["f_train"], data["t_train"], out),
        data["t_train"],
        "'train'",
        "--allow-training-split",
    )
    assert not out.exists()
    allowed = run_evaluate(data["ckpt"], data["f_train"], data["t_train"], out, "--allow-training-split")
    assert allowed.exit_code == 0, allowed.output
    assert json.loads(out.read_text())["evaluated_on_training_split"] is True
    held_out = tmp_path / "v.json"
    assert run_evaluate(data["ckpt"], data["f_val"], data["t_val"], held_out).exit_code == 0
    assert "evaluated_on_training_split" not in json.loads(held_out.read_text())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_device_names_and_missing_gpu(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    on_cuda = run_evaluate(data["ckpt"], data["f_val"], data["t_val"], out, "--device", "cuda")
    refused(on_cuda, "--device cuda", "no CUDA GPU", "--device cpu")
    refused(
        run_evaluate(data["ckpt"], data["f_val"], data["t_val"], out, "--device", "gpu"), "'gpu'", "cuda:N"
    )
    refused(
        run_probe(data["f_train"], data["t_train"], tmp_path / "p.pt", "--device", "cuda:1"),
        "--device cuda:1",
    )
    assert not out.exists() and not (tmp_path / "p.pt").exists()
