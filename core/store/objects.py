"""Reading stores on S3 through obstore (Rust's object_store crate) instead of s3fs, from the same inputs.

Why: one 6.3 MB GET costs s3fs + aiobotocore + aiohttp ~11 ms of Python CPU on zarr's single event-loop
thread; obstore moves the bytes on its own threads outside the GIL for a fraction of that
(benchmarks/s3_stream.py). Only stores opened read-only use it; writes stay on s3fs.

The inputs are the ones s3fs already takes, so nothing changes for users: maxa's storage options (s3fs's
names: `key`, `secret`, `token`, `endpoint_url`, `client_kwargs`, `anon`, `profile`, ...; fsspec's own
`FSSPEC_S3_*` defaults under them) and botocore's chain for the rest (AWS_* variables, AWS_PROFILE and the
shared config and credentials files, SSO, IMDS), resolved by botocore itself. An option this mapping does
not understand sends the store back to s3fs (said once at debug level): a setting is never dropped.
MAXA_OBJECT_CLIENT=fsspec forces s3fs for every read; MAXA_OBJECT_CLIENT=obstore refuses to fall back.
"""

from __future__ import annotations

import datetime
import functools
import importlib.util
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from maxa.core.errors import MaxaError

CLIENT_ENV = "MAXA_OBJECT_CLIENT"
"""`fsspec`: read object stores through s3fs as before; `obstore`: always through obstore (an error where a
store cannot be); unset or `auto`: obstore where it is installed and understands the options."""
SCHEMES = ("s3://", "s3a://")
CLIENT_TIMEOUT = "300s"
"""Limit of one whole request, body included (obstore's default of 30 s cuts a large shard on a slow link)."""
DEFAULT_ATTEMPTS = 5
"""Attempts per request when botocore's `max_attempts` (AWS_MAX_ATTEMPTS, the profile) says nothing: what
botocore's default retry mode makes."""
RETRY_TIMEOUT = datetime.timedelta(seconds=120)
"""How long obstore retries one request (its default is 3 minutes)."""
REFRESH = datetime.timedelta(minutes=5)
"""How often obstore asks again for credentials that botocore refreshes (assumed roles, SSO, IMDS)."""

_READ_ONLY_OPTIONS = frozenset(
    {
        "use_listings_cache",
        "listings_expiry_time",
        "max_paths",
        "skip_instance_cache",
        "default_block_size",
        "default_fill_cache",
        "default_cache_type",
        "cache_regions",
        "max_concurrency",
        "fixed_upload_size",
        "local_expiry_check",
        "asynchronous",
        "loop",
    }
)
"""s3fs options that change nothing a read through obstore does (listing caches, write and buffer sizes)."""
_CLIENT_KWARGS = frozenset(
    {"endpoint_url", "region_name", "aws_access_key_id", "aws_secret_access_key", "aws_session_token"}
)
_log = logging.getLogger(__name__)
_said: set[str] = set()


@dataclass(frozen=True)
class S3Settings:
    """What an obstore S3Store needs for one store URL, from the storage options and the environment."""

    bucket: str
    path: str  # the store's folder inside the bucket ("" for the bucket's root)
    endpoint: str | None
    region: str | None
    anonymous: bool
    requester_pays: bool
    key: tuple[str, str, str | None] | None  # static credentials from the options: key, secret, token
    profile: str | None  # botocore's named profile from the options (else AWS_PROFILE, botocore's default)


def client() -> str:
    """The object-store client asked for by MAXA_OBJECT_CLIENT: auto, obstore or fsspec."""
    value = os.environ.get(CLIENT_ENV, "auto").strip().lower() or "auto"
    if value not in ("auto", "obstore", "fsspec"):
        raise MaxaError(f"{CLIENT_ENV} must be auto, obstore or fsspec, got {value!r}")
    return value


