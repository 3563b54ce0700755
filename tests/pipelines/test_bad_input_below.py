# ruff: noqa: F811  (the suite's module-scoped `data` fixture is imported as `stores`; tests take it by name)
"""The bad-input suite, part two (issue #21 items 1-2): failures of the layers below maxa (disk, permissions,
object stores, backends, checksums, transfers, Ctrl-C) and damaged stores end in one `Error:` line naming
the store, URL or file and the fix, with exit status 1 (fix it), 75 (re-run to resume) or 130 (interrupted);
`--debug` / MAXA_DEBUG=1 shows the traceback instead. Object-store cases run against the loopback S3
server (tests/s3server.py).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from maxa.core import store as st
from maxa.core.errors import MaxaError
from maxa.core.store import access as store_access
from maxa.core.store import objects
from maxa.core.store import raw as sw
from maxa.extract import targets as targets_module
from maxa.pipelines import errors
from maxa.pipelines.cli import cli
from tests.kit.cli import invoke
from tests.pipelines.test_bad_input import FAST_PROBE, refused, tree
from tests.pipelines.test_bad_input import data as stores  # noqa: F401
from tests.s3server import S3

PREPARE = ["prepare", "-o", "num_images=24", "-o", "image_size=32", "--label-size", "16", "--shard-size", "8"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv(errors.DEBUG_ENV, "0")  # restored after the test, whatever `--debug` set
    monkeypatch.setenv(st.STORAGE_ENV, "{}")
    yield


def _damaged_copy(source: Path, out: Path, array: str, shard: int, *, delete: bool = False) -> Path:
    """A byte-for-byte copy of a store with one shard object of `array` flipped or deleted."""
    import shutil

    shutil.copytree(source, out)
    node = st.open_store(str(out), require_complete=False).array(array)
    path = out / sw._shard_key(node, shard)
    if delete:
        path.unlink()
    else:
        blob = bytearray(path.read_bytes())
        blob[len(blob) // 3] ^= 0x10
        path.write_bytes(bytes(blob))
    return out


# --------------------------------------------------------------- damaged stores (item 1)


def test_probe_refuses_a_flipped_byte_in_a_feature_shard(stores: dict[str, Path], tmp_path: Path) -> None:
    bad = _damaged_copy(stores["f_train"], tmp_path / "flipped.zarr", "layer_0", 1)
    out = tmp_path / "m.pt"
    line = refused(
        invoke("probe", "--features", bad, "--targets", stores["t_train"], "--out", out, *FAST_PROBE),
        bad,
        "layer_0 shard 1",
        "CRC32C",
        "maxa extract",
    )
    assert "marked done" in line and not out.exists()
    problems = refused(invoke("store", "verify", bad), bad, "layer_0: shards 1")
    assert "damaged" in problems


def test_evaluate_refuses_a_target_shard_lost_after_it_was_done(
    stores: dict[str, Path], tmp_path: Path
) -> None:
    bad = _damaged_copy(stores["t_val"], tmp_path / "lost.zarr", "semantic", 0, delete=True)
    out = tmp_path / "m.json"
    refused(
        invoke(
            "evaluate",
            "--checkpoint",
            stores["ckpt"],
            "--features",
            stores["f_val"],
            "--targets",
            bad,
            "--out",
            out,
        ),
        bad,
        "semantic shard 0",
        "its object is missing",
        "maxa prepare",
    )
    assert not out.exists()


def test_local_knn_refuses_a_lost_feature_shard(stores: dict[str, Path], tmp_path: Path) -> None:
    bad = _damaged_copy(stores["f_val"], tmp_path / "lost f.zarr", "layer_0", 0, delete=True)
    refused(
        invoke(
            "local", "knn", "--train-features", stores["f_train"], "--train-targets", stores["t_train"],
            "--features", bad, "--targets", stores["t_val"], "--out", tmp_path / "k.json",
        ),
        bad,
        "layer_0 shard 0",
    )  # fmt: skip


def test_zarr_checksum_error_outside_the_shards_is_one_line(stores: dict[str, Path], tmp_path: Path) -> None:
    """The ids array carries a CRC32C too: zarr's own ValueError becomes a line naming the store."""
    bad = tmp_path / "ids.zarr"
    import shutil

    shutil.copytree(stores["f_val"], bad)
    chunk = next(p for p in (bad / "ids" / "c").rglob("*") if p.is_file())
    blob = bytearray(chunk.read_bytes())
    blob[2] ^= 0xFF
    chunk.write_bytes(bytes(blob))
    refused(invoke("store", "verify", bad), str(bad), "failed its checksum", "maxa store verify")


