"""Reads from S3 through obstore (core/store/objects.py): the same inputs as s3fs (storage options, botocore's
variables and profiles) reach it, what it cannot carry over goes back to s3fs, and what it reads equals local
disk and the s3fs path bit for bit for every codec maxa writes (against the loopback S3 server)."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from maxa.core import store as st
from maxa.core.errors import MaxaError
from maxa.core.store import objects
from maxa.core.store.codecs import CODECS
from tests.kit.stores import empty_store, fill
from tests.s3server import S3

pytest.importorskip("obstore", reason="the obstore read path needs obstore (the dev extra)")

N, SHARD = 11, 4


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(objects.CLIENT_ENV, raising=False)
    objects.clear_cache()


# --------------------------------------------------------------- the mapping (no server)


def test_storage_options_map_to_obstore_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://from-env:1")
    got = objects.settings(
        "s3://bucket/a/b/store.zarr/",
        {
            "key": "K",
            "secret": "S",
            "token": "T",
            "client_kwargs": {"region_name": "eu-west-3"},
            "requester_pays": True,
            "use_listings_cache": False,  # s3fs-only, changes nothing a read does
        },
    )
    assert got == objects.S3Settings(
        bucket="bucket",
        path="a/b/store.zarr",
        endpoint="http://from-env:1",
        region="eu-west-3",
        anonymous=False,
        requester_pays=True,
        key=("K", "S", "T"),
        profile=None,
    )
    aliases = objects.settings("s3a://b/x", {"username": "K", "password": "S", "anon": True})
    assert isinstance(aliases, objects.S3Settings)
    assert (aliases.key, aliases.anonymous, aliases.path) == (("K", "S", None), True, "x")


def test_the_endpoint_comes_from_options_then_botocore_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    def endpoint(options: dict) -> str | None:
        got = objects.settings("s3://b/x", options)
        assert isinstance(got, objects.S3Settings)
        return got.endpoint

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    assert endpoint({}) is None
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://general:1")
    assert endpoint({}) == "http://general:1"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3-only:1")
    assert endpoint({}) == "http://s3-only:1"
    assert endpoint({"client_kwargs": {"endpoint_url": "http://kwargs:1"}}) == "http://kwargs:1"
    assert endpoint({"endpoint_url": "http://option:1"}) == "http://option:1"


def test_fsspec_configured_defaults_count_as_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """FSSPEC_S3_* and fsspec's config files give s3fs defaults: obstore gets them too, under the options."""
    from fsspec.config import conf

    monkeypatch.setitem(conf, "s3", {"endpoint_url": "http://fsspec-conf:1", "key": "K", "secret": "S"})
    got = objects.settings("s3://b/x", {"secret": "given"})
    assert isinstance(got, objects.S3Settings)
    assert (got.endpoint, got.key) == ("http://fsspec-conf:1", ("K", "given", None))


@pytest.mark.parametrize(
    "options, named",
    [
        ({"config_kwargs": {"signature_version": "s3"}}, "config_kwargs"),
        ({"client_kwargs": {"verify": False}}, "client_kwargs.verify"),
        ({"s3_additional_kwargs": {"ServerSideEncryption": "aws:kms"}}, "s3_additional_kwargs"),
        ({"version_aware": True}, "version_aware"),
        ({"use_ssl": False}, "use_ssl"),
        ({"something_new": 1}, "something_new"),
    ],
)
def test_an_option_obstore_cannot_take_goes_back_to_s3fs_said_once(
    options: dict, named: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    reason = objects.settings("s3://b/x", options)
    assert isinstance(reason, str) and named in reason
    with caplog.at_level(logging.DEBUG, logger=objects.__name__):
        assert objects.read_store("s3://b/x", options) is None
        assert objects.read_store("s3://b/y", options) is None
    said = [r.getMessage() for r in caplog.records if r.name == objects.__name__]
    assert len(said) == 1 and named in said[0] and "s3fs" in said[0]
    monkeypatch.setenv(objects.CLIENT_ENV, "obstore")  # forced: a refusal naming the option, not a fallback
    with pytest.raises(MaxaError, match=rf"MAXA_OBJECT_CLIENT=obstore cannot read s3://b/x: .*{named}"):
        objects.read_store("s3://b/x", options)


@pytest.mark.parametrize("options", [{"key": "K"}, {"secret": "S"}, {"token": "T"}])
def test_a_partial_credential_is_never_dropped(options: dict) -> None:
    """Only some of key/secret/token: s3fs decides what they mean, obstore never reads without them."""
    reason = objects.settings("s3://b/x", options)
    assert isinstance(reason, str) and "partial set of key, secret and token" in reason


def test_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "K")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "S")
    assert objects.read_store("s3://b/x", {}) is not None
    assert objects.read_store("gs://b/x", {}) is None  # gcsfs reads Google Cloud Storage
    monkeypatch.setenv(objects.CLIENT_ENV, "fsspec")
    assert objects.read_store("s3://b/x", {}) is None
    monkeypatch.setenv(objects.CLIENT_ENV, "boto")
    with pytest.raises(MaxaError, match="MAXA_OBJECT_CLIENT must be auto, obstore or fsspec, got 'boto'"):
        objects.read_store("s3://b/x", {})


