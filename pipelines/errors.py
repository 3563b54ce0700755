"""How every `maxa` command reports a user mistake: one line, exit status 1, no traceback."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from maxa.core.errors import MaxaError


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn MaxaError into click's `Error: ...` (exit 1); anything else is a bug and keeps its traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MaxaError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper
