"""Storage options (pipelines/storage.py, maxa.core.store): where they come from, which wins, which URLs
they reach, and that no credential can be written into a file git and DVC record."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from maxa.core import store as st
from maxa.core.errors import MaxaError
from maxa.pipelines import storage
from maxa.pipelines.params import load_params

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(st.STORAGE_ENV, "")


def test_options_reach_object_store_urls_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(st.STORAGE_ENV, json.dumps({"endpoint_url": "http://minio:9000", "anon": False}))
    assert st.fsspec_options("s3://b/f.zarr") == {"endpoint_url": "http://minio:9000", "anon": False}
    assert st.fsspec_options("s3://b/f.zarr", {"anon": True}) == {
        "endpoint_url": "http://minio:9000",
        "anon": True,
    }
    for local in ("/data/f.zarr", "file:///data/f.zarr", "memory://f.zarr"):
        assert st.fsspec_options(local) is None
    monkeypatch.setenv(st.STORAGE_ENV, "{not json")
    with pytest.raises(MaxaError, match="MAXA_STORAGE_OPTIONS must hold a JSON object"):
        st.fsspec_options("s3://b/f.zarr")


def test_command_line_wins_over_params(monkeypatch: pytest.MonkeyPatch) -> None:
    storage.override({"endpoint_url": "http://cli:9000"})
    storage.add_defaults({"endpoint_url": "http://params:9000", "requester_pays": True})
    assert storage.parse(os.environ[st.STORAGE_ENV], "env") == {
        "endpoint_url": "http://cli:9000",
        "requester_pays": True,
    }


@pytest.mark.parametrize(
    "section",
    [
        {"key": "AKIA..."},
        {"secret": "x"},
        {"client_kwargs": {"aws_secret_access_key": "x"}},
        {"token": "x"},
        {"config_kwargs": {"password": "x"}},
    ],
)
def test_credentials_refused_in_params_yaml(tmp_path: Path, section: dict) -> None:
    text = (ROOT / "params.yaml").read_text()
    path = tmp_path / "params.yaml"
    path.write_text(text + "\nstorage: " + json.dumps(section) + "\n")
    with pytest.raises(MaxaError, match=r"like credentials.*set them in the environment"):
        load_params(path)


def test_params_storage_section_applies_under_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text() + "\nstorage:\n  endpoint_url: http://minio:9000\n")
    assert load_params(path).storage == {"endpoint_url": "http://minio:9000"}
    storage.override({"anon": True})
    storage.apply_params(str(path))
    assert st.fsspec_options("s3://b/x.zarr") == {"endpoint_url": "http://minio:9000", "anon": True}
