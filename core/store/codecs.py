"""Codec settings of per-image arrays: the (filters, compressors) factories the codec specs name
(maxa.core.codec_specs), the measured defaults, and the CRC32C every chunk ends with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle, Crc32cCodec, ZstdCodec

from maxa.core.codec_specs import CODECS, CodecFactory, codec_factory


def no_codec(dtype: np.dtype) -> tuple[list[Any], list[Any]]:
    return [], []


def blosc_lz4(dtype: np.dtype) -> tuple[list[Any], list[Any]]:
    return [], [BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.shuffle, typesize=dtype.itemsize)]


def blosc_lz4_bitshuffle(dtype: np.dtype) -> tuple[list[Any], list[Any]]:
    return [], [BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.bitshuffle, typesize=dtype.itemsize)]


def blosc_zstd(dtype: np.dtype) -> tuple[list[Any], list[Any]]:
    return [], [BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.shuffle, typesize=dtype.itemsize)]


def zstd(dtype: np.dtype) -> tuple[list[Any], list[Any]]:
    return [], [ZstdCodec(level=3)]


def bitround_codec(keepbits: int) -> CodecFactory:
    """Lossy: keep `keepbits` mantissa bits (float16 has 10), then bit-shuffled Blosc-lz4 (the zeroed
    bits are sub-byte, so only a bit shuffle exposes them). Not a default."""

    def factory(dtype: np.dtype) -> tuple[list[Any], list[Any]]:
        import warnings

        from zarr.codecs.numcodecs import BitRound

        with warnings.catch_warnings():  # "numcodecs codecs are not in the Zarr v3 spec": documented
            warnings.simplefilter("ignore")
            filters = [BitRound(keepbits=keepbits)]
        return filters, blosc_lz4_bitshuffle(dtype)[1]

    return factory


bitround7 = bitround_codec(7)

FEATURE_CODEC = "none"
"""Default for float16 (feature) arrays, chosen by benchmarks/store_io.py (see docs/store.md): float16
activations compress only ~1.0-1.1x losslessly, so any codec only costs read speed."""
DEFAULT_CODEC = "blosc-lz4"
"""Default for every other dtype (labels, instance ids, depth): piecewise-constant or smooth maps
compress many-fold and lz4 decodes at memory speed."""


@dataclass(frozen=True)
class ArraySpec:
    """One per-image array: the shape of a single image's entry, its dtype and dimension names.

    `codec` names a registered codec (maxa.core.codec_specs); None picks the measured default for the
    dtype (or "none" when `compress` is False).
    """

    item_shape: tuple[int, ...]
    dtype: str
    dims: tuple[str, ...]
    compress: bool = True
    codec: str | None = None

    def codec_name(self) -> str:
        if self.codec is not None:
            return self.codec
        if not self.compress:
            return "none"
        return FEATURE_CODEC if np.dtype(self.dtype) == np.float16 else DEFAULT_CODEC


CHECKSUM = Crc32cCodec
"""The last codec of every chunk maxa writes (docs/store.md: every Zarr v3 reader checks it)."""


def codec_names(array: zarr.Array) -> list[str]:
    names = []
    for codec in (*array.filters, *array.compressors):
        cname = getattr(codec, "cname", None)
        label = getattr(codec, "codec_name", None) or type(codec).__name__
        names.append(f"{label}({getattr(cname, 'value', cname)})" if cname is not None else str(label))
    return names


def codec_dicts(codecs: Sequence[Any]) -> list[Any]:
    """Codec descriptions without the checksum, to compare an array's codecs with a registered setting."""
    return [c.to_dict() for c in codecs if not isinstance(c, Crc32cCodec)]


def spec_of(node: zarr.Array) -> ArraySpec:
    """The ArraySpec an array was created from (codec: the registered setting its codecs match)."""
    dims = tuple(str(d) for d in (node.metadata.dimension_names or ()))  # type: ignore[union-attr]
    stored = codec_dicts([*node.filters, *node.compressors])
    codec = None
    for candidate in CODECS.names():
        make = codec_factory(candidate)
        filters, compressors = make(np.dtype(node.dtype))
        if codec_dicts([*filters, *compressors]) == stored:
            codec = candidate
            break
    return ArraySpec(tuple(node.shape[1:]), str(node.dtype), dims, codec=codec)
