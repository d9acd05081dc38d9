"""Codebook vector quantisation with the options of ViT-VQGAN, SeQ-GAN and MoVQ (the layout, lookup,
losses, gradient estimator and usage statistics they share with SimVQ are in codebook.py).

- factorised codes (ViT-VQGAN): each latent is projected to `codebook_dim` by a learned linear map
  (a 1x1 conv), looked up there and projected back;
- l2_norm: latents and codes are l2-normalised before the lookup (cosine similarity);
- entropy regulariser (SeQ-GAN): loss -= gamma * H(mean_i softmax(-d_i / T)), which spreads the
  batch's soft usage over the codebook;
- multichannel (MoVQ): a latent vector of width c * dim is split into c chunks, each quantised with
  the same single codebook, so a position holds c indices;
- dead-code restart (codebook.py): codes whose EMA assignment count falls below a threshold are
  re-seeded from latents of the current batch.

Under multi-process training the entropy term's soft usage is summed over processes.

The entropy term's softmax is computed `distance_chunk` latents at a time (see `_soft_usage`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import VQConfig
from ..distributed import all_reduce_sum_, differentiable_sum
from .codebook import CodebookQuantizer
from .estimators import soft_assignment


def _chunk_soft_usage(h: torch.Tensor, e: torch.Tensor, e_sq: torch.Tensor, w: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """sum_i w_i softmax(-||h_i - e_k||^2 / T) over one chunk -> (K,)."""
    return (soft_assignment(h, e, e_sq, temperature) * w[:, None]).sum(0)


class VectorQuantizer(CodebookQuantizer):
    """forward(z (B, channels*dim, *spatial), mask (B, *spatial) | None) -> QuantizerOutput with
    indices (B, *spatial) for channels == 1, else (B, *spatial, channels)."""

    label = "VQ"
    always_tracks_usage = True

    def __init__(self, cfg: VQConfig):
        super().__init__(cfg)
        self.code_dim = cfg.codebook_dim or cfg.dim
        if cfg.codebook_dim is not None:
            self.in_proj = nn.Linear(cfg.dim, cfg.codebook_dim)
            self.out_proj = nn.Linear(cfg.codebook_dim, cfg.dim)
        else:
            self.in_proj = self.out_proj = None
        # taming's init; with l2_norm only the direction matters
        self.codebook = nn.Parameter(torch.empty(cfg.codebook_size, self.code_dim)
                                     .uniform_(-1 / cfg.codebook_size, 1 / cfg.codebook_size))

    def extra_repr(self) -> str:
        c = self.cfg
        return (f"codebook_size={c.codebook_size}, dim={c.dim}, channels={c.channels}, "
                f"codebook_dim={c.codebook_dim}, l2_norm={c.l2_norm}, entropy_weight={c.entropy_weight}, "
                f"gradient={c.gradient}")

    # ---- helpers ----------------------------------------------------------------------------
    def _codes(self) -> torch.Tensor:
        """The codebook as used for lookup. A clone, so that a dead-code restart (which writes the
        parameter in place after forward) cannot alter tensors that autograd saved for backward."""
        e = self.codebook.float().clone()
        return F.normalize(e, dim=-1) if self.cfg.l2_norm else e

    def _to_code_space(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_proj is not None:
            x = self.in_proj(x)
        return F.normalize(x, dim=-1) if self.cfg.l2_norm else x

    def _from_code_space(self, q: torch.Tensor) -> torch.Tensor:
        return self.out_proj(q) if self.out_proj is not None else q

    def _soft_usage(self, h: torch.Tensor, e: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Weighted mean over latents of softmax(-d / T), differentiable in h and e.

        Memory bound: every chunk runs under activation checkpointing, so between forward and
        backward only the chunk's inputs (views of h, e and w) and its (K,) partial sum are kept;
        the (chunk, K) softmax is rebuilt one chunk at a time during backward. Peak extra memory is
        therefore O(distance_chunk * K) (a few such buffers transiently) instead of O(N * K)."""
        e_sq = (e * e).sum(-1)
        total = h.new_zeros(e.shape[0])
        step = self.cfg.distance_chunk
        for s in range(0, h.shape[0], step):
            total = total + checkpoint(_chunk_soft_usage, h[s:s + step], e, e_sq, w[s:s + step],
                                       self.cfg.entropy_temperature, use_reentrant=False)
        # the global batch's usage: with DDP, one process's half-batch would give another entropy
        return differentiable_sum(total) / all_reduce_sum_(w.sum().detach()).clamp(min=1)

    def _seed_codes(self, ids: torch.Tensor, vectors: torch.Tensor) -> None:
        # vectors live in code space (projected, normalised), so they are valid codes as they are
        self.codebook.data[ids] = vectors.to(self.codebook.dtype)

    def _codebook_trains(self) -> bool:
        return self.codebook.requires_grad

    def _regularise(self, loss: torch.Tensor, h: torch.Tensor, e: torch.Tensor, idx: torch.Tensor,
                    keep: torch.Tensor, stats: dict[str, torch.Tensor]) -> torch.Tensor:
        cfg = self.cfg
        if cfg.entropy_weight > 0 and self.training:
            p_mean = self._soft_usage(h, e, keep.float())
            entropy = -(p_mean * torch.log(p_mean.clamp(min=1e-12))).sum()
            loss = loss - cfg.entropy_weight * entropy
            stats["soft_entropy"] = entropy.detach()
        return loss
