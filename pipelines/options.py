"""Click options generated from the stage config dataclasses, so the CLI mirrors params.yaml.

An option's name, default, type, help and fixed set of values (`choices` in the field's metadata) all
come from the dataclass field; `resolve_config` lays the options given on the command line over the
values a params.yaml entry resolved to.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from maxa.core.errors import MaxaError

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def field_type(hint: Any) -> tuple[Any, Any]:
    """(kind, element type) of a config field: `int | None` -> (int, None), `list[float]` -> (list, float)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    origin = typing.get_origin(hint)
    if origin is list:
        return list, (typing.get_args(hint) or (str,))[0]
    return (origin or hint), None


def parse_list(value: Any, element: Any) -> list[Any]:
    """A list option or key: a YAML list, or the comma-separated text a command line gives."""
    if isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [part.strip() for part in str(value).split(",") if part.strip()]
    convert = element if element in (int, float) else str
    try:
        return [convert(item) for item in items]
    except ValueError as exc:
        name = {int: "integers", float: "numbers"}.get(convert, "values")
        raise click.BadParameter(f"expected comma-separated {name}, got {value!r}") from exc


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _default(value: Any, required: bool) -> dict[str, Any]:
    """click >= 8.3 counts an explicit `default=None` as a value, which would void `required`."""
    return {} if required else {"default": value}


def config_options(cls: type, exclude: Iterable[str] = (), required: bool = True) -> Callable[[F], F]:
    """Add one click option per dataclass field (same name with dashes, same default, same type).

    `required=False` makes no option required (the values may come from params.yaml instead)."""
    hints = typing.get_type_hints(cls)
    skipped = set(exclude)
    fields = [f for f in dataclasses.fields(cls) if f.name not in skipped]

    def decorate(func: F) -> F:
        for f in reversed(fields):
            hint = hints[f.name]
            default = f.default if f.default is not dataclasses.MISSING else None
            if f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            mandatory = (
                required and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            )
            doc = f.metadata.get("help", "")
            if hint is bool:
                func = click.option(
                    f"{_flag(f.name)}/--no-{f.name.replace('_', '-')}",
                    default=default,
                    show_default=True,
                    help=doc,
                )(func)
            elif field_type(hint)[0] is list:
                func = click.option(
                    _flag(f.name),
                    **_default(",".join(map(str, default or [])) or None, mandatory),
                    show_default=True,
                    required=mandatory,
                    help=doc or "comma-separated",
                )(func)
            elif field_type(hint)[0] is dict:
                continue  # a mapping (reader options) has its own repeatable KEY=VALUE option
            else:
                kind = field_type(hint)[0]
                choices = f.metadata.get("choices")
                func = click.option(
                    _flag(f.name),
                    type=click.Choice(choices) if choices else kind if kind in (int, float, str) else str,
                    **_default(default, mandatory),
                    required=mandatory,
                    show_default=True,
                    help=doc,
                )(func)
        return func

    return decorate


def build_config(cls: type[T], values: dict[str, Any]) -> T:
    """Pick the dataclass fields out of click's keyword arguments and validate them."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in values:
            continue
        value = values[f.name]
        kind, element = field_type(hints[f.name])
        if kind is list and value is not None:
            value = parse_list(value, element)
        kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise MaxaError(f"invalid options: {exc}") from exc


def given_options(ctx: click.Context, values: dict[str, Any]) -> dict[str, Any]:
    """The options typed on the command line (or set through the environment), not click's defaults."""
    explicit = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return {k: v for k, v in values.items() if ctx.get_parameter_source(k) in explicit}


def resolve_config(cls: type[T], ctx: click.Context, values: dict[str, Any], base: T | None) -> T:
    """`base` (a params.yaml entry, already validated) with the command line's options laid over it;
    without `base`, the options alone (the dataclass supplies the defaults)."""
    if base is None:
        return build_config(cls, values)
    merged = {**dataclasses.asdict(base), **given_options(ctx, values)}  # type: ignore[call-overload]
    return build_config(cls, merged)