# --------------------------------------------------------------- disk, permissions, Ctrl-C


def test_disk_full_keeps_finished_shards_and_resume_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "t.zarr"
    real = st.Store.write_shard

    def write_then_fill_disk(self: st.Store, shard: int, arrays: dict[str, np.ndarray]) -> None:
        if shard >= 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(out / "image" / "c" / str(shard)))
        real(self, shard, arrays)

    monkeypatch.setattr(st.Store, "write_shard", write_then_fill_disk)
    line = refused(
        invoke(*PREPARE, "--out", out), str(out / "image"), "no space left", "finished shards are kept"
    )
    assert "free space and re-run" in line
    kept = st.open_store(str(out), require_complete=False)
    assert kept.done_shards().tolist() == [True, False, False]
    before = tree(out / "image" / "c" / "0")
    monkeypatch.setattr(st.Store, "write_shard", real)
    assert invoke(*PREPARE, "--out", out).exit_code == 0  # the same command resumes
    assert tree(out / "image" / "c" / "0") == before and st.open_store(str(out)).complete


def test_permission_denied_names_the_file(stores: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    target = str(stores["f_val"] / "zarr.json")

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", target)

    monkeypatch.setattr(store_access, "open_group", denied)
    refused(invoke("store", "info", stores["f_val"]), target, "permission denied")


def test_ctrl_c_in_prepare_exits_130_and_keeps_its_shards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "t.zarr"
    real = targets_module._write_pending

    def interrupted(store: st.Store, *args: object, **kwargs: object) -> None:
        real(store, *args[:3], [0], *args[4:], **kwargs)  # type: ignore[arg-type]
        raise KeyboardInterrupt

    monkeypatch.setattr(targets_module, "_write_pending", interrupted)
    refused(invoke(*PREPARE, "--out", out), str(out), "interrupted", "re-run the same command", code=130)
    assert st.open_store(str(out), require_complete=False).done_shards().tolist() == [True, False, False]


def test_ctrl_c_anywhere_exits_130(stores: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    def stop(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(st.Store, "problems", stop)
    result = invoke("store", "verify", stores["f_val"])
    assert result.exit_code == 130 and "Traceback" not in result.output
    assert "interrupted" in result.output


def test_interrupted_transfer_exits_75(
    stores: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    aiohttp = pytest.importorskip("aiohttp")

    def cut(*args: object, **kwargs: object) -> None:
        try:
            raise aiohttp.ServerDisconnectedError()
        except aiohttp.ServerDisconnectedError as exc:
            raise OSError("read failed") from exc  # how s3fs wraps what aiohttp raises

    monkeypatch.setattr(st.Store, "read_rows", cut)
    out = tmp_path / "m.pt"
    line = refused(
        invoke(
            "probe",
            "--features",
            stores["f_train"],
            "--targets",
            stores["t_train"],
            "--out",
            out,
            *FAST_PROBE,
        ),
        stores["f_train"],
        "was interrupted",
        code=errors.EXIT_RETRY,
    )
    assert "re-run the same command to resume" in line


def test_debug_shows_the_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = str(tmp_path / "none.zarr")
    refused(invoke("store", "info", missing), missing)
    with pytest.raises(MaxaError, match="no maxa store"):
        CliRunner().invoke(cli, ["--debug", "store", "info", missing], catch_exceptions=False)
    monkeypatch.setenv(errors.DEBUG_ENV, "1")
    with pytest.raises(MaxaError, match="no maxa store"):
        CliRunner().invoke(cli, ["store", "info", missing], catch_exceptions=False)


def test_an_unknown_failure_keeps_its_traceback(
    stores: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only failures `describe` knows become one line: a bug stays a bug."""

    def bug(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(st.Store, "problems", bug)
    with pytest.raises(ZeroDivisionError):
        invoke("store", "verify", stores["f_val"])


# --------------------------------------------------------------- object stores (loopback S3 server)


def test_missing_bucket_on_out(s3: S3, tmp_path: Path) -> None:
    url = f"s3://no-such-bucket-{s3.bucket}/t.zarr"
    refused(invoke(*PREPARE, "--out", url), url, "bucket", "does not exist")


CLIENTS = pytest.mark.parametrize("client", ["obstore", "fsspec"])
"""Reads from S3 go through obstore where it is installed, s3fs otherwise: both must say the same."""


def _reads_through(client: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if client == "obstore":
        pytest.importorskip("obstore", reason="the obstore read path needs obstore (the dev extra)")
    monkeypatch.setenv(objects.CLIENT_ENV, client)  # forced: no quiet fallback to the other client


@CLIENTS
@pytest.mark.heavy
def test_wrong_secret(s3: S3, client: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = s3.url("t.zarr")
    assert invoke(*PREPARE, "--out", url).exit_code == 0
    _reads_through(client, monkeypatch)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    _fresh_s3fs()
    refused(invoke("store", "info", url), url, "was refused", "AWS_SECRET_ACCESS_KEY")


@CLIENTS
def test_no_credentials(s3: S3, client: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _reads_through(client, monkeypatch)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    _fresh_s3fs()
    url = s3.url("t.zarr")
    refused(invoke("store", "info", url), url, "no credentials", "AWS_ACCESS_KEY_ID")


@CLIENTS
def test_unreachable_endpoint(s3: S3, client: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.s3server import _free_port

    _reads_through(client, monkeypatch)
    endpoint = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    _fresh_s3fs()
    url = s3.url("t.zarr")
    refused(invoke("store", "info", url), url, "cannot reach", endpoint)


@CLIENTS
def test_missing_bucket_on_read(s3: S3, client: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _reads_through(client, monkeypatch)
    url = f"s3://no-such-bucket-{s3.bucket}/t.zarr"
    refused(invoke("store", "info", url), url, "no maxa store")


@CLIENTS
@pytest.mark.heavy
def test_a_lost_shard_object_on_s3_is_named(
    s3: S3, client: str, stores: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A done shard whose object is gone from the bucket: the read names the store, array, shard and the
    command that repairs it, whichever client fetched it."""
    import s3fs

    fs = s3fs.S3FileSystem()
    url = s3.url("f.zarr")
    fs.put(str(stores["f_val"]), url.removeprefix("s3://"), recursive=True)
    node = st.open_store(str(stores["f_val"])).array("layer_0")
    fs.rm(f"{url.removeprefix('s3://')}/{sw._shard_key(node, 0)}")
    _reads_through(client, monkeypatch)
    refused(
        invoke(
            "local", "knn", "--train-features", stores["f_train"], "--train-targets", stores["t_train"],
            "--features", url, "--targets", stores["t_val"], "--out", Path(str(stores["f_val"]) + ".k.json"),
        ),
        url,
        "layer_0 shard 0",
        "its object is missing",
        "maxa extract",
    )  # fmt: skip


@CLIENTS
@pytest.mark.heavy
def test_storage_options_reach_the_backend(s3: S3, client: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--storage-options` (and params.yaml `storage`) carry the endpoint where no variable does."""
    url = s3.url("t.zarr")
    assert invoke(*PREPARE, "--out", url).exit_code == 0
    _reads_through(client, monkeypatch)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    _fresh_s3fs()
    result = invoke("--storage-options", f'{{"endpoint_url": "{s3.server.endpoint}"}}', "store", "info", url)
    assert result.exit_code == 0, result.output
    assert refused(invoke("--storage-options", "[1]", "store", "info", url), "--storage-options", code=2)


def test_obstore_transfer_failures_are_one_line() -> None:
    """obstore's own exceptions, raised for real by a loopback socket that refuses, cuts a body short or
    stalls, map to the lines s3fs's failures get: unreachable endpoint (1), interrupted transfer (75)."""
    pytest.importorskip("obstore", reason="the obstore read path needs obstore (the dev extra)")
    url = "s3://bucket/t.zarr"
    for behaviour, expected, code in (
        ("refuse", "cannot reach the object store of s3://bucket/t.zarr", errors.EXIT_USER),
        ("cut", "was interrupted (Interrupted)", errors.EXIT_RETRY),
        ("stall", "was interrupted (Timeout)", errors.EXIT_RETRY),
        ("redirect", "reading s3://bucket/t.zarr failed (", errors.EXIT_USER),
    ):
        failure = errors.describe(_obstore_failure(behaviour), [url])
        assert failure is not None, behaviour
        assert expected in failure.message and failure.exit_code == code, failure.message
        assert "\n" not in failure.message and "Debug source" not in failure.message
        if behaviour == "redirect":  # a bucket in another region than the one asked: say so, and the way out
            assert "check the region" in failure.message
            assert "MAXA_OBJECT_CLIENT=fsspec" in failure.message


def _obstore_failure(behaviour: str) -> BaseException:
    """What obstore raises reading from a server that refuses connections, closes the connection in the
    middle of a body, stops sending (a 1 s request timeout), or redirects to another region's endpoint."""
    import asyncio
    import socket
    import threading

    import obstore
    from obstore.store import S3Store

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    if behaviour == "refuse":
        server.close()
    else:
        server.listen(1)
        stop = threading.Event()

        def serve() -> None:
            conn, _ = server.accept()
            conn.recv(65536)
            if behaviour == "redirect":  # what S3 answers for a bucket of another region
                body = b"<Error><Code>PermanentRedirect</Code><Message>another endpoint</Message></Error>"
                head = f"HTTP/1.1 301 Moved Permanently\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                conn.sendall(head + body)
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
            if behaviour == "stall":
                stop.wait(10)
            conn.close()

        threading.Thread(target=serve, daemon=True).start()
    store = S3Store(
        "bucket",
        endpoint=f"http://127.0.0.1:{port}",
        skip_signature=True,
        client_options={"allow_http": True, "timeout": "1s"},
        retry_config={"max_retries": 0},
    )

    async def get() -> object:
        got = await obstore.get_async(store, "t.zarr/zarr.json")
        return await got.bytes_async()

    try:
        asyncio.run(get())
    except Exception as exc:
        return exc
    finally:
        server.close()
        if behaviour != "refuse":
            stop.set()
    raise AssertionError(f"{behaviour}: obstore read without failing")


def test_missing_backend_names_the_extra(tmp_path: Path) -> None:
    """Without s3fs and obstore (a fresh process that cannot import them) an s3:// URL asks for `maxa[s3]`."""
    code = (
        "import sys; sys.modules['s3fs'] = sys.modules['obstore'] = None; "
        "from maxa.pipelines.cli import main; "
        "sys.argv = ['maxa', 'store', 'info', 's3://bucket/t.zarr']; main()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MAXA_DEBUG": "0"},
    )
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["Error: s3://bucket/t.zarr needs the fsspec backend s3fs: pip install 'maxa[s3]'"], (
        proc.stderr
    )


def _fresh_s3fs() -> None:
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    zarr  # noqa: B018  (kept imported: zarr caches nothing per credentials)
