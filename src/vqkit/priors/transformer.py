"""What both token priors are built from around the shared transformer (nn/transformer.py): per-channel
token embeddings, the prefix token, GPT-2 style initialisation and a head of c x K logits per position.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..config.prior_schema import PriorModelConfig
from ..nn.transformer import Transformer


def init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)


def gpt2_init(transformer: Transformer) -> None:
    """N(0, 0.02) weights; the residual branches' output projections smaller still, so the stack
    starts close to the identity."""
    transformer.apply(init_weights)
    for block in transformer.blocks:
        for proj in (block.attn.out, block.mlp.down):
            nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * len(transformer.blocks)))


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
        self.transformer = Transformer(cfg.dim, cfg.depth, cfg.heads, cfg.mlp_hidden, cfg.dropout,
                                       attn_dropout=cfg.dropout, rotary_len=positions, rope_base=cfg.rope_base)
        gpt2_init(self.transformer)
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
