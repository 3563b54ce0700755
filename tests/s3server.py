"""A real S3-protocol server on loopback for the tests: moto's standalone server, started once per session.

Authentication is on (moto checks signatures and IAM policies once its first three requests, which create
the test user, its policy and its access key, are done), so wrong or missing credentials fail as they do
against AWS. `s3` (per test) puts that user's credentials and the endpoint in the environment the way a
user would (AWS_* variables) and gives a fresh bucket.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    key: str
    secret: str
    empty: Path  # an empty file: the AWS config and shared credentials the tests see

    def env(self) -> dict[str, str]:
        """What a user exports to reach this server (botocore and s3fs read these)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_MAX_ATTEMPTS": "1",  # a refused connection fails at once instead of retrying with backoff
            "AWS_SHARED_CREDENTIALS_FILE": str(self.empty),  # nothing from the machine's own AWS setup
            "AWS_CONFIG_FILE": str(self.empty),
        }


@dataclass(frozen=True)
class S3:
    server: S3Server
    bucket: str

    def url(self, path: str) -> str:
        return f"s3://{self.bucket}/{path}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _moto_server() -> list[str]:
    script = Path(sys.executable).parent / "moto_server"
    return [str(script)] if script.exists() else [shutil.which("moto_server") or "moto_server"]


@contextlib.contextmanager
def moto(port: int, log: Path, *, auth_after: int | None = None) -> Iterator[str]:
    """moto's standalone S3 server on 127.0.0.1:`port` for the duration (its endpoint URL); with
    `auth_after`, requests after the first `auth_after` must carry valid credentials."""
    env = dict(os.environ)
    if auth_after is not None:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(auth_after)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*_moto_server(), "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    pytest.importorskip("moto.server", reason="the S3 tests need moto[server] (the dev extra)")
    pytest.importorskip("s3fs", reason="the S3 tests need s3fs (the dev extra)")
    boto3 = pytest.importorskip("boto3")
    folder = tmp_path_factory.mktemp("moto")
    log, empty = folder / "server.log", folder / "aws-empty"
    empty.write_text("")
    with moto(_free_port(), log, auth_after=3) as endpoint:
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )
        iam.create_user(UserName="maxa")
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName="maxa", PolicyName="all", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="maxa")["AccessKey"]
        yield S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"], empty)


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3]:
    """The server's endpoint and credentials in the environment, and a new empty bucket."""
    import boto3
    import s3fs

    from maxa.core.store import STORAGE_ENV

    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(STORAGE_ENV, "{}")
    bucket = f"maxa-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=s3_server.key,
        aws_secret_access_key=s3_server.secret,
    ).create_bucket(Bucket=bucket)
    s3fs.S3FileSystem.clear_instance_cache()  # instances cache the credentials they were made with
    yield S3(s3_server, bucket)
    s3fs.S3FileSystem.clear_instance_cache()
