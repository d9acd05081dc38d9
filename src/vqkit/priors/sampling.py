"""Sampling from logits (..., K): temperature, top-k and top-p (nucleus) filtering, and Gumbel noise.

Sampling is Gumbel-max (argmax of logits + Gumbel noise), drawn from an explicit torch.Generator:
one vectorised op for any leading shape, reproducible for a given seed, and top-k = 1 or a
temperature of 0 is exactly argmax.
"""
from __future__ import annotations

import torch


def gumbel_noise(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard Gumbel samples -log(-log(u)), u ~ U(0, 1) kept away from 0 and 1 (no infinities).
    Drawn on the generator's device and moved to `device`, so a CPU generator works for any model."""
    where = generator.device if generator is not None else device
    u = torch.rand(shape, generator=generator, device=where, dtype=dtype).to(device)
    tiny = torch.finfo(dtype).tiny
    return -torch.log(-torch.log(u.clamp(tiny, 1.0 - torch.finfo(dtype).eps)))


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits per row (ties at the k-th value kept too), the rest -inf; k <= 0: all."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = logits.topk(k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most probable entries whose probabilities sum to >= p, the rest -inf."""
    if p >= 1.0:
        return logits
    if p <= 0:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    before = probs.cumsum(-1) - probs    # mass of the entries ranked above this one
    drop_sorted = before >= p            # already reached p without it (never drops the top entry)
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Temperature-scaled, then top-k, then top-p filtered logits (float32); temperature must be > 0."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 here, got {temperature}")
    return top_p_filter(top_k_filter(logits.float() / temperature, top_k), top_p)


def sample_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (...) drawn from softmax(filtered logits), and their log-probabilities under that same
    filtered distribution. temperature 0: argmax (log-probability of the unfiltered softmax)."""
    if temperature == 0:
        log_probs = logits.float().log_softmax(-1)
        idx = log_probs.argmax(-1)
        return idx, log_probs.gather(-1, idx[..., None])[..., 0]
    filtered = filter_logits(logits, temperature, top_k, top_p)
    idx = (filtered + gumbel_noise(filtered.shape, generator, filtered.device)).argmax(-1)
    return idx, filtered.log_softmax(-1).gather(-1, idx[..., None])[..., 0]