def settings(url: str, options: Mapping[str, Any] | None) -> S3Settings | str:
    """The obstore settings for an s3:// URL and its fsspec options, or why obstore cannot take them."""
    if not url.startswith(SCHEMES):
        return "not an s3:// URL"
    bucket, _, path = url.split("://", 1)[1].partition("/")
    if not bucket:
        return "the URL names no bucket"
    given = {**_fsspec_defaults(), **dict(options or {})}
    unknown = sorted(k for k in given if k not in _MAPPED and k not in _READ_ONLY_OPTIONS)
    kwargs = given.get("client_kwargs") or {}
    if not isinstance(kwargs, Mapping):
        return "client_kwargs is not a mapping"
    unknown += sorted(f"client_kwargs.{k}" for k in kwargs if k not in _CLIENT_KWARGS)
    unknown += [k for k in ("config_kwargs", "s3_additional_kwargs", "session") if given.get(k)]
    if given.get("version_aware"):
        unknown.append("version_aware")
    if given.get("use_ssl", True) is False:
        unknown.append("use_ssl")
    if unknown:
        return f"the storage option(s) {', '.join(unknown)} have no obstore equivalent here"
    key = given.get("key") or given.get("username") or kwargs.get("aws_access_key_id")
    secret = given.get("secret") or given.get("password") or kwargs.get("aws_secret_access_key")
    token = given.get("token") or kwargs.get("aws_session_token")
    if bool(key) != bool(secret) or (token and not key):
        return "the options give a partial set of key, secret and token"
    endpoint = given.get("endpoint_url") or kwargs.get("endpoint_url") or _env_endpoint()
    return S3Settings(
        bucket=bucket,
        path=path.strip("/"),
        endpoint=str(endpoint) if endpoint else None,
        region=kwargs.get("region_name"),
        anonymous=bool(given.get("anon", False)),
        requester_pays=bool(given.get("requester_pays", False)),
        key=(str(key), str(secret), str(token) if token else None) if key else None,
        profile=given.get("profile"),
    )


_MAPPED = frozenset(
    {
        "key",
        "secret",
        "token",
        "username",
        "password",
        "endpoint_url",
        "client_kwargs",
        "anon",
        "requester_pays",
        "profile",
        "config_kwargs",
        "s3_additional_kwargs",
        "session",
        "version_aware",
        "use_ssl",
    }
)
"""Options `settings` reads (some only to refuse values it cannot carry over)."""


def _fsspec_defaults() -> dict[str, Any]:
    """fsspec's configured defaults for s3 (FSSPEC_S3_* variables, its config files): s3fs gets them too."""
    try:
        from fsspec.config import conf
    except ImportError:
        return {}
    return dict(conf.get("s3", {}))


def _env_endpoint() -> str | None:
    """botocore's endpoint variables: the S3-specific one first."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def read_store(url: str, options: Mapping[str, Any] | None) -> tuple[Any, str] | None:
    """A read-only zarr store reading `url` through obstore and the group's path in it, or None where
    s3fs reads it (not s3://, obstore not installed, MAXA_OBJECT_CLIENT=fsspec, an option it cannot
    carry over). Raises botocore's NoCredentialsError where no credentials are found, as s3fs would."""
    wanted = client()
    if wanted == "fsspec" or not url.startswith(SCHEMES):
        return None
    if not _installed("obstore"):
        if wanted == "obstore":
            raise MaxaError(f"{CLIENT_ENV}=obstore but obstore is not installed: pip install 'maxa[s3]'")
        return None
    found = settings(url, options)
    resolved = _resolve(found) if isinstance(found, S3Settings) else found
    if isinstance(resolved, str):
        if wanted == "obstore":
            raise MaxaError(f"{CLIENT_ENV}=obstore cannot read {url}: {resolved}")
        if resolved not in _said:
            _said.add(resolved)
            _log.debug("reading %s through s3fs: %s", url, resolved)
        return None
    from zarr.storage import ObjectStore

    assert isinstance(found, S3Settings)
    return ObjectStore(_s3_store(*resolved), read_only=True), found.path


def _resolve(found: S3Settings) -> tuple[Any, ...] | str:
    """The hashable arguments of `_s3_store`: settings completed from botocore (region, attempts, the
    credentials' source), or why s3fs must read instead."""
    session = _session(found.profile, _aws_environment())
    region = found.region or os.environ.get("AWS_REGION")  # the SDKs' variable; botocore reads only
    attempts = None  # AWS_DEFAULT_REGION and the profile's, asked below
    endpoint = found.endpoint
    if session is not None:
        region = region or session.get_config_variable("region")
        attempts = session.get_config_variable("max_attempts")
        if endpoint is None and not _ignore_configured_endpoints(session):
            scoped = session.get_scoped_config()
            service = scoped.get("s3") if isinstance(scoped.get("s3"), Mapping) else {}
            endpoint = service.get("endpoint_url") or scoped.get("endpoint_url")
    if endpoint is None and not region:
        return "no region is configured (s3fs looks up the bucket's region itself)"
    if found.anonymous:
        credentials: Any = None
    elif found.key is not None:
        credentials = StaticCredentials(*found.key)
    elif session is not None:
        credentials = _botocore_credentials(found.profile, _aws_environment())
    else:  # no botocore, so no s3fs either: obstore reads the AWS_* variables itself
        credentials = None
    return (
        found.bucket,
        endpoint,
        region or "us-east-1",
        found.anonymous,
        found.requester_pays,
        int(attempts) if attempts else DEFAULT_ATTEMPTS,
        credentials,
    )


