"""Lookup-free quantisation (MAGVIT-v2) and binary spherical quantisation (BSQ-ViT).

Each of the `dim` latent channels is one bit, so the codebook is implicit: 2^dim codes, no lookup.
LFQ's code is sign(z), i.e. +-1 per channel; BSQ first l2-normalises the latent onto the unit
sphere and its code is sign(z) / sqrt(dim), on the sphere too. A code's index reads the bits
(1 where z > 0) as a binary number, channel 0 least significant. Straight-through gradients.

Training loss: commitment_weight x mean ||z - code||^2 + entropy_weight x (mean over positions of
H(q(.|z)) - codebook_entropy_weight x H(mean over positions of q(.|z))), the first entropy making
each position confident of one code, the second spreading the batch over the codebook. The soft
assignment q(c|z) = softmax over the 2^dim codes of <z, c> / T (= -||z - c||^2 / 2T up to a
constant, since every code has the same norm) factorises over the bits:
q(bit_i = 1 | z) = sigmoid(2 z_i s / T), s the code scale (1, or 1/sqrt(dim)). Hence:
- the per-sample entropy is exact: the sum of the bits' binary entropies;
- the codebook entropy is the factorised approximation sum_i h(mean_n q(bit_i = 1 | z_n)) (as in
  BSQ-ViT): the entropy of the product of the batch-averaged distribution's per-bit marginals, an
  upper bound of the exact entropy that is reached when the bits are independent over the batch.
Both cost O(N dim): no (N, 2^dim) matrix is ever formed, whatever dim.

Under multi-process training both entropies are over the global batch (as vq.py's soft usage), and
in training mode so are the usage statistics (the codes of every process are gathered: a histogram
of 2^dim codes would not fit for large dim), so every process logs the same numbers. Evaluation
(eval mode) may run in one process only, so there the statistics are that process's own.
Always computed in float32, also under bf16 autocast.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..config.quantizer_schema import BSQConfig, LFQConfig
from ..distributed import all_reduce_sum_, differentiable_sum, is_distributed, world_size
from .base import Quantizer, QuantizerOutput, channels_first, channels_last


def _gather(ids: torch.Tensor) -> torch.Tensor:
    """The 1-D ids of every process, concatenated (they may hold different numbers of them)."""
    if not is_distributed():
        return ids
    n = torch.tensor([ids.numel()], device=ids.device)
    sizes = [torch.empty_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n)
    padded = ids.new_full((int(max(sizes)),), -1)   # all_gather needs equal shapes
    padded[: ids.numel()] = ids
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[: int(s)] for part, s in zip(parts, sizes)])


def code_usage(ids: torch.Tensor, codebook_size: int) -> dict[str, torch.Tensor]:
    """Fraction of the codebook used and perplexity of 1-D ids, from their distinct values (the same
    numbers as base.usage_stats, without its histogram over every code)."""
    _, counts = torch.unique(ids, return_counts=True)
    probs = counts.float() / max(ids.numel(), 1)
    entropy = -(probs * probs.log()).sum()
    return {"usage": torch.tensor(counts.numel() / codebook_size, device=ids.device), "perplexity": entropy.exp()}


class LFQ(Quantizer):
    """forward(z (B, dim, *spatial), mask (B, *spatial) | None) -> QuantizerOutput with indices
    (B, *spatial) in [0, 2^dim)."""

    spherical = False   # BSQ: quantise the l2-normalised latent

    def __init__(self, cfg: LFQConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.dim = cfg.dim
        self.codebook_size = 2 ** cfg.dim   # a plain int: also builds on the meta device
        self.scale = 1 / math.sqrt(cfg.dim) if self.spherical else 1.0
        self.register_buffer("basis", 2 ** torch.arange(cfg.dim, dtype=torch.long), persistent=False)

    def extra_repr(self) -> str:
        c = self.cfg
        return (f"dim={c.dim} (2^{c.dim} codes), spherical={self.spherical}, entropy_weight={c.entropy_weight}, "
                f"temperature={c.entropy_temperature}")

    # ---- helpers ----------------------------------------------------------------------------
    def _check(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() < 3 or z.shape[1] != self.dim:
            raise ValueError(f"{type(self).__name__} expects (B, {self.dim}, ...) latents (one channel per bit), "
                             f"got {tuple(z.shape)}")
        return z

    def _latents(self, z: torch.Tensor) -> torch.Tensor:
        """(B, dim, *sp) -> (B, *sp, dim) in float32, on the unit sphere for BSQ (no checks)."""
        zl = channels_last(z.float())
        return F.normalize(zl, dim=-1) if self.spherical else zl

    @staticmethod
    def _keep(mask: torch.Tensor | None, lead: torch.Size, device: torch.device) -> torch.Tensor:
        """The positions that count in the entropies and the statistics: mask's, or all."""
        if mask is None:
            return torch.ones(lead, dtype=torch.bool, device=device)
        if tuple(mask.shape) != tuple(lead):
            raise ValueError(f"mask must have shape {tuple(lead)}, got {tuple(mask.shape)}")
        return mask.to(device).bool()

    def _codes(self, bits: torch.Tensor) -> torch.Tensor:
        # one expression for forward and indices_to_codes, so that both give bit-identical codes
        return (bits.float() * 2 - 1) * self.scale

    def _entropies(self, u: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean per-sample entropy, factorised codebook entropy) of (N, dim) latents weighted by
        w (N,), over every process's latents."""
        logits = 2 * self.scale * u / self.cfg.entropy_temperature   # log q(bit=1|z) - log q(bit=0|z)
        p = torch.sigmoid(logits)
        # from log-sigmoids: finite, with finite gradients, also where a bit is certain
        bit_entropy = -(p * F.logsigmoid(logits) + (1 - p) * F.logsigmoid(-logits))
        per_sample = (bit_entropy.sum(-1) * w).sum()
        marginals = (p * w[:, None]).sum(0)
        # one collective for both sums; each process's loss is then the global batch's
        sums = differentiable_sum(torch.cat([per_sample[None], marginals]))
        n = all_reduce_sum_(w.sum().detach()).clamp(min=1)
        m = sums[1:] / n
        # eps inside the logs, not a clamp: a bit that the whole batch agrees on keeps its gradient
        codebook = -(m * (m + 1e-8).log() + (1 - m) * (1 - m + 1e-8).log()).sum()
        return sums[0] / n, codebook

    # ---- public API ----------------------------------------------------------------------------
    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> QuantizerOutput:
        cfg = self.cfg
        with torch.autocast(device_type=z.device.type, enabled=False):
            u = self._latents(self._check(z))
            keep = self._keep(mask, u.shape[:-1], z.device)
            bits = u > 0
            codes = self._codes(bits)
            indices = (bits.long() * self.basis).sum(-1)
            loss = cfg.commitment_weight * F.mse_loss(u, codes)
            # the value is exactly the code (u - u.detach() == 0), the gradient w.r.t. u the identity
            z_q = channels_first(codes + (u - u.detach()))
            stats: dict[str, torch.Tensor] = {}
            if self.training and cfg.entropy_weight > 0:
                per_sample, codebook = self._entropies(u.reshape(-1, self.dim), keep.reshape(-1).float())
                loss = loss + cfg.entropy_weight * (per_sample - cfg.codebook_entropy_weight * codebook)
                stats = {"per_sample_entropy": per_sample.detach(), "codebook_entropy": codebook.detach()}

        kept = indices.detach()[keep]
        # in training every process runs this step; an evaluation may run in process 0 alone
        stats = {**code_usage(_gather(kept) if self.training else kept, self.codebook_size), **stats}
        return QuantizerOutput(z_q=z_q, indices=indices, loss=loss, stats=stats)

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=z.device.type, enabled=False):
            return self.traced_indices(self._check(z))

    def traced_indices(self, z: torch.Tensor) -> torch.Tensor:
        return ((self._latents(z) > 0).long() * self.basis).sum(-1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, *spatial) ids -> (B, dim, *spatial) codes, exactly as forward produces them."""
        self.check_ids(indices)
        with torch.autocast(device_type=indices.device.type, enabled=False):
            return self.traced_codes(indices)

    def traced_codes(self, indices: torch.Tensor) -> torch.Tensor:
        # torch.div / remainder: `//` and `%`, as export spells them
        bits = torch.remainder(torch.div(indices.long().unsqueeze(-1), self.basis, rounding_mode="floor"), 2)
        return channels_first(self._codes(bits))


class BSQ(LFQ):
    """Binary spherical quantisation: LFQ of z / ||z||, codes sign(z) / sqrt(dim) on the unit sphere."""

    spherical = True

    def __init__(self, cfg: BSQConfig):
        super().__init__(cfg)
