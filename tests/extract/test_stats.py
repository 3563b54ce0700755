"""Out-of-core store statistics (extract/stats.py) against numpy on the same small store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from maxa.core.errors import MaxaError
from maxa.core.store import ArraySpec, open_store
from maxa.extract.stats import compute_stats, layer_stats, load_pca, project, read_stats, stats_path
from tests.kit.stores import empty_store

DIMS = ("image", "y", "x", "channel")
C = 12


def _features(n: int, seed: int = 0, offset: float = 0.0) -> np.ndarray:
    """Correlated channels with two dominant ones, like real patch features."""
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((C, C)) * 0.3
    scale = np.ones(C)
    scale[[3, 7]] = [8.0, 5.0]
    x = rng.standard_normal((n, 3, 4, C)) @ mixing * scale + rng.normal(0, 2, C) + offset
    return x.astype(np.float16)


def _store(tmp_path: Path, data: np.ndarray, shard_size: int = 4, complete: bool = True) -> str:
    url = str(tmp_path / "feats.zarr")
    store = empty_store(
        url, {"layer_1": ArraySpec(data.shape[1:], "float16", DIMS)}, len(data), shard_size, {"model": "test"}
    )
    for shard in range(store.num_shards if complete else 1):
        start, stop = store.shard_range(shard)
        store.write_shard(shard, {"layer_1": data[start:stop]})
    return url


def _numpy_reference(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    flat = data.reshape(-1, data.shape[-1]).astype(np.float64)
    cov = np.cov(flat, rowvar=False)
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    order = np.argsort(eigenvalues)[::-1]
    return flat.mean(axis=0), flat.std(axis=0, ddof=1), eigenvalues[order], eigenvectors[:, order].T


def test_layer_stats_match_numpy(tmp_path: Path) -> None:
    data = _features(10)  # 10 images, shards of 4: chunks of 4, 4, 2 images
    stats = layer_stats(open_store(_store(tmp_path, data)), "layer_1", n_components=5)
    mean, std, eigenvalues, eigenvectors = _numpy_reference(data)
    assert stats.count == 10 * 3 * 4
    np.testing.assert_allclose(stats.mean, mean, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(stats.std, std, rtol=1e-9)
    np.testing.assert_allclose(stats.eigenvalues, eigenvalues, rtol=1e-8, atol=1e-10)
    assert stats.components.shape == (5, C)
    for ours, ref in zip(stats.components, eigenvectors[:5], strict=True):
        assert abs(float(ours @ ref)) == pytest.approx(1.0, abs=1e-8)  # same axis, sign aside
        assert ours[np.abs(ours).argmax()] > 0  # sign convention
    p = eigenvalues / eigenvalues.sum()
    assert stats.effective_rank == pytest.approx(float(np.exp(-(p * np.log(p)).sum())), rel=1e-9)
    spectrum = np.sort(std**2)[::-1]
    fractions = stats.top_k_fraction()
    assert set(fractions) == {1, 2, 4, 8}  # k <= channels
    for k, value in fractions.items():
        assert value == pytest.approx(spectrum[:k].sum() / spectrum.sum(), rel=1e-9)
    assert fractions[2] > 0.5  # the two dominant channels show up in the diagnostic
    assert 1.0 < stats.effective_rank < C


def test_large_mean_offset_stays_accurate(tmp_path: Path) -> None:
    data = _features(6, seed=1, offset=1000.0)  # mean >> spread: naive one-pass sums lose it
    stats = layer_stats(open_store(_store(tmp_path, data)), "layer_1", n_components=2)
    mean, std, _, _ = _numpy_reference(data)
    np.testing.assert_allclose(stats.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(stats.std, std, rtol=1e-6)


def test_chunks_are_shards_and_result_does_not_depend_on_them(tmp_path: Path) -> None:
    data = _features(9)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = layer_stats(open_store(_store(tmp_path / "a", data, shard_size=2)), "layer_1", 3)
    other = layer_stats(open_store(_store(tmp_path / "b", data, shard_size=9)), "layer_1", 3)
    assert open_store(_store(tmp_path / "a", data, shard_size=2)).dask_array("layer_1").numblocks[0] == 5
    np.testing.assert_allclose(one.eigenvalues, other.eigenvalues, rtol=1e-9)
    np.testing.assert_allclose(one.mean, other.mean, rtol=1e-12)


def _tree(url: str) -> dict[Path, bytes]:
    return {p.relative_to(url): p.read_bytes() for p in Path(url).rglob("*") if p.is_file()}


def test_saved_stats_beside_store_leave_it_byte_identical(tmp_path: Path) -> None:
    data = _features(8)
    url = _store(tmp_path, data)
    before = _tree(url)
    (stats,) = compute_stats(url, n_components=3)
    assert _tree(url) == before  # not one byte of the store (attributes included) changed
    store = open_store(url, "features")
    assert store.problems() == []
    beside = stats_path(url)
    assert Path(beside).parent == Path(url).parent and beside.endswith(".stats.zarr")
    summary = read_stats(store)["layer_1"]
    assert summary["effective_rank"] == pytest.approx(stats.effective_rank)
    assert summary["pca_components"] == 3
    assert summary["count"] == 8 * 12
    # a reader without maxa finds the basis with plain zarr, tagged with the store's fingerprint
    plain = zarr.open_group(beside, mode="r")
    assert plain.attrs["maxa_stats"]["fingerprint"] == store.fingerprint
    np.testing.assert_allclose(plain["layer_1/pca_components"][:], stats.components, rtol=1e-6)


def test_stats_to_a_given_path_and_never_inside(tmp_path: Path) -> None:
    url = _store(tmp_path, _features(8))
    out = str(tmp_path / "elsewhere" / "s.zarr")
    compute_stats(url, n_components=2, out=out)
    assert read_stats(open_store(url), out)["layer_1"]["pca_components"] == 2
    with pytest.raises(MaxaError, match="lies inside the store"):
        compute_stats(url, out=f"{url}/stats")


def test_stale_stats_refused(tmp_path: Path) -> None:
    url = _store(tmp_path, _features(8))
    compute_stats(url, n_components=2)
    group = zarr.open_group(stats_path(url), mode="r+")
    group.attrs["maxa_stats"] = {**dict(group.attrs["maxa_stats"]), "fingerprint": "0" * 16}
    with pytest.raises(MaxaError, match=r"were computed for store fingerprint 0{16}"):
        load_pca(open_store(url), "layer_1")


def test_projection_to_rgb_with_saved_basis(tmp_path: Path) -> None:
    data = _features(8)
    url = _store(tmp_path, data)
    compute_stats(url, ["layer_1"], n_components=3)
    mean, components = load_pca(open_store(url), "layer_1")
    rgb = project(data[:2], mean, components)
    assert rgb.shape == (2, 3, 4, 3)
    flat = data.reshape(-1, C).astype(np.float64)
    scores = (flat - flat.mean(0)) @ components.T.astype(np.float64)
    # the first component carries the most variance, as PCA promises
    assert scores[:, 0].var() >= scores[:, 1].var() >= scores[:, 2].var()
    np.testing.assert_allclose(rgb.reshape(-1, 3), scores[: 2 * 12], rtol=1e-3, atol=1e-3)


def test_stats_recomputed_replace_earlier_ones(tmp_path: Path) -> None:
    url = _store(tmp_path, _features(8))
    compute_stats(url, n_components=5)
    compute_stats(url, n_components=2)
    store = open_store(url)
    assert load_pca(store, "layer_1")[1].shape == (2, C)
    assert read_stats(store)["layer_1"]["pca_components"] == 2


def test_no_save_writes_nothing(tmp_path: Path) -> None:
    url = _store(tmp_path, _features(8))
    compute_stats(url, save=False)
    assert not Path(stats_path(url)).exists()


def test_incomplete_store_refused(tmp_path: Path) -> None:
    url = _store(tmp_path, _features(8), complete=False)
    with pytest.raises(MaxaError, match="incomplete"):
        compute_stats(url)


def test_unknown_layer_refused(tmp_path: Path) -> None:
    url = _store(tmp_path, _features(8))
    with pytest.raises(MaxaError, match="no array 'layer_9'"):
        compute_stats(url, ["layer_9"])


def test_unwritable_stats_path_refused_before_the_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import maxa.extract.stats as stats

    url = _store(tmp_path, _features(8))
    blocker = tmp_path / "file"
    blocker.write_text("x")

    def no_pass(*args: object, **kwargs: object) -> None:
        raise AssertionError("the pass over the store ran before the output path was checked")

    monkeypatch.setattr(stats, "layer_stats", no_pass)
    with pytest.raises(MaxaError, match=r"statistics path .*file/s.zarr.* cannot be written"):
        compute_stats(url, out=str(blocker / "s.zarr"))
