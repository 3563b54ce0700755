"""MAXA against the paper's code (constantinpape/deap): sigma's parameterization and the chunked attention.

Each reference here is written in the test from the paper code's definitions, not taken from maxa:
sigma is a plain parameter (``CrossAttLayer3.__init__``: ``nn.Parameter`` filled with 0.05) in
``gaussian(d, sigma) = exp(-0.5 (d / sigma)^2) / (sigma sqrt(2 pi))`` of the squared distance ``d``,
optimized by AdamW with weight decay over all parameters (deap ``train.py``), and attention runs one
``scaled_dot_product_attention`` per head with that head's mask (``CrossAttLayer3.forward``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.profiler import ProfilerActivity, profile

from maxa.core.errors import MaxaError
from maxa.probe.adapters import build_adapter
from maxa.probe.config import ProbeConfig
from maxa.probe.maxa import MaxaAdapter, MaxaConfig, gaussian_bias
from maxa.probe.positional import squared_distances

LR, WD, BETAS, EPS = 1e-3, 0.01, (0.9, 0.999), 1e-8


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _paper_gaussian(d: Tensor, sigma: Tensor) -> Tensor:
    return torch.exp(-0.5 * (d / sigma) ** 2) / (sigma * torch.sqrt(torch.tensor(2.0 * torch.pi)))


def _paper_attention(adapter: MaxaAdapter, features: Tensor, sigma: Tensor) -> Tensor:
    """Head by head, each with its own Gaussian mask of the plain parameter ``sigma`` (B, H, Nq, dv)."""
    q, k, v, _ = adapter._attention_inputs(features)
    d = squared_distances(adapter.config.query_grid, tuple(features.shape[1:3]))
    heads = []
    for i in range(adapter.config.heads):
        logits = q[:, i] @ k[:, i].transpose(-2, -1) / math.sqrt(q.shape[-1]) + _paper_gaussian(d, sigma[i])
        heads.append(logits.softmax(-1) @ v[:, i])
    return torch.stack(heads, dim=1)


def _adamw_first_step(param: Tensor, grad: Tensor) -> Tensor:
    """AdamW's first step written out (Loshchilov & Hutter): decoupled decay, then the bias-corrected step."""
    m = (1 - BETAS[0]) * grad / (1 - BETAS[0])
    v = (1 - BETAS[1]) * grad**2 / (1 - BETAS[1])
    return param * (1 - LR * WD) - LR * m / (v.sqrt() + EPS)


def _small_adapter(**config: object) -> MaxaAdapter:
    return MaxaAdapter(24, 3, MaxaConfig(query_grid=(9, 7), **config))


# ---------------------------------------------------------------- sigma


def test_sigma_is_the_paper_parameter_and_adamw_moves_it_as_the_paper_does() -> None:
    adapter = _small_adapter()
    assert torch.equal(adapter.sigma.detach(), torch.full((8,), 0.05))
    feats = torch.randn(2, 6, 5, 24)
    weights = torch.randn(2, 8, 63, 4)  # a fixed readout, so the loss depends on the attention only

    paper_sigma = torch.full((8,), 0.05, requires_grad=True)
    (_paper_attention(adapter, feats, paper_sigma) * weights).sum().backward()
    (adapter.attend(feats) * weights).sum().backward()
    assert adapter.sigma.grad is not None and paper_sigma.grad is not None
    assert adapter.sigma.grad.abs().min() > 0
    torch.testing.assert_close(adapter.sigma.grad, paper_sigma.grad, rtol=1e-4, atol=1e-7)

    expected = _adamw_first_step(paper_sigma.detach(), paper_sigma.grad)
    torch.optim.AdamW([adapter.sigma], lr=LR, betas=BETAS, eps=EPS, weight_decay=WD).step()
    torch.testing.assert_close(adapter.sigma.detach(), expected, rtol=1e-6, atol=1e-9)
    # One step moves sigma by ~lr itself (2% of 0.05), not by lr in log space (~36x less in sigma).
    moved = (adapter.sigma.detach() - 0.05).abs()
    assert torch.all(moved > 0.5 * LR)


def test_gaussian_bias_is_the_paper_density() -> None:
    d = squared_distances((6, 9), (5, 11))
    sigma = torch.tensor([0.02, 0.05, 0.3, 1.5])
    bias = gaussian_bias(d, sigma)
    assert bias.shape == (4, 54, 55)
    for head, s in enumerate(sigma):
        torch.testing.assert_close(bias[head], _paper_gaussian(d, s))


def test_weight_decay_pulls_sigma_towards_zero() -> None:
    adapter = _small_adapter()
    with torch.no_grad():
        adapter.sigma.copy_(torch.linspace(0.02, 0.9, 8))
    before = adapter.sigma.detach().clone()
    adapter.sigma.grad = torch.zeros(8)
    optimizer = torch.optim.AdamW([adapter.sigma], lr=0.1, weight_decay=0.5)
    for _ in range(3):
        optimizer.step()
    after = adapter.sigma.detach()
    assert torch.all(after < before)
    torch.testing.assert_close(after, before * (1 - 0.1 * 0.5) ** 3)


def test_mask_stays_a_positive_gaussian_if_sigma_crosses_zero() -> None:
    adapter = _small_adapter().eval()
    feats = torch.randn(1, 6, 5, 24)
    positive = adapter.attention_weights(feats)
    with torch.no_grad():
        adapter.sigma.neg_()
    torch.testing.assert_close(adapter.attention_weights(feats), positive)
    with torch.no_grad():
        adapter.sigma.zero_()
    assert torch.all(adapter.mask_sigma() > 0)
    assert torch.isfinite(adapter(feats)).all()


