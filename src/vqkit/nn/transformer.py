"""The one transformer of the package: pre-norm blocks of RMSNorm, multi-head self-attention
(scaled_dot_product_attention; optional rotary positions, causal masking and a KV cache) and a
SwiGLU MLP, then a final RMSNorm.

The token priors run it with rotary positions (causal or bidirectional, a KV cache at sampling), the
ViT backbone without them (its sine-cosine positions are added to the input), and the decoder's
window attention uses the attention alone.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def swiglu_hidden(dim: int) -> int:
    """About 8/3 * dim (the parameters of a 4 * dim GELU MLP), rounded up to a multiple of 8."""
    return 8 * math.ceil(dim / 3)


def rms_norm(dim: int) -> nn.RMSNorm:
    return nn.RMSNorm(dim, eps=1e-6)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)) on (..., dim)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)   # one matmul for gate and value
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Rotary(nn.Module):
    """Rotary position embedding tables for positions [0, max_len), rotate-half layout."""

    def __init__(self, head_dim: int, max_len: int, base: float):
        super().__init__()
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        angles = torch.arange(max_len, dtype=torch.float64)[:, None] * inv_freq[None]
        angles = torch.cat([angles, angles], dim=-1)
        # Not saved in checkpoints: a pure function of the config.
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)
        self.max_len = max_len

    def forward(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """x: (B, H, L, head_dim) at positions start .. start + L - 1."""
        end = start + x.shape[-2]
        if end > self.max_len:
            raise ValueError(f"position {end - 1} is beyond the model's max_len {self.max_len}")
        cos = self.cos[start:end].to(x.dtype)
        sin = self.sin[start:end].to(x.dtype)
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class KVCache:
    """Keys and values of one layer for positions [0, length), preallocated to max_len."""

    def __init__(self, batch: int, heads: int, max_len: int, head_dim: int, device: torch.device,
                 dtype: torch.dtype):
        self.k = torch.empty(batch, heads, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.empty_like(self.k)
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.shape[-2]
        self.k[:, :, self.length:end] = k
        self.v[:, :, self.length:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


class Attention(nn.Module):
    """Multi-head self-attention on (B, L, dim). dropout: on the attention weights, in training."""

    def __init__(self, dim: int, heads: int, bias: bool = False, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"{heads} attention heads do not divide width {dim}")
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.out = nn.Linear(dim, dim, bias=bias)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, rotary: Rotary | None = None, causal: bool = False,
                cache: KVCache | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """cache: keys and values of the earlier positions, extended by these. mask (uncached calls):
        True where a query may attend to a key, broadcast to (B, heads, L, L)."""
        b, length, dim = x.shape
        start = cache.length if cache is not None else 0
        # (B, L, 3, H, hd) -> three contiguous (B, H, L, hd): SDPA's fast CPU kernels want unit stride.
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).contiguous()
        if rotary is not None:
            q, k = rotary(q, start), rotary(k, start)
        is_causal = causal
        if cache is not None:
            k, v = cache.append(k, v)
            if start > 0:
                is_causal = False   # SDPA's is_causal aligns to the top-left corner, not the cached end
                if causal and length > 1:   # several new queries: each sees the cache and its own past
                    mask = torch.ones(length, start + length, dtype=torch.bool, device=x.device).tril(start)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=is_causal and length > 1)
        return self.out(y.transpose(1, 2).reshape(b, length, dim))


class Block(nn.Module):
    """x + Attn(RMSNorm(x)), then x + SwiGLU(RMSNorm(x)); `dropout` on both branches."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int, dropout: float = 0.0, attn_dropout: float = 0.0,
                 bias: bool = False):
        super().__init__()
        self.attn_norm = rms_norm(dim)
        self.attn = Attention(dim, heads, bias, attn_dropout)
        self.mlp_norm = rms_norm(dim)
        self.mlp = SwiGLU(dim, mlp_hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, rotary: Rotary | None = None, causal: bool = False,
                cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x), rotary, causal, cache))
        return x + self.dropout(self.mlp(self.mlp_norm(x)))


class Transformer(nn.Module):
    """`depth` blocks and a final RMSNorm: (B, L, dim) -> (B, L, dim).

    mlp_hidden: SwiGLU width (default swiglu_hidden(dim)). bias: biased attention projections.
    rotary_len > 0: rotary positions [0, rotary_len) in every attention; 0: none (positions come
    with the input). Weights keep PyTorch's default initialisation (the priors re-initialise them).
    """

    def __init__(self, dim: int, depth: int, heads: int, mlp_hidden: int | None = None, dropout: float = 0.0,
                 attn_dropout: float = 0.0, bias: bool = False, rotary_len: int = 0, rope_base: float = 10000.0):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.rotary = Rotary(dim // heads, rotary_len, rope_base) if rotary_len > 0 else None
        hidden = mlp_hidden or swiglu_hidden(dim)
        self.blocks = nn.ModuleList(Block(dim, heads, hidden, dropout, attn_dropout, bias) for _ in range(depth))
        self.norm = rms_norm(dim)

    def new_caches(self, batch: int, max_len: int, device: torch.device, dtype: torch.dtype) -> list[KVCache]:
        """One empty KV cache per block, for up to max_len positions."""
        return [KVCache(batch, self.heads, max_len, self.head_dim, device, dtype) for _ in self.blocks]

    def forward(self, x: torch.Tensor, causal: bool = False, caches: list[KVCache] | None = None) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x, self.rotary, causal, caches[i] if caches is not None else None)
        return self.norm(x)