def _aws_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: str, credentials: str) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_MAX_ATTEMPTS", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    (tmp_path / "config").write_text(config)
    (tmp_path / "credentials").write_text(credentials)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance metadata lookups from a test


def test_profiles_give_credentials_region_endpoint_and_attempts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A named profile (AWS_PROFILE or the `profile` option) is read by botocore: its keys, region,
    endpoint and max_attempts reach obstore as they reach s3fs."""
    _aws_files(
        tmp_path,
        monkeypatch,
        "[profile team]\nregion = eu-north-1\nmax_attempts = 2\nendpoint_url = http://team:1\n",
        "[team]\naws_access_key_id = TK\naws_secret_access_key = TS\naws_session_token = TT\n",
    )
    found = objects.settings("s3://b/x", {"profile": "team"})
    assert isinstance(found, objects.S3Settings)
    bucket, endpoint, region, anonymous, _, attempts, credentials = objects._resolve(found)
    assert (bucket, endpoint, region, anonymous, attempts) == ("b", "http://team:1", "eu-north-1", False, 2)
    assert credentials() == {
        "access_key_id": "TK",
        "secret_access_key": "TS",
        "token": "TT",
        "expires_at": None,
    }
    again = pickle.loads(pickle.dumps(credentials))  # zarr pickles its ObjectStore (dask workers)
    assert again() == credentials()
    monkeypatch.setenv("AWS_PROFILE", "team")
    assert objects._resolve(objects.settings("s3://b/x", {}))[1:3] == ("http://team:1", "eu-north-1")  # type: ignore[arg-type]


def test_no_credentials_is_botocores_error_and_no_region_goes_to_s3fs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import NoCredentialsError

    _aws_files(tmp_path, monkeypatch, "", "")
    assert objects.read_store("s3://b/x", {}) is None  # AWS itself, no region: s3fs finds the bucket's
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    with pytest.raises(NoCredentialsError):
        objects.read_store("s3://b/x", {})
    assert objects.read_store("s3://b/x", {"anon": True}) is not None  # anonymous needs none


# --------------------------------------------------------------- against the loopback server

CODEC_ARRAYS = {
    name: st.ArraySpec((3, 2), dtype, ("image", "y", "x"), codec=name)
    for name, dtype in [
        ("none", "float16"),
        ("blosc-lz4", "uint8"),
        ("blosc-lz4-bitshuffle", "int32"),
        ("blosc-zstd", "float32"),
        ("zstd", "float16"),
        ("bitround7-blosc-lz4", "float16"),
    ]
}


def _values(spec: st.ArraySpec, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(spec.dtype).kind == "f":
        return rng.standard_normal((N, *spec.item_shape)).astype(spec.dtype)
    return rng.integers(0, 200, (N, *spec.item_shape)).astype(spec.dtype)


def test_every_codec_reads_through_obstore_equal_to_local_and_to_s3fs(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert set(CODEC_ARRAYS) == set(CODECS.names())  # a codec registered later is tested here too
    data = {name: _values(spec, i) for i, (name, spec) in enumerate(CODEC_ARRAYS.items())}
    local = fill(empty_store(str(tmp_path / "s.zarr"), CODEC_ARRAYS, N, SHARD), data)
    fill(empty_store(s3.url("s.zarr"), CODEC_ARRAYS, N, SHARD), data)  # written through s3fs
    reads: dict[str, dict[str, list[np.ndarray]]] = {}
    for client in ("obstore", "fsspec"):
        monkeypatch.setenv(objects.CLIENT_ENV, client)
        remote = st.open_store(s3.url("s.zarr"))
        assert type(remote.group.store).__name__ == ("ObjectStore" if client == "obstore" else "FsspecStore")
        reads[client] = {
            name: [
                remote.read(name),
                remote.read(name, slice(3, 9)),
                remote.read_rows(name, [9, 1, 2], finite=False),
                *st.read_rows_together([(remote, name, slice(1, 7))], finite=False),
            ]
            for name in CODEC_ARRAYS
        }
    rows = [slice(None), slice(3, 9), [9, 1, 2], slice(1, 7)]
    for name in CODEC_ARRAYS:
        expected = [local.read(name)[r] for r in rows]
        for client in ("obstore", "fsspec"):
            for got, want in zip(reads[client][name], expected, strict=True):
                assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), (client, name)


def test_storage_options_carry_credentials_and_endpoint_to_obstore(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing in the environment, `key`/`secret`/`endpoint_url` options reach obstore (moto checks
    every signature); a wrong secret is refused, not replaced by anything else."""
    spec = {"none": CODEC_ARRAYS["none"]}
    data = {"none": _values(spec["none"], 0)}
    fill(empty_store(s3.url("o.zarr"), spec, N, SHARD), data)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name)
    monkeypatch.setenv(objects.CLIENT_ENV, "obstore")
    options = {"key": s3.server.key, "secret": s3.server.secret, "endpoint_url": s3.server.endpoint}
    store = st.open_store(s3.url("o.zarr"), storage_options=options)
    assert store.read("none").tobytes() == data["none"].tobytes()
    with pytest.raises(Exception, match="SignatureDoesNotMatch") as refused:
        st.open_store(s3.url("o.zarr"), storage_options={**options, "secret": "wrong"})
    assert type(refused.value).__name__ == "PermissionDeniedError"


