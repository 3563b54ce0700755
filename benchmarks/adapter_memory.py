"""MAXA adapter memory and speed: the paper's attention pattern vs maxa's old and new attention, one run.

Peak memory per sample of one forward+backward of the whole adapter (attention, MLP, upsampler, loss) at
a 37x37 key grid (DINOv2 ViT-B/14 at 518 px) and a 56x56 query grid, and training samples/s:

- `paper`: an independent re-implementation of the paper code's pattern (constantinpape/deap,
  `CrossAttLayer3.forward`): one Gaussian mask per head, then one scaled_dot_product_attention per head.
- `old`: maxa before chunking: the whole (heads, Nq, Nk) mask built with autograd, one attention call
  over all heads (kept here only as a reference).
- `maxa`: the adapter as shipped (query chunks, each checkpointed, matmul + softmax inside).
- candidates not shipped, same math: `heads` (loop over heads, each checkpointed whole) and `sdpa`
  (maxa's query chunks with scaled_dot_product_attention and the float mask inside).

Goal: `maxa` peak per sample <= 0.5x `paper`. On CPU peak memory is the high-water mark of live tensor
bytes from torch.profiler's allocation events; on CUDA torch.cuda.max_memory_allocated. Per sample =
peak above what was allocated before the step, divided by the batch size. Speed: every variant is timed
once per round, rounds interleaved, best round kept (the machine may be shared).

    python benchmarks/adapter_memory.py                      # ~1 min on 2 CPU cores
    python benchmarks/adapter_memory.py --device cuda --batch-size 32 --steps 20
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.profiler import ProfilerActivity, profile
from torch.utils.checkpoint import checkpoint

from maxa.probe.maxa import MaxaAdapter, MaxaConfig, gaussian_bias
from maxa.probe.positional import squared_distances

Attention = Callable[[MaxaAdapter, Tensor], Tensor]


def paper_attention(adapter: MaxaAdapter, features: Tensor) -> Tensor:
    """The paper code's pattern: masks for every head first, then attention head by head, concatenated."""
    q, k, v, _ = adapter._attention_inputs(features)
    b = k.shape[0]
    d2 = squared_distances(adapter.config.query_grid, tuple(features.shape[1:3]), device=features.device)
    norm = math.sqrt(2.0 * math.pi)
    masks = [torch.exp(-0.5 * (d2 / s) ** 2) / (s * norm) for s in adapter.sigma]
    heads = [
        F.scaled_dot_product_attention(q[:, i].expand(b, -1, -1), k[:, i], v[:, i], attn_mask=masks[i])
        for i in range(adapter.config.heads)
    ]
    return torch.stack(heads, dim=1)


def old_attention(adapter: MaxaAdapter, features: Tensor) -> Tensor:
    """maxa before chunking: one (heads, Nq, Nk) mask with autograd, one attention call for all heads."""
    q, k, v, _ = adapter._attention_inputs(features)
    d2 = squared_distances(adapter.config.query_grid, tuple(features.shape[1:3]), device=features.device)
    sigma = adapter.mask_sigma().reshape(-1, 1, 1)  # the old code's formula, term by term
    bias = torch.exp(-0.5 * (d2.unsqueeze(0) / sigma) ** 2) / (sigma * math.sqrt(2.0 * math.pi))
    return F.scaled_dot_product_attention(q.expand(k.shape[0], -1, -1, -1), k, v, attn_mask=bias)


def maxa_attention(adapter: MaxaAdapter, features: Tensor) -> Tensor:
    return adapter.attend(features)


def heads_attention(adapter: MaxaAdapter, features: Tensor) -> Tensor:
    """Candidate: loop over heads, each head's mask + attention checkpointed as a whole."""
    q, k, v, _ = adapter._attention_inputs(features)
    d2 = squared_distances(adapter.config.query_grid, tuple(features.shape[1:3]), device=features.device)
    sigma = adapter.mask_sigma()

    def head(qi: Tensor, ki: Tensor, vi: Tensor, si: Tensor) -> Tensor:
        bias = gaussian_bias(d2, si)[0]
        return F.scaled_dot_product_attention(qi.expand(ki.shape[0], -1, -1), ki, vi, attn_mask=bias)

    parts = [
        checkpoint(head, q[:, i], k[:, i], v[:, i], sigma[i : i + 1], use_reentrant=False)
        for i in range(adapter.config.heads)
    ]
    return torch.stack(parts, dim=1)


