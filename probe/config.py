"""The `maxa probe` settings (params.yaml `probe` section and `tasks` entries), free of heavy imports.

ProbeSettings holds what every run has; ProbeConfig adds one field per option of every registered task and
adapter, as their specs declare it (probe/task_specs.py, probe/adapter_specs.py, plugins). Every field
becomes a CLI option (pipelines/options.py) and is recorded in the checkpoint, so evaluation rebuilds the
same task (e.g. the valid depth range) and the report can show the full protocol.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from maxa.core.choices import check_choice
from maxa.core.errors import MaxaError
from maxa.core.registry import Registry
from maxa.probe.adapter_specs import ADAPTERS
from maxa.probe.task_specs import TASKS

SCHEDULES = ("constant", "cosine")
"""LR schedules (probe/schedule.py builds them): constant is the paper's released loop."""

LOADERS = ("auto", "memory", "stream")

# Fields that change how fast or where a run happens, never its result: a resumed run may differ in these.
RUNTIME_FIELDS = frozenset(
    {
        "device",
        "resume",
        "checkpoint_every",
        "memory_budget_gb",
        "loader",
        "prefetch",
        "read_threads",
        "threads",
        "sweep_mode",
    }
)

SWEEP_MODES = ("auto", "loop", "parallel", "vmap")


T = TypeVar("T")


def _parse_list(text: str, sep: str, kind: Callable[[str], T], option: str) -> list[T]:
    try:
        return [kind(part.strip()) for part in str(text).split(sep) if part.strip()]
    except ValueError as exc:
        raise MaxaError(
            f"{option} expects {kind.__name__} values separated by {sep!r}, got {text!r}"
        ) from exc


def _unique(values: list[T], option: str) -> list[T]:
    if len(set(values)) != len(values):
        raise MaxaError(f"{option} lists a value twice: {values}")
    return values


def _split_layers(text: str) -> list[str]:
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise MaxaError(f"--layer needs at least one layer, got {text!r}")
    return parts