def test_checkpoint_with_log_sigma_loads_to_the_same_outputs(tmp_path: Path) -> None:
    adapter = _small_adapter().eval()
    with torch.no_grad():
        adapter.sigma.copy_(torch.linspace(0.03, 0.2, 8))
    feats = torch.randn(2, 6, 5, 24)
    expected = adapter(feats)
    old = {k: v for k, v in adapter.state_dict().items() if k != "sigma"}
    old["log_sigma"] = adapter.sigma.detach().log()
    torch.save(old, tmp_path / "old.pt")

    restored = _small_adapter().eval()
    restored.load_state_dict(torch.load(tmp_path / "old.pt", weights_only=True))
    torch.testing.assert_close(restored.sigma.detach(), adapter.sigma.detach())
    torch.testing.assert_close(restored(feats), expected)


# ---------------------------------------------------------------- chunked attention


def _grads(adapter: MaxaAdapter) -> dict[str, Tensor]:
    grads = {name: p.grad.clone() for name, p in adapter.named_parameters() if p.grad is not None}
    adapter.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("chunk", [1, 4, 62])
def test_chunked_attention_equals_unchunked_outputs_and_gradients(chunk: int) -> None:
    """Forced small chunks (uneven last chunk included) against one unchunked call and the paper's loop."""
    adapter = _small_adapter()
    with torch.no_grad():
        adapter.sigma.copy_(torch.linspace(0.03, 0.3, 8))
    feats = torch.randn(2, 6, 5, 24)
    target = torch.randint(0, 3, (2, 72, 56))

    adapter.attention_budget = 10**9  # one call, no checkpointing
    F.cross_entropy(adapter(feats), target).backward()
    unchunked = _grads(adapter)
    with torch.no_grad():
        expected = adapter(feats)

    adapter.query_chunk = chunk
    out = adapter(feats)
    F.cross_entropy(out, target).backward()
    chunked = _grads(adapter)
    torch.testing.assert_close(out.detach(), expected, rtol=1e-5, atol=1e-6)
    assert set(chunked) == {name for name, _ in adapter.named_parameters()}
    assert chunked.keys() == unchunked.keys()
    for name, grad in chunked.items():
        torch.testing.assert_close(grad, unchunked[name], rtol=1e-4, atol=1e-6, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(adapter(feats), expected, rtol=1e-5, atol=1e-6)

    # Same values and sigma gradient as the paper's head-by-head pattern.
    weights = torch.randn(2, 8, 63, 4)
    paper_sigma = adapter.sigma.detach().clone().requires_grad_(True)
    paper = _paper_attention(adapter, feats, paper_sigma)
    (paper * weights).sum().backward()
    attended = adapter.attend(feats)
    (attended * weights).sum().backward()
    torch.testing.assert_close(attended.detach(), paper.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(adapter.sigma.grad, paper_sigma.grad, rtol=1e-4, atol=1e-7)


def test_budget_sets_the_chunk_size() -> None:
    adapter = _small_adapter()
    adapter.attention_budget = 8 * 30 * 10  # per sample: 8 heads, 30 keys -> 10 queries per chunk
    assert adapter._chunk_size(30) == 10
    adapter.attention_budget = 1
    assert adapter._chunk_size(30) == 1
    adapter.query_chunk = 7
    assert adapter._chunk_size(30) == 7


# ---------------------------------------------------------------- upsampler width (dim_interm)


def test_upsampler_width_option_reaches_the_adapter() -> None:
    wide = build_adapter("maxa", 768, 172, ProbeConfig(upsampler_width=32).adapter_options())
    default = build_adapter("maxa", 768, 172, ProbeConfig().adapter_options())
    legacy = build_adapter("maxa", 768, 172, {"query_grid": 28, "width": 16, "heads": 8})  # old checkpoints
    assert isinstance(wide, MaxaAdapter) and isinstance(default, MaxaAdapter)
    assert isinstance(legacy, MaxaAdapter)
    assert {m.out_channels for m in wide.upsample if isinstance(m, torch.nn.Conv2d)} == {32}
    assert {m.out_channels for m in default.upsample if isinstance(m, torch.nn.Conv2d)} == {86}
    assert legacy.config.upsampler_width is None
    with pytest.raises(MaxaError, match="upsampler-width"):
        ProbeConfig(upsampler_width=-1)
    with pytest.raises(ValueError, match="upsampler_width"):
        MaxaConfig(upsampler_width=-2)
    assert MaxaConfig(upsampler_width=0).upsampler_width is None


def _peak_bytes(fn: Callable[[], None]) -> int:
    """High-water mark of live CPU tensor bytes allocated inside ``fn`` (profiler allocation events)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def test_chunked_attention_bounds_training_memory() -> None:
    """Forward+backward of the attention: memory follows the chunk, not queries x keys.

    Unchunked, the step holds several (B, H, Nq, Nk) float32 tensors (16 MiB each here); with 32-query
    chunks it holds one chunk's worth plus the (Nq, Nk) distance table and tensors of size Nq or Nk.
    """
    adapter = MaxaAdapter(32, 2, MaxaConfig(query_grid=(32, 32)))
    feats = torch.randn(2, 16, 16, 32)
    adapter.attend(feats)  # fill the grid cache outside the measurement

    def step() -> None:
        adapter.attend(feats).square().sum().backward()
        adapter.zero_grad(set_to_none=True)

    adapter.attention_budget = 10**9
    unchunked = _peak_bytes(step)
    adapter.attention_budget = 8 * 256 * 32  # per sample: 8 heads x 256 keys x 32 queries
    chunked = _peak_bytes(step)
    logits = 2 * 8 * 1024 * 256 * 4
    assert unchunked > 2 * logits
    assert chunked < 0.25 * logits