def test_loader_windows_through_obstore_equal_local_disk(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import s3fs

    from maxa.probe.data import open_pair
    from tests.kit.stores import write_feature_store
    from tests.pipelines.test_bad_input import _targets

    targets = Path(_targets(tmp_path / "t.zarr", "train", 24))
    features = Path(write_feature_store(str(targets), str(tmp_path / "f.zarr")))
    fs = s3fs.S3FileSystem()
    for path in (targets, features):
        fs.put(str(path), f"{s3.bucket}/{path.name}", recursive=True)
    monkeypatch.setenv(objects.CLIENT_ENV, "obstore")
    remote = open_pair(s3.url("f.zarr"), s3.url("t.zarr"), "-1", "semantic")
    here = open_pair(str(features), str(targets), "-1", "semantic")
    assert type(remote.features.group.store).__name__ == "ObjectStore"
    windows = [(0, 8), (8, 16), (16, 24)]
    for (rf, rt), (lf, lt) in zip(remote.read_blocks(windows), here.read_blocks(windows), strict=True):
        assert rf.tobytes() == lf.tobytes() and rt.tobytes() == lt.tobytes()


def test_freed_read_buffers_are_reused_not_faulted_in_again() -> None:
    """core/store/memory.py: a window of eight 6.3 MB buffers allocated, filled and freed again and again
    page-faults every page each time with glibc's defaults, and hardly at all once the thresholds are
    raised (a fresh process: the setting is process-wide). MAXA_KEEP_FREED_MEMORY=0 leaves the defaults."""
    import platform
    import subprocess
    import sys

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's malloc only")
    code = """
import resource, sys
import numpy as np
from maxa.core.store.memory import keep_freed_buffers

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        window = [np.ones(6_300_000, np.uint8) for _ in range(8)]
        del window
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = faults()
print(default, keep_freed_buffers(), faults())
"""
    pages = 10 * 8 * 6_300_000 // 4096
    for keep, expect_kept in (("1", True), ("0", False)):
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "MAXA_KEEP_FREED_MEMORY": keep},
        )
        assert done.returncode == 0, done.stderr
        default, kept, after = done.stdout.split()
        assert int(default) > pages // 4  # the defaults fault many pages in again
        assert (kept == "True") is expect_kept
        if expect_kept:
            assert int(after) < pages // 20, (default, after)
        else:
            assert int(after) > pages // 4