@dataclass
class ProbeSettings:
    """The settings of `maxa probe` every run has; ProbeConfig adds the task and adapter options."""

    if typing.TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any: ...  # the options ProbeConfig adds from the specs

    task: str = field(
        default="semantic",
        metadata={"help": "What to probe (`maxa plugins` lists them).", "choices": TASKS.names()},
    )
    adapter: str = field(
        default="maxa",
        metadata={
            "help": "maxa (attentive, the paper's), linear, or knn (no training); `maxa plugins` lists them.",
            "choices": ADAPTERS.names(),
        },
    )
    layer: str = field(
        default="-1",
        metadata={
            "help": "Stored layer(s) to read. N >= 0: block (ViT) or stage (CNN) N counted from 0 as in "
            "`extract --layers`, i.e. the array layer_N; negative: counted among the layers the store holds "
            "(-1 = the last stored); or an array name (layer_11). Comma-separated: concatenated on channels."
        },
    )
    iterations: int = field(default=1000, metadata={"help": "Training steps."})
    batch_size: int = field(default=32, metadata={"help": "Images per training step."})
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    seed: int = field(default=0, metadata={"help": "Seeds weights and batch order (same seed, same result)."})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N."})
    schedule: str = field(
        default="constant",
        metadata={
            "help": "LR schedule: constant (the paper's released loop) or cosine (decay to 0).",
            "choices": SCHEDULES,
        },
    )
    # --- data loading, checkpoints
    memory_budget_gb: float = field(
        default=8.0,
        metadata={
            "help": "Load the store into (GPU) memory when it fits in this many GB, else stream shards."
        },
    )
    loader: str = field(
        default="auto",
        metadata={
            "help": "memory: load the store; stream: read shards; auto: by --memory-budget-gb.",
            "choices": LOADERS,
        },
    )
    shuffle_shards: int = field(
        default=8, metadata={"help": "Shards shuffled together (same order in memory and when streaming)."}
    )
    prefetch: int = field(default=2, metadata={"help": "Shard windows read ahead when streaming."})
    read_threads: int = field(default=4, metadata={"help": "Threads reading shards when streaming."})
    threads: int = field(
        default=0,
        metadata={"help": "CPU threads for training (0: torch's default; 1 is best for tiny heads)."},
    )
    checkpoint_every: int = field(
        default=200,
        metadata={
            "help": "Save a resumable state (every member of a sweep) every N steps (0: only on interrupt)."
        },
    )
    resume: bool = field(
        default=False, metadata={"help": "Continue from the state saved next to --out by an earlier run."}
    )
    # --- sweeps and model selection (probe/sweep.py)
    sweep_lrs: str = field(
        default="",
        metadata={
            "help": "Learning rates trained side by side on shared batches (replace --lr), e.g. '1e-3,3e-4'."
        },
    )
    sweep_seeds: str = field(
        default="",
        metadata={"help": "Initialisation seeds trained side by side (replace --seed), e.g. '0,1,2'."},
    )
    sweep_layers: str = field(
        default="",
        metadata={
            "help": "Layer choices trained side by side (replace --layer), ';'-separated, e.g. '-1;-2'."
        },
    )
    data_seed: int = field(
        default=-1, metadata={"help": "Seed of the batch order (-1: --seed); a sweep shares one."}
    )
    val_fraction: float = field(
        default=0.0,
        metadata={"help": "Fraction of the training split held out to choose the sweep's lr and layer."},
    )
    val_seed: int = field(default=0, metadata={"help": "Seed choosing the held-out validation samples."})
    sweep_mode: str = field(
        default="auto",
        metadata={
            "help": "How sweep members share a batch: loop (one after another; bit-for-bit equal to solo "
            "runs), parallel (members on separate CPU cores, one thread each; bit-for-bit equal to solo "
            "runs with --threads 1), vmap (one batched computation), auto (vmap on a GPU, parallel on "
            "a CPU with 2 to K threads for K members, else loop).",
            "choices": SWEEP_MODES,
        },
    )

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.batch_size < 1:
            raise MaxaError("--iterations and --batch-size must be >= 1")
        if self.lr <= 0:
            raise MaxaError(f"--lr must be positive, got {self.lr}")
        for name in ("shuffle_shards", "prefetch"):
            if getattr(self, name) < 1:
                raise MaxaError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.read_threads < 1 or min(self.checkpoint_every, self.memory_budget_gb, self.threads) < 0:
            raise MaxaError(
                "--read-threads must be >= 1; --checkpoint-every, --memory-budget-gb, --threads >= 0"
            )
        check_choice(self.loader, LOADERS, "--loader")
        check_choice(self.adapter, tuple(ADAPTERS.names()), "--adapter")
        check_choice(self.task, tuple(TASKS.names()), "--task")
        check_choice(self.schedule, SCHEDULES, "--schedule")
        for spec in (*ADAPTERS.specs(), *TASKS.specs()):  # every option is checked, as every one is recorded
            spec.options(**{key: getattr(self, key) for key in spec.defaults()})
        self.layer = str(self.layer)
        self.layers()
        if not 0.0 <= self.val_fraction < 1.0:
            raise MaxaError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        check_choice(self.sweep_mode, SWEEP_MODES, "--sweep-mode")
        if self.data_seed < -1:
            raise MaxaError(f"--data-seed must be >= 0 (or -1 for --seed), got {self.data_seed}")
        lrs, layers, _ = self.grid_lrs(), self.grid_layers(), self.grid_seeds()
        for layer in layers:
            _split_layers(layer)
        if (len(lrs) > 1 or len(layers) > 1) and self.val_fraction == 0:
            raise MaxaError(
                "--sweep-lrs/--sweep-layers choose among members on held-out training samples: "
                "set --val-fraction > 0 (e.g. 0.1)"
            )

    def layers(self) -> list[str]:
        """`--layer` as a list: '-1', '11', 'layer_11' or several comma-separated (concatenated on C)."""
        return _split_layers(self.layer)

    def grid_lrs(self) -> list[float]:
        """The swept learning rates (just --lr without --sweep-lrs)."""
        values = _parse_list(self.sweep_lrs, ",", float, "--sweep-lrs") or [self.lr]
        if min(values) <= 0:
            raise MaxaError(f"--sweep-lrs must be positive, got {self.sweep_lrs!r}")
        return _unique(values, "--sweep-lrs")

    def grid_seeds(self) -> list[int]:
        values = _parse_list(self.sweep_seeds, ",", int, "--sweep-seeds") or [self.seed]
        return _unique(values, "--sweep-seeds")

    def grid_layers(self) -> list[str]:
        return _unique(
            _parse_list(self.sweep_layers, ";", str, "--sweep-layers") or [self.layer], "--sweep-layers"
        )

    def is_sweep(self) -> bool:
        return bool(self.sweep_lrs or self.sweep_seeds or self.sweep_layers)

    def batch_seed(self) -> int:
        """The seed of the batch order."""
        return self.seed if self.data_seed < 0 else self.data_seed

    def members(self) -> list[ProbeSettings]:
        """One plain config per grid point (layer x lr x seed), sharing this config's batch order.

        A member is exactly the config of training it alone, so it has the same run id and weights.
        """
        data_seed = self.batch_seed()
        out = []
        for layer in self.grid_layers():
            for lr in self.grid_lrs():
                for seed in self.grid_seeds():
                    out.append(
                        replace(
                            self,
                            layer=layer,
                            lr=lr,
                            seed=seed,
                            data_seed=data_seed,
                            sweep_lrs="",
                            sweep_seeds="",
                            sweep_layers="",
                        )
                    )
        return out

    def adapter_options(self) -> dict[str, Any]:
        """What the adapter is built from (recorded in the checkpoint): the adapters' recorded options."""
        recorded = {
            f.name: getattr(self, f.name)
            for f in _option_fields(self, ADAPTERS)
            if f.metadata.get("record", True)
        }
        return {**recorded, "output_groups": self.output_groups()}

    def output_groups(self) -> list[int]:
        """Channel counts of the task's outputs that get a decoder each ([]: one decoder for all)."""
        from maxa.probe.tasks import get_task  # imports torch: only where an adapter is built

        return list(get_task(self.task, **self.task_options()).output_groups())

    def task_options(self) -> dict[str, Any]:
        """The task options this config carries (maxa's tasks' and, for a plugin task, its own)."""
        return {f.name: getattr(self, f.name) for f in _option_fields(self, TASKS)}

    def result_fields(self) -> dict[str, Any]:
        """The fields that determine the trained weights (a resumed run must match these)."""
        from dataclasses import asdict

        foreign = _PLUGIN_OPTIONS - {f.name for f in _option_fields(self, ADAPTERS, TASKS)}
        fields = {k: v for k, v in asdict(self).items() if k not in RUNTIME_FIELDS | foreign}
        fields["data_seed"] = self.batch_seed()  # -1 and an explicit copy of --seed are the same run
        return fields


