"""core/registry.py: one registry per kind, specs checked when declared, unknown names with close matches."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from maxa.core.errors import MaxaError
from maxa.core.registry import NoOptions, Registry, Spec, resolve
from maxa.probe.task_specs import TASKS


@dataclass(frozen=True)
class Opts:
    size: int = field(default=3, metadata={"help": "a size"})
    scale: float = field(default=1.0, metadata={"help": "a scale"})
    flag: bool = field(default=False, metadata={"help": "a flag"})

    def __post_init__(self) -> None:
        if self.size < 1:
            raise MaxaError(f"--size must be >= 1, got {self.size}")


@dataclass(frozen=True)
class ReaderOpts:
    num_images: int | None = field(default=None, metadata={"help": "first N"})
    skip_ids: list[str] | None = field(default=None, metadata={"help": "left out"})
    strength: float = field(default=1.0, metadata={"help": "how strong"})
    archives: dict[str, int] | None = field(default=None, metadata={"help": "frames per archive"})
    instances: bool = field(default=True, metadata={"help": "instance masks"})


def test_option_values_are_checked_against_the_dataclass_in_the_users_words() -> None:
    spec = Spec(name="r", help="a reader", options=ReaderOpts)
    fine = {"num_images": 3, "skip_ids": ["a"], "strength": 2, "archives": {"t": 1}, "instances": False}
    assert spec.option_problem(fine, "the r reader") is None
    assert spec.option_problem({"num_images": None, "skip_ids": ("a", "b")}, "the r reader") is None
    assert spec.option_problem({"num_image": 3}, "the r reader") == (
        "the r reader has no option 'num_image' (did you mean 'num_images'?); "
        "it takes: num_images, skip_ids, strength, archives, instances"
    )
    wrong = {
        "num_images": ("ten", "an integer or null"),
        "skip_ids": ("a,b", "a list of strings or null"),
        "strength": (True, "a number"),
        "archives": ({"t": "x"}, "a mapping or null"),
        "instances": ("yes", "true or false"),
    }
    for key, (value, expected) in wrong.items():
        assert spec.option_problem({key: value}, "the r reader") == (
            f"the r reader's option {key} must be {expected}, got {value!r}"
        )


def test_entries_keep_their_order_and_unknown_names_get_close_matches() -> None:
    registry: Registry[Spec] = Registry("widget")
    for name in ("alpha", "beta", "gamma"):
        registry.register(Spec(name=name, help=f"the {name}"))
    assert registry.names() == ["alpha", "beta", "gamma"] and list(registry) == registry.names()
    assert registry.get("beta").help == "the beta" and "gamma" in registry and "delta" not in registry
    with pytest.raises(
        MaxaError, match=r"unknown widget 'betta'; did you mean beta\? \(known: alpha, beta, gamma\)"
    ):
        registry.get("betta")
    with pytest.raises(ValueError, match="widget 'alpha' is registered twice"):
        registry.register(Spec(name="alpha", help="again"))


def test_a_spec_needs_help_and_a_dataclass_of_options() -> None:
    with pytest.raises(ValueError, match="needs a name and a help text"):
        Spec(name="x", help="")
    with pytest.raises(ValueError, match="options must be a dataclass"):
        Spec(name="x", help="y", options=dict)
    assert Spec(name="x", help="y").defaults() == {} and Spec(name="x", help="y").options is NoOptions


def test_options_are_built_with_their_defaults_types_and_checks() -> None:
    spec = Spec(name="w", help="a widget", options=Opts)
    assert spec.defaults() == {"size": 3, "scale": 1.0, "flag": False}
    built = spec.build_options({"size": "4", "scale": 2}, "widget 'w'")
    assert (built.size, built.scale, type(built.scale)) == (4, 2.0, float)  # YAML's 2 for 2.0
    with pytest.raises(
        MaxaError, match=r"widget 'w' takes no option\(s\) colour \(it takes: size, scale, flag\)"
    ):
        spec.build_options({"colour": 1}, "widget 'w'")
    with pytest.raises(MaxaError, match="option size must be a int, got 'big'"):
        spec.build_options({"size": "big"}, "widget 'w'")
    with pytest.raises(MaxaError, match="option flag must be true or false, got 'no'"):
        spec.build_options({"flag": "no"}, "widget 'w'")
    with pytest.raises(MaxaError, match="--size must be >= 1, got 0"):
        spec.build_options({"size": 0}, "widget 'w'")


def test_sources_name_the_declaring_module_and_a_sealed_registry_refuses_latecomers() -> None:
    import maxa.probe.config  # noqa: F401  (ProbeConfig's fields are built from the tasks: it seals them)

    registry: Registry[Spec] = Registry("gadget")
    registry.register(Spec(name="mine", help="declared here"))
    assert registry.source("mine") == __name__  # a module outside maxa (as a plugin is)
    assert TASKS.source("semantic") == "maxa"
    registry.seal("a test")
    with pytest.raises(
        ValueError, match=r"gadget 'late' is registered after a test read the gadgets.*MAXA_PLUGINS"
    ):
        registry.register(Spec(name="late", help="too late"))
    with pytest.raises(ValueError, match=r"task 'late' is registered after ProbeConfig read the tasks"):
        TASKS.register(Spec(name="late", help="too late"))  # type: ignore[arg-type]


def test_resolve_imports_module_attribute_paths() -> None:
    assert resolve("maxa.core.registry:Registry") is Registry
    assert resolve("maxa.core.registry:Spec.defaults") is Spec.defaults
    with pytest.raises(ValueError, match="expected 'module:attribute'"):
        resolve("maxa.core.registry")
