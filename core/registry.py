"""One registry per kind of extension (task, adapter, dataset reader, metric, backbone preset, store codec).

A registry holds torch-free specs: the spec is the only declaration of an entry (its name, help, options
dataclass and where its implementation lives), and the CLI's choices, params.yaml validation, the evaluator
lookup and the docs tables are read off it. Implementations are named as `module:attribute` and imported
only when used, so listing and validating entries (`--help`, `maxa params`) never imports torch.

Entries outside maxa come from plugins (`maxa.core.plugins`): every read of a registry loads them first.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import sys
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from maxa.core.errors import MaxaError


@dataclass(frozen=True)
class NoOptions:
    """The options dataclass of an entry that takes none."""


@dataclass(frozen=True, kw_only=True)
class Spec:
    """What every registered entry declares."""

    name: str
    help: str
    options: type = NoOptions
    """A dataclass: its fields are the entry's options, their defaults the only defaults, its
    `__post_init__` their check (metadata `help` and `choices` become CLI help and choices)."""

    def __post_init__(self) -> None:
        if not self.name or not self.help:
            raise ValueError(f"a {type(self).__name__} needs a name and a help text, got {self!r}")
        if not dataclasses.is_dataclass(self.options):
            raise ValueError(f"{type(self).__name__} {self.name!r}: options must be a dataclass")

    def option_fields(self) -> tuple[dataclasses.Field[Any], ...]:
        return dataclasses.fields(self.options)

    def defaults(self) -> dict[str, Any]:
        """Option -> default (every option of a spec has one)."""
        return {f.name: _default(f) for f in self.option_fields()}

    def build_options(self, values: Mapping[str, Any], where: str) -> Any:
        """The options dataclass from `values` (missing ones at their defaults), each converted to its
        default's type (YAML and old records give 0 for 0.0); a wrong value is a one-line error."""
        defaults = self.defaults()
        unknown = sorted(set(values) - set(defaults))
        if unknown:
            raise MaxaError(
                f"{where} takes no option(s) {', '.join(unknown)} (it takes: {', '.join(defaults)})"
            )
        converted = {}
        for key, value in values.items():
            kind = type(defaults[key])
            if kind is bool and not isinstance(value, bool):
                raise MaxaError(f"{where}: option {key} must be true or false, got {value!r}")
            try:
                converted[key] = kind(value) if kind in (int, float, str) else value
            except (TypeError, ValueError):
                raise MaxaError(f"{where}: option {key} must be a {kind.__name__}, got {value!r}") from None
        return self.options(**converted)

    def option_problem(self, values: Mapping[str, Any], what: str) -> str | None:
        """Why these option values do not fit the options dataclass, in the user's words (None: they do):
        an unknown name (with the closest one) or a value of the wrong type. `what` names the entry, e.g.
        "the coco reader"."""
        hints = typing.get_type_hints(self.options)
        takes = [f.name for f in self.option_fields()]
        unknown = [k for k in values if k not in takes]
        if unknown:
            close = {k: difflib.get_close_matches(k, takes, n=1) for k in unknown}
            named = ", ".join(
                f"{k!r}" + (f" (did you mean {c[0]!r}?)" if c else "") for k, c in close.items()
            )
            return f"{what} has no option {named}; it takes: {', '.join(takes) or 'none'}"
        for key, value in values.items():
            if not accepts(hints[key], value):
                return f"{what}'s option {key} must be {expected(hints[key])}, got {value!r}"
        return None


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise ValueError(f"option {f.name!r} has no default")


def accepts(hint: Any, value: Any) -> bool:
    """Whether a YAML value fits an option's type (an int is a float too; a bool is not an int)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(accepts(arg, value) for arg in args)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        item = args[0] if args else Any
        return isinstance(value, (list, tuple)) and all(accepts(item, v) for v in value)
    if origin is dict:
        key, item = args if args else (Any, Any)
        return isinstance(value, dict) and all(accepts(key, k) and accepts(item, v) for k, v in value.items())
    return isinstance(value, origin or hint)


def expected(hint: Any) -> str:
    """An option's type as a params.yaml writer reads it: "an integer or null", "a list of strings"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(expected(arg) for arg in args)
    if origin in (list, tuple):
        return f"a list of {_plural(args[0])}" if args else "a list"
    if origin is dict:
        return "a mapping"
    names = {type(None): "null", bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, f"a {getattr(hint, '__name__', hint)}")


def _plural(hint: Any) -> str:
    return {str: "strings", int: "integers", float: "numbers"}.get(hint, "values")


def resolve(path: str) -> Any:
    """The object a `module:attribute` path names (imported now, where it is used)."""
    module, _, attribute = path.partition(":")
    if not module or not attribute:
        raise ValueError(f"expected 'module:attribute', got {path!r}")
    target: Any = importlib.import_module(module)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


def _declaring_module() -> str:
    """ "maxa" for maxa's own entries (registered by a maxa module's top level), else the module that
    called the registration (a plugin's)."""
    frame = sys._getframe(2)
    while frame is not None:
        module = str(frame.f_globals.get("__name__", ""))
        if module.startswith("maxa.") and frame.f_code.co_name == "<module>":
            return "maxa"
        if not module.startswith(("maxa.", "importlib")):
            return module
        frame = frame.f_back  # type: ignore[assignment]
    return "maxa"


class Entry(Protocol):
    """What a registry holds: a named, described declaration (a Spec, or e.g. a backbone Preset)."""

    @property
    def name(self) -> str: ...

    @property
    def help(self) -> str: ...


S = TypeVar("S", bound=Entry)


class Registry(Generic[S]):
    """Name -> spec of one kind, in registration order (maxa's own first, then plugins)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._specs: dict[str, S] = {}
        self._sources: dict[str, str] = {}
        self._sealed_by = ""

    def register(self, spec: S) -> S:
        """Add `spec`; a name registered twice is a programming error."""
        if spec.name in self._specs:
            raise ValueError(f"{self.kind} {spec.name!r} is registered twice")
        if self._sealed_by:
            raise ValueError(
                f"{self.kind} {spec.name!r} is registered after {self._sealed_by} read the {self.kind}s; "
                "register it from a plugin module (MAXA_PLUGINS or the maxa.plugins entry point group)"
            )
        self._specs[spec.name] = spec
        self._sources[spec.name] = _declaring_module()
        return spec

    def seal(self, reader: str) -> None:
        """Refuse later registrations: `reader` built something from the entries (ProbeConfig's fields)."""
        self._load()
        self._sealed_by = reader

    def _load(self) -> None:
        from maxa.core.plugins import load_plugins

        load_plugins()

    def names(self) -> list[str]:
        self._load()
        return list(self._specs)

    def specs(self) -> list[S]:
        self._load()
        return list(self._specs.values())

    def source(self, name: str) -> str:
        """Where an entry was declared: "maxa", or the plugin module that registered it."""
        self.get(name)
        return self._sources[name]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._specs

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> S:
        """The spec of `name`; an unknown name is a one-line error with the closest names."""
        self._load()
        if name not in self._specs:
            close = difflib.get_close_matches(str(name), list(self._specs), n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise MaxaError(f"unknown {self.kind} {name!r}{hint} (known: {', '.join(self._specs)})")
        return self._specs[name]
