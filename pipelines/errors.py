"""How every `maxa` command reports failure: one line that names the store, URL or file and the fix.

A user mistake (MaxaError) and the failures of the layers below maxa that a user can act on (disk full,
permissions, a missing bucket, bad or missing credentials, an unreachable endpoint, a missing fsspec
backend, data failing its checksum, an interrupted transfer) become click's `Error: ...` line; anything
else is a bug and keeps its traceback. `maxa --debug` or MAXA_DEBUG=1 shows the traceback of every
failure. Exit status: 1 for what the user must fix, 75 (EX_TEMPFAIL) for a transfer cut off on the way
(re-running resumes), 130 for an interrupted run (Ctrl-C).
"""

from __future__ import annotations

import errno
import functools
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import click

from maxa.core.errors import Interrupted, MaxaError

EXIT_USER = 1
EXIT_RETRY = 75
EXIT_INTERRUPTED = 130
DEBUG_ENV = "MAXA_DEBUG"
KEPT = "finished shards are kept"
LOCATION_OPTIONS = (
    "out",
    "url",
    "features_url",
    "targets_url",
    "train_features",
    "train_targets",
    "gallery_url",
    "queries_url",
    "checkpoint",
    "path",
    "params_file",
)
"""Command arguments that name a store, URL or file, in the order a message names them."""


class Failure(click.ClickException):
    """A one-line failure the user must fix (exit status 1)."""

    exit_code = EXIT_USER


class Retry(Failure):
    """A one-line failure that re-running resumes (a transfer cut off on the way)."""

    exit_code = EXIT_RETRY


class Stopped(Failure):
    """A run interrupted by the user, what it finished kept."""

    exit_code = EXIT_INTERRUPTED


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "0") not in ("", "0")


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """The error boundary of a command: MaxaError and the failures `describe` knows -> one line."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            from maxa.pipelines.storage import apply_params

            apply_params(kwargs.get("params_file"))
            return func(*args, **kwargs)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            if debugging():
                raise
            click.echo("interrupted; re-run the same command to resume (finished work is kept)", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except MaxaError as exc:
            if debugging():
                raise
            raise (Stopped if isinstance(exc, Interrupted) else Failure)(str(exc)) from exc
        except Exception as exc:
            failure = describe(exc, locations(kwargs))
            if failure is None or debugging():
                raise
            _quiet_teardown()
            raise failure from exc

    return wrapper


def locations(arguments: Mapping[str, Any]) -> list[str]:
    """The stores, URLs and files a command was given (what a failure below maxa is about)."""
    found = [str(arguments[k]) for k in LOCATION_OPTIONS if arguments.get(k)]
    return list(dict.fromkeys(found))


def chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and those it was raised from or during (libraries hide the cause in either)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        item = todo.pop(0)
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo.extend(e for e in (item.__cause__, item.__context__) if e is not None)


def _named(exc: BaseException, *names: str) -> bool:
    return any(cls.__name__ in names for cls in type(exc).__mro__)


@dataclass(frozen=True)
class _Context:
    where: list[str]

    @property
    def remote(self) -> list[str]:
        return [w for w in self.where if "://" in w and not w.startswith(("file://", "memory://"))]

    def name(self, exc: BaseException | None = None, *, remote: bool = False) -> str:
        """The most specific location: the file an OSError names, else the command's stores/URLs."""
        filename = getattr(exc, "filename", None) if exc is not None else None
        if filename and not remote:
            return str(filename)
        pool = self.remote if remote and self.remote else self.where
        return " / ".join(pool) if pool else "the store"


BACKENDS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}


def describe(exc: BaseException, where: list[str]) -> Failure | None:
    """The one-line Failure for an exception from below maxa, or None when it is not one we know."""
    ctx = _Context(where)
    for rule in _RULES:
        for item in chain(exc):
            failure = rule(item, ctx)
            if failure is not None:
                return failure
    return None


def _disk_full(exc: BaseException, ctx: _Context) -> Failure | None:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return Failure(
            f"no space left on the device writing {ctx.name(exc)}; {KEPT}: free space and re-run the same "
            "command"
        )
    return None


def _backend(exc: BaseException, ctx: _Context) -> Failure | None:
    text = str(exc)
    if isinstance(exc, ImportError):
        match = re.search(r"\b(s3fs|gcsfs|adlfs|ossfs)\b", f"{text} {getattr(exc, 'name', '') or ''}")
        if match is None:
            return None
        extra = {"s3fs": "s3", "gcsfs": "gcs"}.get(match.group(1))
        fix = f"pip install 'maxa[{extra}]'" if extra else f"pip install {match.group(1)}"
        return Failure(f"{ctx.name(remote=True)} needs the fsspec backend {match.group(1)}: {fix}")
    if isinstance(exc, ValueError) and (unknown := re.search(r"Protocol not known: (\w+)", text)):
        return Failure(f"{ctx.name(remote=True)}: no fsspec backend knows the protocol {unknown.group(1)}://")
    return None


def _credentials(exc: BaseException, ctx: _Context) -> Failure | None:
    if _named(exc, "NoCredentialsError", "PartialCredentialsError"):
        return Failure(
            f"no credentials for {ctx.name(remote=True)}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE) in the environment (docs/store.md, Remote storage)"
        )
    if _named(exc, "DefaultCredentialsError", "RefreshError"):
        return Failure(
            f"no usable credentials for {ctx.name(remote=True)}: set GOOGLE_APPLICATION_CREDENTIALS "
            "(docs/store.md, Remote storage)"
        )
    return None