def sdpa_attention(adapter: MaxaAdapter, features: Tensor) -> Tensor:
    """Candidate: maxa's query chunks, scaled_dot_product_attention with the float mask in each chunk."""
    q, k, v, _ = adapter._attention_inputs(features)
    d2 = squared_distances(adapter.config.query_grid, tuple(features.shape[1:3]), device=features.device)
    sigma = adapter.mask_sigma()

    def chunk(qc: Tensor, dc: Tensor, s: Tensor) -> Tensor:
        bias = gaussian_bias(dc, s)
        return F.scaled_dot_product_attention(qc.expand(k.shape[0], -1, -1, -1), k, v, attn_mask=bias)

    step = adapter._chunk_size(k.shape[2])
    parts = [
        checkpoint(chunk, q[:, :, i : i + step], d2[i : i + step], sigma, use_reentrant=False)
        for i in range(0, q.shape[2], step)
    ]
    return torch.cat(parts, dim=2)


VARIANTS: dict[str, Attention] = {
    "paper": paper_attention,
    "old": old_attention,
    "maxa": maxa_attention,
    "heads": heads_attention,
    "sdpa": sdpa_attention,
}


def decode(adapter: MaxaAdapter, attended: Tensor) -> Tensor:
    """The adapter's layers after attention (identical for every variant)."""
    cfg = adapter.config
    b = attended.shape[0]
    qh, qw = cfg.query_grid
    x = attended.transpose(1, 2).reshape(b, qh * qw, cfg.heads * cfg.value_dim)
    x = adapter.post_norm(adapter.mlp(x)).transpose(1, 2).reshape(b, cfg.width, qh, qw)
    size = (qh * cfg.upsample_factor, qw * cfg.upsample_factor)
    out = adapter.head(adapter.upsample(x))
    return out + adapter.skip(F.interpolate(x, size=size, mode="bilinear", align_corners=False))


def step(adapter: MaxaAdapter, attention: Attention, features: Tensor, target: Tensor) -> None:
    loss = F.cross_entropy(decode(adapter, attention(adapter, features)), target)
    loss.backward()
    adapter.zero_grad(set_to_none=True)


def cpu_peak_bytes(fn: Callable[[], None]) -> int:
    """High-water mark of live CPU tensor bytes allocated inside ``fn`` (from profiler memory events)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def peak_bytes(fn: Callable[[], None], device: torch.device) -> int:
    if device.type != "cuda":
        return cpu_peak_bytes(fn)
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


def seconds(fn: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="timed steps per variant (interleaved)")
    parser.add_argument("--grid", type=int, default=37, help="key (feature) grid side")
    parser.add_argument("--query-grid", type=int, default=56)
    parser.add_argument("--channels", type=int, default=768)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = MaxaConfig(query_grid=(args.query_grid, args.query_grid))
    adapter = MaxaAdapter(args.channels, args.classes, config).to(device)
    b = args.batch_size
    features = torch.randn(b, args.grid, args.grid, args.channels, device=device)
    out_side = args.query_grid * config.upsample_factor
    target = torch.randint(0, args.classes, (b, out_side, out_side), device=device)

    # Same math first: every variant gives the same outputs and sigma gradient as the paper's pattern.
    reference = None
    for attention in VARIANTS.values():
        out = decode(adapter, attention(adapter, features))
        (grad,) = torch.autograd.grad(F.cross_entropy(out, target), adapter.sigma)
        if reference is None:
            reference = (out.detach(), grad)
        else:
            torch.testing.assert_close(out.detach(), reference[0], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(grad, reference[1], rtol=1e-3, atol=1e-6)

    print(
        f"MAXA fwd+bwd, keys {args.grid}x{args.grid}, queries {args.query_grid}x{args.query_grid}, "
        f"C={args.channels}, K={args.classes}, batch {b}, {device}, {torch.get_num_threads()} threads"
    )
    runs = {
        name: (lambda attention=attention: step(adapter, attention, features, target))
        for name, attention in VARIANTS.items()
    }
    memory = {name: peak_bytes(run, device) / b / 2**20 for name, run in runs.items()}
    best = dict.fromkeys(runs, math.inf)
    for _ in range(args.rounds):
        for name, run in runs.items():
            best[name] = min(best[name], seconds(run, device))
    rate = {name: b / t for name, t in best.items()}
    for name in runs:
        print(
            f"  {name:8s} peak {memory[name]:8.1f} MiB/sample ({memory[name] / memory['paper']:.2f}x paper)  "
            f"{rate[name]:7.2f} samples/s ({rate[name] / rate['paper']:.2f}x paper)"
        )
    ratio = memory["maxa"] / memory["paper"]
    verdict = "ok" if ratio <= 0.5 else "MISSED"
    print(f"maxa / paper peak memory per sample: {ratio:.2f} (goal <= 0.5): {verdict}")
    print(
        f"maxa / old: memory {memory['maxa'] / memory['old']:.2f}x, speed {rate['maxa'] / rate['old']:.2f}x"
    )


if __name__ == "__main__":
    main()