def _installed(module: str) -> bool:
    """Whether `module` imports (a module set to None in sys.modules, as tests do, counts as absent)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _ignore_configured_endpoints(session: Any) -> bool:
    value = os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS") or session.get_scoped_config().get(
        "ignore_configured_endpoint_urls", ""
    )
    return str(value).lower() == "true"


_AWS_VARIABLES = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_MAX_ATTEMPTS",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
)


def _aws_environment() -> tuple[str | None, ...]:
    """The variables botocore resolves from: a change (a test, a re-exported key) means a new session."""
    return tuple(os.environ.get(name) for name in _AWS_VARIABLES)


@functools.lru_cache(maxsize=8)
def _session(profile: str | None, environment: tuple[str | None, ...]) -> Any:
    """botocore's session for `profile` (None: AWS_PROFILE or the default), once per process and
    environment; None without botocore."""
    if not _installed("botocore"):
        return None
    import botocore.session

    return botocore.session.Session(profile=profile)


@dataclass(frozen=True)
class StaticCredentials:
    """obstore credential provider: the key, secret and token given in the storage options."""

    key: str
    secret: str
    token: str | None

    def __call__(self) -> dict[str, Any]:
        return {
            "access_key_id": self.key,
            "secret_access_key": self.secret,
            "token": self.token,
            "expires_at": None,
        }


class BotocoreCredentials:
    """obstore credential provider: what botocore's chain finds for a profile (env, files, SSO, IMDS...),
    refreshed by botocore; obstore asks again every REFRESH for credentials that expire."""

    def __init__(self, profile: str | None, found: Any) -> None:
        self.profile, self._found = profile, found

    def __getstate__(self) -> dict[str, Any]:  # botocore's credentials hold a lock: found again there
        return {"profile": self.profile}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.profile = state["profile"]
        self._found = _found_credentials(self.profile)

    def __call__(self) -> dict[str, Any]:
        from botocore.credentials import RefreshableCredentials

        frozen = self._found.get_frozen_credentials()
        expires = isinstance(self._found, RefreshableCredentials)
        return {
            "access_key_id": frozen.access_key,
            "secret_access_key": frozen.secret_key,
            "token": frozen.token,
            "expires_at": datetime.datetime.now(datetime.timezone.utc) + REFRESH if expires else None,
        }


@functools.lru_cache(maxsize=8)
def _botocore_credentials(profile: str | None, environment: tuple[str | None, ...]) -> BotocoreCredentials:
    return BotocoreCredentials(profile, _found_credentials(profile))


def _found_credentials(profile: str | None) -> Any:
    """botocore's credentials for `profile`; NoCredentialsError (what s3fs raises) where there are none."""
    found = _session(profile, _aws_environment()).get_credentials()
    if found is None:
        from botocore.exceptions import NoCredentialsError

        raise NoCredentialsError()
    return found


@functools.lru_cache(maxsize=16)
def _s3_store(
    bucket: str,
    endpoint: str | None,
    region: str,
    anonymous: bool,
    requester_pays: bool,
    attempts: int,
    credentials: Any,
) -> Any:
    """One obstore S3Store per bucket and settings (building one costs ~20 ms; its connection pool is
    reused by every store of the bucket)."""
    from obstore.store import S3Store

    from maxa.core.store.memory import keep_freed_buffers

    keep_freed_buffers()  # obstore receives every object into a fresh buffer: reuse them (memory.py)
    config: dict[str, Any] = {"region": region}
    if endpoint:
        config["endpoint"] = endpoint
    if anonymous:
        config["skip_signature"] = True
    if requester_pays:
        config["request_payer"] = True
    client_options: dict[str, Any] = {"timeout": CLIENT_TIMEOUT}
    if endpoint and endpoint.startswith("http://"):
        client_options["allow_http"] = True
    return S3Store(
        bucket,
        config=config,  # type: ignore[arg-type]
        client_options=client_options,  # type: ignore[arg-type]
        retry_config={"max_retries": max(0, attempts - 1), "retry_timeout": RETRY_TIMEOUT},
        credential_provider=credentials,
    )


def clear_cache() -> None:
    """Forget the sessions, credentials and clients built so far (tests that change the environment)."""
    _session.cache_clear()
    _botocore_credentials.cache_clear()
    _s3_store.cache_clear()
    _said.clear()