_DENIED = re.compile(
    r"Forbidden|AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|InvalidClientTokenId|\b403\b"
)


def _permissions(exc: BaseException, ctx: _Context) -> Failure | None:
    refused = _named(exc, "PermissionDeniedError", "UnauthenticatedError")  # obstore's
    if not refused and not (
        isinstance(exc, PermissionError)
        or (isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS))
    ):
        return None
    if refused or (ctx.remote and (_DENIED.search(str(exc)) or not getattr(exc, "filename", None))):
        return Failure(
            f"access to {ctx.name(remote=True)} was refused ({_summary(exc) or 'forbidden'}): check the "
            "credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or the profile) and the bucket's "
            "permissions"
        )
    return Failure(f"permission denied: {ctx.name(exc)} cannot be read or written; fix its permissions")


def _summary(exc: BaseException) -> str:
    """A few words of what refused a request: obstore's messages carry the server's whole reply and a
    debug dump of the error chain; keep its status and S3 error code."""
    text = str(exc)
    if not _named(exc, "BaseError"):  # not obstore's
        return text
    status = re.search(r"status code: (\d{3}[A-Za-z ]*)", text)
    code = re.search(r"<Code>(\w+)</Code>", text)
    parts = [m.group(1).strip() for m in (status, code) if m is not None]
    return ": ".join(parts) if parts else text.splitlines()[0][:200]


def _obstore_http(exc: BaseException, *kinds: str) -> bool:
    """Whether `exc` is obstore's error for an HTTP failure of one of `kinds` (object_store's
    HttpErrorKind: Connect, Request, Timeout, Interrupted, Decode), read from its debug text."""
    return _named(exc, "GenericError") and any(
        re.search(rf"HttpError \{{\s*kind: {kind}\b", str(exc)) for kind in kinds
    )


def _bucket(exc: BaseException, ctx: _Context) -> Failure | None:
    if _named(exc, "NoSuchBucket") or "specified bucket does not exist" in str(exc):
        return Failure(
            f"the bucket of {ctx.name(remote=True)} does not exist: create it or correct the URL "
            "(and check AWS_ENDPOINT_URL points at the right server)"
        )
    return None


def _endpoint(exc: BaseException, ctx: _Context) -> Failure | None:
    if (
        _named(exc, "EndpointConnectionError", "ClientConnectorError", "ConnectTimeoutError")
        or isinstance(exc, ConnectionRefusedError)
        or _obstore_http(exc, "Connect")
    ):
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("FSSPEC_S3_ENDPOINT_URL")
        shown = f" (endpoint {endpoint})" if endpoint else ""
        return Failure(
            f"cannot reach the object store of {ctx.name(remote=True)}{shown}: check the endpoint "
            "(AWS_ENDPOINT_URL or --storage-options endpoint_url) and the network"
        )
    return None


def _interrupted(exc: BaseException, ctx: _Context) -> Failure | None:
    if _named(
        exc,
        "ServerDisconnectedError",
        "ClientPayloadError",
        "IncompleteRead",
        "ResponseStreamingError",
        "ReadTimeoutError",
        "ConnectionClosedError",
    ) or (
        _obstore_http(exc, "Interrupted", "Timeout", "Decode")
        or (ctx.remote and isinstance(exc, (ConnectionResetError, TimeoutError)))
    ):
        kind = re.search(r"HttpError \{\s*kind: (\w+)", str(exc)) if _named(exc, "GenericError") else None
        return Retry(
            f"a transfer to or from {ctx.name(remote=True)} was interrupted "
            f"({kind.group(1) if kind else type(exc).__name__}); {KEPT}: "
            "re-run the same command to resume"
        )
    return None


def _checksum(exc: BaseException, ctx: _Context) -> Failure | None:
    text = str(exc)
    if isinstance(exc, (ValueError, RuntimeError)) and re.search(r"checksum", text, re.IGNORECASE):
        return Failure(
            f"data of {ctx.name()} failed its checksum: run `maxa store verify URL` to find the damaged "
            "store and shards, then re-create them or fetch them again"
        )
    return None


_REGION = re.compile(
    r"PermanentRedirect|AuthorizationHeaderMalformed|IllegalLocationConstraint|\b301\b|configured region"
)


def _object_client(exc: BaseException, ctx: _Context) -> Failure | None:
    """Any other failure of obstore's (core/store/objects.py reads s3:// through it): still one line, with
    the server's status and code, a region hint where the server redirected, and the way back to s3fs."""
    if not (_named(exc, "BaseError") and type(exc).__module__.startswith("obstore")):
        return None
    hint = (
        "check the region (AWS_REGION or the profile's) and the endpoint; "
        if _REGION.search(str(exc))
        else ""
    )
    return Failure(
        f"reading {ctx.name(remote=True)} failed ({_summary(exc)}): {hint}MAXA_OBJECT_CLIENT=fsspec reads it "
        f"through s3fs instead; {DEBUG_ENV}=1 shows the traceback"
    )


_RULES: tuple[Callable[[BaseException, _Context], Failure | None], ...] = (
    _disk_full,
    _backend,
    _credentials,
    _bucket,
    _endpoint,
    _interrupted,
    _permissions,
    _checksum,
    _object_client,
)
"""Most specific first: each rule looks at the whole exception chain before the next rule does."""


def _quiet_teardown() -> None:
    """aiobotocore's clients complain on stderr when the process exits after a failure (a ValueError about
    contexts, "Unclosed client session"); the one-line message is the whole story."""
    import atexit
    import logging

    atexit.register(setattr, sys, "unraisablehook", lambda _: None)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
