"""The transformer both token priors share: pre-norm blocks of RMSNorm, rotary self-attention
(scaled_dot_product_attention, causal or bidirectional, with an optional KV cache) and a SwiGLU MLP.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config.prior_schema import PriorModelConfig


def swiglu_hidden(dim: int) -> int:
    """About 8/3 * dim (the same parameters as a 4 * dim GELU MLP), rounded up to a multiple of 64
    from dim 256 on (matmul-friendly sizes) and of 8 below (tiny models stay tiny)."""
    multiple = 64 if dim >= 256 else 8
    return multiple * math.ceil(8 * dim / 3 / multiple)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)   # one matmul for gate and value
        self.down = nn.Linear(hidden, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.dropout(self.down(F.silu(gate) * up))


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
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, rotary: Rotary, causal: bool, cache: KVCache | None = None) -> torch.Tensor:
        b, length, dim = x.shape
        start = cache.length if cache is not None else 0
        # (B, L, 3, H, hd) -> three contiguous (B, H, L, hd): SDPA's fast CPU kernels want unit stride.
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).contiguous()
        q, k = rotary(q, start), rotary(k, start)
        mask, is_causal = None, causal
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
    def __init__(self, dim: int, heads: int, mlp_hidden: int, dropout: float):
        super().__init__()
        self.attn_norm = RMSNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.mlp_norm = RMSNorm(dim)
        self.mlp = SwiGLU(dim, mlp_hidden, dropout)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, rotary: Rotary, causal: bool, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.resid_dropout(self.attn(self.attn_norm(x), rotary, causal, cache))
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    """Blocks + final norm over already embedded inputs (B, L, dim) -> hidden states (B, L, dim)."""

    def __init__(self, cfg: PriorModelConfig, max_len: int):
        super().__init__()
        self.cfg = cfg
        self.max_len = max_len
        hidden = cfg.mlp_hidden or swiglu_hidden(cfg.dim)
        self.rotary = Rotary(cfg.dim // cfg.heads, max_len, cfg.rope_base)
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, hidden, cfg.dropout) for _ in range(cfg.depth))
        self.norm = RMSNorm(cfg.dim)
        self.apply(init_weights)
        # GPT-2 style: residual branches start small, so the stack starts close to the identity.
        for block in self.blocks:
            for proj in (block.attn.out, block.mlp.down):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * cfg.depth))

    def new_caches(self, batch: int, device: torch.device, dtype: torch.dtype) -> list[KVCache]:
        heads, hd = self.cfg.heads, self.cfg.dim // self.cfg.heads
        return [KVCache(batch, heads, self.max_len, hd, device, dtype) for _ in self.blocks]

    def forward(self, x: torch.Tensor, causal: bool, caches: list[KVCache] | None = None) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x, self.rotary, causal, caches[i] if caches is not None else None)
        return self.norm(x)


def init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)


# ---- token inputs and outputs shared by both priors ------------------------------------------------

class ChannelEmbedding(nn.Module):
    """The c indices of one position -> ONE input vector: the sum of c per-channel embeddings.

    Why per-channel tables rather than one shared table: in MoVQ the c indices at a position come
    from one shared codebook but quantise different chunks of the latent, so code 7 in channel 0 and
    code 7 in channel 1 mean different things. Why a sum rather than c tokens per position: the
    sequence stays L long (attention cost L^2, not (cL)^2) and a KV-cache step stays one position.
    The c tables live in one nn.Embedding at offsets channel * vocab: one gather for all channels.
    """

    def __init__(self, channels: int, vocab: int, dim: int):
        super().__init__()
        self.channels, self.vocab = channels, vocab
        self.table = nn.Embedding(channels * vocab, dim)
        self.register_buffer("offsets", torch.arange(channels) * vocab, persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.table(tokens + self.offsets).sum(-2)


class PrefixToken(nn.Module):
    """The first input position: a learned start vector, or with num_classes > 0 the label's
    embedding. Label `num_classes` is the null class (unconditional; for classifier-free guidance
    a trainer can drop labels to it); labels=None means the null class."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1 if num_classes > 0 else 1, dim)

    def forward(self, labels: torch.Tensor | None, batch: int) -> torch.Tensor:
        """(B, 1, dim)."""
        device = self.table.weight.device
        if labels is None or labels.numel() == 0:
            idx = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        elif self.num_classes == 0:
            raise ValueError("labels given to an unconditional prior (num_classes = 0)")
        else:
            idx = labels.to(device=device, dtype=torch.long).reshape(-1)
            if idx.shape[0] != batch:
                raise ValueError(f"{idx.shape[0]} labels for a batch of {batch}")
            if int(idx.min()) < 0 or int(idx.max()) > self.num_classes:
                raise ValueError(f"labels must be in [0, {self.num_classes}] ({self.num_classes} = null class)")
        return self.table(idx)[:, None]


class TokenTransformer(nn.Module):
    """What both priors are built from: per-channel token embeddings (with `extra_ids` ids after the
    codebook, e.g. MaskGIT's mask id), the prefix token, a transformer over `positions` positions,
    and one head of c x K logits per position."""

    def __init__(self, cfg: PriorModelConfig, codebook_size: int, channels: int, max_len: int,
                 extra_ids: int, positions: int):
        super().__init__()
        cfg.validate()
        if codebook_size < 2 or channels < 1 or max_len < 1:
            raise ValueError(f"need codebook_size >= 2, channels >= 1, max_len >= 1; got {codebook_size}, "
                             f"{channels}, {max_len}")
        self.cfg = cfg
        self.codebook_size, self.channels, self.max_len = codebook_size, channels, max_len
        self.embed = ChannelEmbedding(channels, codebook_size + extra_ids, cfg.dim)
        self.prefix = PrefixToken(cfg.num_classes, cfg.dim)
        self.input_dropout = nn.Dropout(cfg.dropout)
        self.transformer = Transformer(cfg, positions)
        self.head = nn.Linear(cfg.dim, channels * codebook_size)
        for module in (self.embed, self.prefix, self.head):
            module.apply(init_weights)
        self.forward_passes = 0

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., dim) -> (..., c, K)."""
        return self.head(hidden).unflatten(-1, (self.channels, self.codebook_size))


def check_tokens(tokens: torch.Tensor, channels: int, vocab: int, max_len: int) -> torch.Tensor:
    """(B, L, c) integer tokens in [0, vocab) with L <= max_len, as int64. Out-of-range indices
    must not pass: with offset tables they would silently read another channel's embedding."""
    if tokens.dim() != 3 or tokens.shape[-1] != channels:
        raise ValueError(f"expected tokens (B, L, c={channels}), got {tuple(tokens.shape)}")
    if tokens.shape[1] > max_len:
        raise ValueError(f"sequence of {tokens.shape[1]} positions is longer than max_len {max_len}")
    if tokens.is_floating_point() or tokens.is_complex():
        raise ValueError(f"tokens must be integers, got {tokens.dtype}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab):
        raise ValueError(f"token ids must be in [0, {vocab})")
    return tokens.long()