def _option_fields(config: ProbeSettings, *registries: Registry[Any]) -> list[dataclasses.Field[Any]]:
    """The option fields of maxa's own entries in `registries` and of the config's chosen task and adapter
    (a plugin's options neither reach the records of other runs nor change their run ids)."""
    chosen = {config.task, config.adapter}
    out: dict[str, dataclasses.Field[Any]] = {}
    for registry in registries:
        for spec in registry.specs():
            if spec.name in chosen or registry.source(spec.name) == "maxa":
                out.update({f.name: f for f in spec.option_fields()})
    return list(out.values())


def _derive_config() -> tuple[type, frozenset[str]]:
    """ProbeSettings plus one field per adapter and task option, as the specs declare them (help prefixed
    with the entry's name); an option two entries declare must agree on type and default."""
    base = {f.name for f in dataclasses.fields(ProbeSettings)}
    fields: list[tuple[str, Any, Any]] = []
    added: dict[str, tuple[str, Any, Any]] = {}
    plugin: set[str] = set()
    for registry in (ADAPTERS, TASKS):
        for spec in registry.specs():
            hints = typing.get_type_hints(spec.options)
            for f in spec.option_fields():
                owner = f"{registry.kind} {spec.name!r}"
                if f.name in base:
                    raise MaxaError(f"{owner}: option {f.name!r} is a setting of every probe; rename it")
                default = spec.defaults()[f.name]
                if f.name in added:
                    other, hint, value = added[f.name]
                    if (hint, value) != (hints[f.name], default):
                        raise MaxaError(
                            f"{owner} and {other} both declare option {f.name!r}, with another type/default"
                        )
                    continue
                added[f.name] = (owner, hints[f.name], default)
                metadata = {**f.metadata, "help": f"{spec.name}: {f.metadata.get('help', '')}"}
                fields.append((f.name, hints[f.name], dataclasses.field(default=default, metadata=metadata)))
                if registry.source(spec.name) != "maxa":
                    plugin.add(f.name)
    ADAPTERS.seal("ProbeConfig")
    TASKS.seal("ProbeConfig")
    cls = dataclasses.make_dataclass("ProbeConfig", fields, bases=(ProbeSettings,))
    cls.__module__ = __name__
    cls.__doc__ = "What `maxa probe` trains: a `tasks.<run>` entry of params.yaml over its `probe` section."
    return cls, frozenset(plugin)


if typing.TYPE_CHECKING:
    ProbeConfig = ProbeSettings
    _PLUGIN_OPTIONS: frozenset[str] = frozenset()
else:
    ProbeConfig, _PLUGIN_OPTIONS = _derive_config()
