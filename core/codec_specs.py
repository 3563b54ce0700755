"""The codec settings of per-image store arrays, declared once each (zarr-free): what `ArraySpec(codec=...)`
accepts and the factory `dtype -> (filters, compressors)` in maxa.core.store.codecs (or a plugin's) that
builds it. A codec of one's own is a `CodecSpec` registered in CODECS from a plugin module."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from maxa.core.registry import Registry, Spec, resolve


@dataclass(frozen=True, kw_only=True)
class CodecSpec(Spec):
    implementation: str
    """`module:function`: numpy dtype -> (filters, compressors) for zarr's create_array."""


CODECS: Registry[CodecSpec] = Registry("store codec")

CodecFactory = Callable[[Any], tuple[list[Any], list[Any]]]
"""dtype -> (filters, compressors) for zarr's create_array."""


def codec_factory(name: str) -> CodecFactory:
    """The factory of codec setting `name` (imported now)."""
    return resolve(CODECS.get(name).implementation)


for _name, _function, _help in (
    ("none", "no_codec", "no compression (the float16 feature default: activations hardly compress)"),
    ("blosc-lz4", "blosc_lz4", "Blosc-lz4, byte shuffle (the default of labels, ids and depth)"),
    ("blosc-lz4-bitshuffle", "blosc_lz4_bitshuffle", "Blosc-lz4, bit shuffle"),
    ("blosc-zstd", "blosc_zstd", "Blosc-zstd level 3, byte shuffle"),
    ("zstd", "zstd", "zstd level 3"),
    ("bitround7-blosc-lz4", "bitround7", "lossy: 7 of float16's 10 mantissa bits, then bit-shuffled lz4"),
):
    CODECS.register(CodecSpec(name=_name, help=_help, implementation=f"maxa.core.store.codecs:{_function}"))
