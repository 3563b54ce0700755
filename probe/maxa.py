"""Masked cross-attention adapter (MAXA) and the linear-probe baseline.

MAXA reads a frozen backbone's cached patch tokens of any grid size through a fixed grid of output queries.
Each attention head adds a learnable Gaussian of the query-to-key distance to its logits, so queries read
mostly from nearby tokens and the readout is independent of the backbone's patch size and grid. The
attended map is upsampled 8x by a tiny convolutional decoder. With the defaults the whole adapter has
~14-80k parameters for up to 50 classes (192- to 1024-channel features), well under 0.3% of a ViT-B,
so probe quality reflects the features, not the probe.

Attention runs in chunks of queries, each recomputed in the backward pass, so its memory is bounded by
:attr:`MaxaAdapter.attention_budget` instead of growing with queries x keys x heads x batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .positional import sincos_2d, squared_distances

__all__ = ["LinearProbe", "MaxaAdapter", "MaxaConfig", "gaussian_bias", "num_parameters"]

# Grid shapes whose key codes / distances are kept per adapter; evaluation rarely sees more than a few.
_MAX_CACHED_GRIDS = 8
# The mask uses |sigma| floored here: sigma = 0 would divide by zero (the reference would give inf/NaN).
SIGMA_FLOOR = 1e-6
# Default attention budget: heads x queries x keys logits per sample and chunk (2**21 float32 = 8 MiB).
DEFAULT_ATTENTION_BUDGET = 2**21


def num_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (what the probe-budget claims are about)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@dataclass
class MaxaConfig:
    """Hyper-parameters of :class:`MaxaAdapter`; the defaults are the reference configuration.

    ``query_grid`` is ``(qh, qw)`` (an int means square); output comes at ``2**upsample_stages`` times it.
    Per-head key/query width is ``width // heads`` and per-head value width ``value_factor`` times that.
    ``upsampler_width`` is the upsampler's channel count (the paper code's ``dim_interm``; it sets 32 for
    COCO-Stuff); ``None`` or 0 keeps the paper's default ``max(width // 4, classes // 2)``.
    """

    query_grid: tuple[int, int] = (28, 28)
    width: int = 16
    heads: int = 8
    value_factor: int = 2
    key_pos_dim: int = 8
    query_pos_dim: int = 16
    sigma_init: float = 0.05
    upsample_stages: int = 3
    mlp_hidden: int = 64
    upsampler_width: int | None = None

    def __post_init__(self) -> None:
        raw: object = self.query_grid
        if isinstance(raw, int):
            raw = (raw, raw)
        if not isinstance(raw, (tuple, list)):
            raise ValueError(f"query_grid must be two positive ints (qh, qw), got {self.query_grid!r}")
        grid = [int(g) for g in raw]  # accept lists, e.g. from YAML/JSON
        if len(grid) != 2 or min(grid) < 1:
            raise ValueError(f"query_grid must be two positive ints (qh, qw), got {self.query_grid!r}")
        self.query_grid = (grid[0], grid[1])
        for name in ("width", "heads", "value_factor", "mlp_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be divisible by heads ({self.heads})")
        for name in ("key_pos_dim", "query_pos_dim"):
            value = getattr(self, name)
            if value < 4 or value % 4:
                raise ValueError(f"{name} must be a positive multiple of 4 (sin/cos per axis), got {value}")
        if not self.sigma_init > 0:
            raise ValueError(f"sigma_init must be > 0, got {self.sigma_init}")
        if self.upsample_stages < 0:
            raise ValueError(f"upsample_stages must be >= 0, got {self.upsample_stages}")
        if self.upsampler_width is not None:
            if int(self.upsampler_width) != self.upsampler_width or self.upsampler_width < 0:
                raise ValueError(f"upsampler_width must be an int >= 0, got {self.upsampler_width!r}")
            self.upsampler_width = int(self.upsampler_width) or None  # 0 means the default layout

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def value_dim(self) -> int:
        return self.head_dim * self.value_factor

    @property
    def upsample_factor(self) -> int:
        return 2**self.upsample_stages

    def upsampler_channels(self, out_channels: int) -> int:
        """Channels of the upsampler stages for ``out_channels`` outputs."""
        return self.upsampler_width or max(self.width // 4, out_channels // 2)


def _check_features(features: Tensor, in_channels: int) -> None:
    if features.ndim != 4:
        raise ValueError(f"features must be (B, h, w, C) channel-last, got shape {tuple(features.shape)}")
    if features.shape[-1] != in_channels:
        raise ValueError(f"expected {in_channels} channels in the last dim, got {features.shape[-1]}")


def _module_dtype_device(module: nn.Module) -> tuple[torch.dtype, torch.device]:
    param = next(module.parameters())
    return param.dtype, param.device


def gaussian_bias(d2: Tensor, sigma: Tensor) -> Tensor:
    """Per-head additive attention bias ``(H, Nq, Nk)``: a normal density with std ``sigma`` of ``d2``.

    ``d2`` is the squared query-to-key distance ``(Nq, Nk)``, ``sigma`` the per-head width ``(H,)``; the
    paper's code evaluates exactly this density, ``exp(-(d2 / sigma)^2 / 2) / (sigma sqrt(2 pi))``, of the
    *squared* distance. Computed in float32.
    """
    return _gaussian_of_d4(d2.float().square(), sigma)


def _gaussian_of_d4(d4: Tensor, sigma: Tensor) -> Tensor:
    """:func:`gaussian_bias` from ``d4 = d2**2``: three element-wise passes instead of five (speed only)."""
    s = sigma.float().reshape(-1, 1, 1)
    return torch.exp(d4.unsqueeze(0) * (-0.5 / s.square())) * (1.0 / (s * math.sqrt(2.0 * math.pi)))


def _gaussian_attention(q: Tensor, k_t: Tensor, v: Tensor, d4: Tensor, sigma: Tensor) -> Tensor:
    """``softmax(q k^T / sqrt(d) + bias) v`` for one chunk of queries; the bias is built here, per chunk.

    ``q`` is ``(1, H, n, d)``, ``k_t`` the transposed keys ``(B, H, d, Nk)``. Building the bias inside the
    chunk means the (H, Nq, Nk) mask never exists whole, and under activation checkpointing nothing of size
    Nq x Nk is kept for the backward pass. Plain matmul + softmax: with 2-wide heads this measured faster on
    CPU than scaled_dot_product_attention with a float mask (benchmarks/adapter_memory.py).
    """
    logits = torch.matmul(q * (q.shape[-1] ** -0.5), k_t)
    logits = logits + _gaussian_of_d4(d4, sigma).to(logits.dtype)  # dtype of q, e.g. under autocast
    return torch.matmul(logits.softmax(dim=-1), v)


class MaxaAdapter(nn.Module):
    """Dense readout of frozen patch features of any grid size through Gaussian-masked cross-attention.

    ``forward`` takes channel-last ``(B, h, w, C)`` features (float16/float32; cast to the module's dtype
    and device) and returns ``(B, out_channels, H, W)`` logits at ``upsample_factor`` times the query grid,
    or bilinearly resized to ``output_size`` when given.

    The per-head Gaussian width ``sigma`` is a plain parameter, as in the paper's code, so AdamW's update
    and weight decay (towards 0) act on sigma itself. The mask uses ``max(|sigma|, SIGMA_FLOOR)``: identical
    to the paper while sigma > 0 (always, in practice); should a step push sigma through 0, the mask stays a
    positive Gaussian of width |sigma| (the paper's would turn negative, and be inf/NaN at exactly 0).

    ``attention_budget`` caps heads x queries x keys per sample in one attention chunk (memory, never
    results); ``query_chunk`` (0: derived from the budget) forces a chunk size, e.g. in tests.
    """

    def __init__(self, in_channels: int, out_channels: int, config: MaxaConfig | None = None) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"channels must be >= 1, got in={in_channels}, out={out_channels}")
        cfg = config if config is not None else MaxaConfig()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.config = cfg
        self.attention_budget = DEFAULT_ATTENTION_BUDGET
        self.query_chunk = 0
        qh, qw = cfg.query_grid

        # Backbones differ by orders of magnitude in feature scale; an affine-free LN fixes that for free.
        self.norm = nn.LayerNorm(in_channels, elementwise_affine=False)
        # Query codes depend only on the config, not on the input grid: a constant, so not saved.
        self.register_buffer("query_codes", sincos_2d(qh, qw, cfg.query_pos_dim), persistent=False)
        self.query_proj = nn.Linear(cfg.query_pos_dim, cfg.width)
        self.key_proj = nn.Linear(in_channels + cfg.key_pos_dim, cfg.width)
        self.value_proj = nn.Linear(in_channels + cfg.key_pos_dim, cfg.heads * cfg.value_dim)
        self.sigma = nn.Parameter(torch.full((cfg.heads,), float(cfg.sigma_init)))

        self.mlp = nn.Sequential(
            nn.Linear(cfg.heads * cfg.value_dim, cfg.mlp_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.mlp_hidden, cfg.width),
        )
        self.post_norm = nn.LayerNorm(cfg.width)

        mid = cfg.upsampler_channels(out_channels)
        stages: list[nn.Module] = []
        channels = cfg.width
        for _ in range(cfg.upsample_stages):
            stages += [
                nn.Conv2d(channels, mid, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                nn.ConvTranspose2d(mid, mid, kernel_size=2, stride=2),
                nn.ReLU(inplace=True),
            ]
            channels = mid
        self.upsample = nn.Sequential(*stages)
        self.head = nn.Conv2d(channels, out_channels, kernel_size=1)
        self.skip = nn.Conv2d(cfg.width, out_channels, kernel_size=1)

        # (h, w, device, dtype) -> (key codes (h*w, key_pos_dim), d2**2 (Nq, h*w) in float32; d2 the squared
        # query-to-key distance).
        # A plain dict, not buffers: these depend on the input grid and must stay out of the state_dict.
        self._grid_cache: dict[tuple[int, int, torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}
        self.register_load_state_dict_pre_hook(_convert_log_sigma)

    @property
    def native_size(self) -> tuple[int, int]:
        """The output size without ``output_size``: ``upsample_factor`` times the query grid."""
        qh, qw = self.config.query_grid
        return qh * self.config.upsample_factor, qw * self.config.upsample_factor

    def mask_sigma(self) -> Tensor:
        """Per-head Gaussian width the mask uses, ``(heads,)``, in normalized image units (always > 0)."""
        return self.sigma.abs().clamp_min(SIGMA_FLOOR)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}, config={self.config}"

    def _grid_tensors(
        self, h: int, w: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        key = (h, w, device, dtype)
        cached = self._grid_cache.get(key)
        if cached is None:
            codes = sincos_2d(h, w, self.config.key_pos_dim, device=device, dtype=dtype)
            d2 = squared_distances(self.config.query_grid, (h, w), dtype=torch.float64)
            d4 = d2.square().to(device=device, dtype=torch.float32)
            if len(self._grid_cache) >= _MAX_CACHED_GRIDS:
                self._grid_cache.pop(next(iter(self._grid_cache)))
            cached = self._grid_cache[key] = (codes, d4)
        return cached

    def _attention_inputs(self, features: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Queries ``(1, H, Nq, d)``, keys ``(B, H, Nk, d)``, values ``(B, H, Nk, dv)``, ``d2**2 (Nq, Nk)``.

        Shared by :meth:`forward` and :meth:`attention_weights` so the inspected weights are the real ones.
        """
        _check_features(features, self.in_channels)
        dtype, device = _module_dtype_device(self)
        features = features.to(device=device, dtype=dtype)
        b, h, w, _ = features.shape
        cfg = self.config
        key_codes, d4 = self._grid_tensors(h, w, device, dtype)

        tokens = self.norm(features.reshape(b, h * w, self.in_channels))
        tokens = torch.cat([tokens, key_codes.expand(b, -1, -1)], dim=-1)
        k = self.key_proj(tokens).reshape(b, h * w, cfg.heads, cfg.head_dim).transpose(1, 2)
        v = self.value_proj(tokens).reshape(b, h * w, cfg.heads, cfg.value_dim).transpose(1, 2)
        q = self.query_proj(self.query_codes.to(dtype))
        q = q.reshape(1, -1, cfg.heads, cfg.head_dim).transpose(1, 2)
        return q, k, v, d4

    def attention_weights(self, features: Tensor) -> Tensor:
        """Softmax attention ``(B, heads, Nq, Nk)`` of queries over feature tokens (inspection, tests)."""
        q, k, _, d4 = self._attention_inputs(features)
        logits = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(self.config.head_dim)
        return (logits + _gaussian_of_d4(d4, self.mask_sigma())).softmax(dim=-1)

    def _chunk_size(self, keys: int) -> int:
        """Queries per attention chunk for ``keys`` keys."""
        if self.query_chunk > 0:
            return self.query_chunk
        return max(1, self.attention_budget // max(1, self.config.heads * keys))

    def attend(self, features: Tensor) -> Tensor:
        """Attended values ``(B, heads, Nq, value_dim)``, chunk by chunk over the queries.

        When the logits exceed the budget, each chunk is checkpointed (if gradients are needed): its mask,
        logits and softmax are recomputed in the backward pass instead of stored, so peak memory follows
        the chunk, not Nq x Nk. Chunking changes only float rounding, never the math.
        """
        q, k, v, d4 = self._attention_inputs(features)
        k_t = k.transpose(-2, -1).contiguous()
        v = v.contiguous()
        sigma = self.mask_sigma()
        nq = q.shape[2]
        step = self._chunk_size(k.shape[2])
        if step >= nq:
            return _gaussian_attention(q, k_t, v, d4, sigma)
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k_t, v, sigma))
        chunks = []
        for start in range(0, nq, step):
            part = (q[:, :, start : start + step], k_t, v, d4[start : start + step], sigma)
            if grad:
                chunks.append(
                    checkpoint(_gaussian_attention, *part, use_reentrant=False, preserve_rng_state=False)
                )
            else:
                chunks.append(_gaussian_attention(*part))
        return torch.cat(chunks, dim=2)

    def _skip(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        """``skip(bilinear(x))``, resizing whichever side has fewer channels.

        A 1x1 conv and bilinear resizing commute (the resize weights sum to one), so with fewer outputs
        than ``width`` the conv runs at the query grid and only the outputs are resized: 1.3x faster
        training steps at 4 classes and 8x upsampling. Equal up to float rounding.
        """
        if self.out_channels < self.config.width:
            return F.interpolate(self.skip(x), size=size, mode="bilinear", align_corners=False)
        return self.skip(F.interpolate(x, size=size, mode="bilinear", align_corners=False))

    def forward(self, features: Tensor, output_size: tuple[int, int] | None = None) -> Tensor:
        """Dense logits ``(B, out_channels, H, W)`` from channel-last features ``(B, h, w, C)``."""
        attended = self.attend(features)
        b = attended.shape[0]
        cfg = self.config
        qh, qw = cfg.query_grid
        attended = attended.transpose(1, 2).reshape(b, qh * qw, cfg.heads * cfg.value_dim)
        x = self.post_norm(self.mlp(attended))
        x = x.transpose(1, 2).reshape(b, cfg.width, qh, qw)

        size = self.native_size
        out = self.head(self.upsample(x))
        out = out + self._skip(x, size)
        if output_size is not None and tuple(output_size) != size:
            out = F.interpolate(out, size=tuple(output_size), mode="bilinear", align_corners=False)
        return out


def _convert_log_sigma(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: object, **kwargs: object
) -> None:
    """Load checkpoints written before sigma was a plain parameter (they stored ``log_sigma``).

    The conversion is exact (sigma = exp(log_sigma)), so old checkpoints evaluate unchanged. Optimizer
    state of such runs is not converted: train.py refuses to resume them (their config lacks
    ``upsampler_width``).
    """
    old = prefix + "log_sigma"
    if old in state_dict and prefix + "sigma" not in state_dict:
        state_dict[prefix + "sigma"] = state_dict.pop(old).exp()


class LinearProbe(nn.Module):
    """Baseline: affine-free LayerNorm over C, a 1x1 conv, bilinear upsampling to the label resolution.

    Defined as "1x1 conv on bilinearly upsampled features", but computed conv-first: bilinear resizing mixes
    only spatial positions with weights summing to one, the 1x1 conv mixes only channels, so the two linear
    maps commute (bias included) and resizing ``out_channels`` logits instead of ``C`` features saves memory.
    Without ``output_size`` the output is 4x the feature grid.
    """

    def __init__(self, in_channels: int, out_channels: int, default_scale: int = 4) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1 or default_scale < 1:
            raise ValueError("in_channels, out_channels and default_scale must be >= 1")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.default_scale = default_scale
        self.norm = nn.LayerNorm(in_channels, elementwise_affine=False)
        self.classifier = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, features: Tensor, output_size: tuple[int, int] | None = None) -> Tensor:
        """Dense logits ``(B, out_channels, H, W)`` from channel-last features ``(B, h, w, C)``."""
        _check_features(features, self.in_channels)
        dtype, device = _module_dtype_device(self)
        features = features.to(device=device, dtype=dtype)
        h, w = features.shape[1:3]
        x = self.norm(features).permute(0, 3, 1, 2)
        logits = self.classifier(x)
        size = (
            tuple(output_size)
            if output_size is not None
            else (h * self.default_scale, w * self.default_scale)
        )
        if size != (h, w):
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits
