"""The provenance records of the two stores: `TargetProvenance` (prepare) and `FeatureProvenance` (extract).

Each is the one writer (`to_dict`, what the store's attributes hold, flat as docs/store.md shows) and the
one reader (`from_dict`, which validates and is the only place an older layout is known). Later stages
read a store's provenance through these classes (`of(store)`), never by string key. A key a writer adds
that no stage joins on travels in `other` unchanged, so the fingerprint of what was written is kept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from maxa.core.errors import MaxaError
from maxa.core.records import (
    BACKBONE_FIELDS,
    DatasetRef,
    backbone_fields,
    backbone_fingerprint,
    now_iso,
    require_fields,
)
from maxa.core.version import __version__

NATIVE = "native"
"""Label size (and a target store's `label_resolution`) keeping each image's own resolution (every image
of the split must share it)."""
NONFINITE_KEY = "nonfinite"
"""`nonfinite: "keep"` in a store's provenance: NaN/inf were let in on purpose (readers still refuse them)."""


class HasProvenance(Protocol):
    """What the records are read from: a store (its URL names it in errors)."""

    @property
    def url(self) -> str: ...

    @property
    def provenance(self) -> dict[str, Any]: ...


def _ints(value: Any) -> tuple[int, int] | None:
    return None if value is None else (int(value[0]), int(value[-1]))


def _listed(value: Any) -> list[Any] | None:
    return None if value is None else list(value)


@dataclass(frozen=True)
class TargetProvenance:
    """The provenance of a target store. On disk it stays flat (docs/store.md); `dataset` is the same
    DatasetRef a feature store's provenance carries."""

    dataset: DatasetRef
    num_classes: int
    class_names: list[str]
    label_size: tuple[int, int]
    targets: list[str]
    label_resolution: str | None = None  # NATIVE: each image's own size (one per split)
    maxa_version: str = __version__
    created: str = ""

    def to_dict(self) -> dict[str, Any]:
        ref = self.dataset
        return {
            "dataset": ref.name,
            "split": ref.split,
            "root": ref.root,
            "dataset_config": {**ref.options, "split": ref.split},
            "dataset_fingerprint": ref.fingerprint,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "label_size": list(self.label_size),
            **({"label_resolution": self.label_resolution} if self.label_resolution else {}),
            "targets": list(self.targets),
            "maxa_version": self.maxa_version,
            "created": self.created or now_iso(),
        }

    @classmethod
    def from_dict(cls, prov: Mapping[str, Any], where: str, content: str | None = None) -> TargetProvenance:
        require_fields(prov, ("dataset", "split", "dataset_fingerprint"), f"{where} provenance")
        options = {k: v for k, v in (prov.get("dataset_config") or {}).items() if k not in ("split", "root")}
        size = list(prov.get("label_size") or [0, 0])
        return cls(
            dataset=DatasetRef(
                name=str(prov["dataset"]),
                split=str(prov["split"]),
                fingerprint=str(prov["dataset_fingerprint"]),
                options=options,
                root=prov.get("root"),
                content=content,
            ),
            num_classes=int(prov.get("num_classes", 0)),
            class_names=[str(c) for c in prov.get("class_names") or []],
            label_size=(int(size[0]), int(size[-1])),
            label_resolution=prov.get("label_resolution"),
            targets=[str(t) for t in prov.get("targets") or []],
            maxa_version=str(prov.get("maxa_version", "")),
            created=str(prov.get("created", "")),
        )

    @classmethod
    def of(cls, store: HasProvenance) -> TargetProvenance:
        return cls.from_dict(store.provenance, f"target store {store.url}")


class TargetStore(HasProvenance, Protocol):
    """A target store as far as its dataset reference needs it."""

    @property
    def complete(self) -> bool: ...

    def digests(self) -> Any: ...


def dataset_reference(store: TargetStore) -> DatasetRef:
    """The dataset reference of a target store; `content` hashes the per-sample digests (once complete)."""
    digests = store.digests()
    content = hashlib.sha256(digests.tobytes()).hexdigest()[:16] if digests is not None else None
    where = f"target store {store.url}"
    return TargetProvenance.from_dict(store.provenance, where, content if store.complete else None).dataset


_FEATURE_KEYS = (
    "model",
    "name",
    "weights",
    "weights_sha256",
    "input_size",
    "patch_size",
    "mean",
    "std",
    "norm",
    "layers",
    "feature_shapes",
    "dtype",
    "backbone_params",
    "dataset",
    NONFINITE_KEY,
)


@dataclass(frozen=True)
class FeatureProvenance:
    """The provenance of a feature store: the backbone, how it was run, and the dataset split it read.

    `name` is the backbone's display name (the model's timm name unless one was given); `other` holds
    what the writer records that no stage joins on (library versions, timm facts, created, precision...).
    """

    dataset: DatasetRef
    model: str | None = None  # the timm model; required by `maxa probe` (need("model"))
    layers: list[str] = field(default_factory=list)
    feature_shapes: dict[str, list[int]] = field(default_factory=dict)
    name: str = ""
    weights: str | None = None
    weights_sha256: str | None = None
    input_size: tuple[int, int] | None = None
    patch_size: tuple[int, int] | None = None
    mean: list[float] | None = None  # as written (never converted: the fingerprint hashes these values)
    std: list[float] | None = None
    norm: bool | None = None
    dtype: str = "float16"
    backbone_params: int | None = None
    keep_nonfinite: bool = False
    other: dict[str, Any] = field(default_factory=dict)

    @property
    def backbone(self) -> str:
        """What results call the backbone: its name, else its model."""
        return self.name or self.model or ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            **self.other,
            "model": self.model,
            "name": self.backbone,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
            "input_size": _listed(self.input_size),
            "patch_size": _listed(self.patch_size),
            "mean": _listed(self.mean),
            "std": _listed(self.std),
            "norm": self.norm,
            "layers": list(self.layers),
            "feature_shapes": {k: list(v) for k, v in self.feature_shapes.items()},
            "dtype": self.dtype,
            "backbone_params": self.backbone_params,
            # what was read, not where: a feature store made with --root elsewhere is the same store
            "dataset": {k: v for k, v in self.dataset.to_dict().items() if k != "root"},
        }
        if self.keep_nonfinite:
            out[NONFINITE_KEY] = "keep"
        return out

    @classmethod
    def from_dict(cls, prov: Mapping[str, Any], where: str) -> FeatureProvenance:
        require_fields(prov, ("dataset",), f"{where} provenance")
        shapes = prov.get("feature_shapes") or {}
        params = prov.get("backbone_params")
        return cls(
            model=None if prov.get("model") is None else str(prov["model"]),
            name=str(prov.get("name") or prov.get("model") or ""),
            dataset=DatasetRef.from_dict(prov["dataset"], where),
            layers=[str(n) for n in prov.get("layers") or []],
            feature_shapes={str(k): [int(x) for x in v] for k, v in shapes.items()},
            weights=prov.get("weights"),
            weights_sha256=prov.get("weights_sha256"),
            input_size=_ints(prov.get("input_size")),
            patch_size=_ints(prov.get("patch_size")),
            mean=_listed(prov.get("mean")),
            std=_listed(prov.get("std")),
            norm=prov.get("norm"),
            dtype=str(prov.get("dtype") or "float16"),
            backbone_params=None if params is None else int(params),
            keep_nonfinite=prov.get(NONFINITE_KEY) == "keep",
            other={k: v for k, v in prov.items() if k not in _FEATURE_KEYS},
        )

    @classmethod
    def of(cls, store: HasProvenance) -> FeatureProvenance:
        return cls.from_dict(store.provenance, f"feature store {store.url}")

    @property
    def backbone_fields(self) -> dict[str, Any]:
        """The fields that make two stores' features come from the same network, the same way."""
        return backbone_fields(self.to_dict())

    @property
    def backbone_fingerprint(self) -> str:
        """Hash of the fields that make two stores' features come from the same network, the same way."""
        return backbone_fingerprint(self.to_dict())

    def backbone_differences(self, other: FeatureProvenance) -> list[str]:
        """`field: a vs b` for every backbone field in which two feature stores differ."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{k}: {mine[k]!r} vs {theirs[k]!r}" for k in BACKBONE_FIELDS if mine[k] != theirs[k]]

    def need(self, name: str, where: str) -> Any:
        """An optional field a stage cannot do without (`backbone_params` for probe), refused when absent."""
        value = getattr(self, name)
        if value is None:
            raise MaxaError(f"{where} provenance lacks required field(s) {name}; re-create it with this maxa")
        return value
