"""What codebook quantisers share (VQ, SimVQ): the layout of latents and ids, the nearest-code search,
the codebook + commitment losses, the gradient estimator and the usage statistics.

- A latent vector of width channels * dim is split into `channels` chunks, each looked up in the
  same single codebook (MoVQ multichannel), so a position holds `channels` ids.
- Distances are computed `distance_chunk` latents at a time, so no (N, K) matrix for all N latents
  is ever held. Always in float32 (autocast is switched off inside).
- loss = ||sg(h) - q||^2 + beta ||h - sg(q)||^2 (codebook, commitment), plus a subclass's terms.
- z_q's gradient comes from `cfg.gradient` (estimators.py; straight-through is fused with the losses
  into one autograd node, `_StraightThroughLookup`); its value is exactly the code.
- In training, usage and perplexity are those of the global batch (summed over processes), so every
  process logs the same numbers.
- Dead-code restart (restart_dead_codes): codes whose EMA assignment count falls below a threshold
  are re-seeded so that they equal latents of the current batch. Under multi-process training the
  counts are global and the new codes come from process 0, so every replica keeps the same codebook.

A subclass says what its codes are (`_codes`), how latents enter and leave code space
(`_to_code_space`, `_from_code_space`), what it adds to the loss (`_regularise`) and, for restarts,
how a code is set to a given vector (`_seed_codes`) and whether its codebook trains (`_codebook_trains`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..distributed import all_reduce_sum_, broadcast_
from .base import (Quantizer, QuantizerOutput, channel_rows, channels_first, channels_last, rows_to_channels,
                   usage_stats)
from .estimators import pass_gradient


class _StraightThroughLookup(torch.autograd.Function):
    """(q = e[idx] with a straight-through gradient to h, codebook + commitment loss) as one autograd
    node: the same values as `e[idx]`, two `F.mse_loss` and `straight_through`, but backward makes
    one (N, d) difference instead of two zero-filled mse gradients plus a gather's index_put."""

    @staticmethod
    def forward(ctx, h, e, idx, beta):
        q = e[idx]
        mse = F.mse_loss(q, h)   # bitwise the same as mse(h, q): (q - h)^2 == (h - q)^2
        ctx.save_for_backward(h, q, idx)
        ctx.beta, ctx.codes = beta, e.shape[0]
        return q, mse + beta * mse

    @staticmethod
    def backward(ctx, g_q, g_loss):
        h, q, idx = ctx.saved_tensors
        d = q - h
        c = g_loss * (2 / max(h.numel(), 1))   # d mse / d q = 2 (q - h) / numel
        g_h = g_e = None
        if ctx.needs_input_grad[0]:   # straight-through from z_q, plus the commitment term
            g_h = torch.addcmul(g_q, d, c * -ctx.beta)
        if ctx.needs_input_grad[1]:   # scale the (K, d) sum, not the (N, d) rows: K << N
            g_e = d.new_zeros(ctx.codes, d.shape[1]).index_add_(0, idx, d).mul_(c)
        return g_h, g_e, None, None


def _argmin_distance(h: torch.Tensor, e: torch.Tensor, e_sq: torch.Tensor) -> torch.Tensor:
    """argmin_k ||h_i - e_k||^2 per row: ||h_i||^2 is the same for every k, so it is left out, and
    the rest is one fused addmm (e_sq: ||e_k||^2)."""
    return torch.addmm(e_sq, h, e.t(), alpha=-2).argmin(-1)


class CodebookQuantizer(Quantizer):
    """forward(z (B, channels*dim, *spatial), mask (B, *spatial) | None) -> QuantizerOutput with
    indices (B, *spatial) for channels == 1, else (B, *spatial, channels)."""

    label = "codebook quantiser"   # for error messages

    def __init__(self, cfg) -> None:
        """cfg: a codebook kind's config, with codebook_size, dim, channels, beta, distance_chunk
        and gradient (VQConfig, SimVQConfig)."""
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.chunk_dim = cfg.dim
        self.channels = cfg.channels
        self.dim = cfg.dim * cfg.channels
        self.codebook_size = cfg.codebook_size
        self.tokens_per_position = cfg.channels
        if cfg.restart_dead_codes or self.always_tracks_usage:
            # persistent: a resumed run keeps its dead-code bookkeeping
            self.register_buffer("usage_ema", torch.full((cfg.codebook_size,), self._neutral_usage()))

    # VQ checkpoints have held usage_ema since before restarts were optional per kind
    always_tracks_usage = False

    # ---- what a subclass defines ----------------------------------------------------------------
    def _codes(self) -> torch.Tensor:
        """The (K, code_dim) float32 codebook as used for lookup, differentiable in what trains it."""
        raise NotImplementedError

    def _to_code_space(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _from_code_space(self, q: torch.Tensor) -> torch.Tensor:
        return q

    def _regularise(self, loss: torch.Tensor, h: torch.Tensor, e: torch.Tensor, idx: torch.Tensor,
                    keep: torch.Tensor, stats: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss with this kind's extra terms (stats: what they report)."""
        return loss

    def _seed_codes(self, ids: torch.Tensor, vectors: torch.Tensor) -> None:
        """Make the codes `ids` equal `vectors` (rows in code space), in place."""
        raise NotImplementedError

    def _codebook_trains(self) -> bool:
        """False for a frozen codebook (e.g. SeQ-GAN phase 2), which restarts never rewrite."""
        raise NotImplementedError

    # ---- shared ---------------------------------------------------------------------------------
    @torch.no_grad()
    def _nearest(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """argmin_k ||h_i - e_k||^2, `distance_chunk` rows at a time: a single chunk x K buffer per chunk."""
        e_sq = (e * e).sum(-1)
        out = torch.empty(h.shape[0], dtype=torch.long, device=h.device)
        step = self.cfg.distance_chunk
        for s in range(0, h.shape[0], step):
            out[s:s + step] = _argmin_distance(h[s:s + step], e, e_sq)
        return out

    def _chunks(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
        """(B, c*dim, *sp) -> ((N, dim) float32 chunks in channel order, (B, *sp))."""
        if z.dim() < 3 or z.shape[1] != self.dim:
            raise ValueError(f"{self.label} expects (B, {self.dim}, ...) latents "
                             f"(channels {self.channels} x dim {self.chunk_dim}), got {tuple(z.shape)}")
        rows = channel_rows(z.float())                             # (B*prod(sp), c*dim)
        return rows.reshape(-1, self.chunk_dim), z.shape[:1] + z.shape[2:]   # (N, dim), N = B*prod(sp)*c

    def _ids(self, idx: torch.Tensor, lead: torch.Size) -> torch.Tensor:
        indices = idx.reshape(*lead, self.channels)
        return indices.squeeze(-1) if self.channels == 1 else indices

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> QuantizerOutput:
        cfg = self.cfg
        with torch.autocast(device_type=z.device.type, enabled=False):
            x, lead = self._chunks(z)
            h = self._to_code_space(x)
            e = self._codes()
            idx = self._nearest(h.detach(), e.detach())
            if cfg.gradient == "straight_through":
                zq, loss = _StraightThroughLookup.apply(h, e, idx, cfg.beta)
            else:
                q = e[idx]
                loss = F.mse_loss(q, h.detach()) + cfg.beta * F.mse_loss(h, q.detach())
                zq = pass_gradient(cfg.gradient, h, q, e, cfg.distance_chunk)
            zq = self._from_code_space(zq)
            zq = rows_to_channels(zq.reshape(-1, self.dim), z.shape)

            keep = torch.ones(x.shape[0], dtype=torch.bool, device=z.device)
            if mask is not None:
                if tuple(mask.shape) != tuple(lead):
                    raise ValueError(f"mask must have shape {tuple(lead)}, got {tuple(mask.shape)}")
                keep = mask.to(z.device).bool().unsqueeze(-1).expand(*lead, self.channels).reshape(-1)
            stats: dict[str, torch.Tensor] = {}
            loss = self._regularise(loss, h, e, idx, keep, stats)
            if cfg.restart_dead_codes:
                live = self.training and self._codebook_trains()
                n = self._restart_dead(h.detach(), idx, keep) if live else 0
                stats["restarted"] = torch.tensor(float(n), device=z.device)

        indices = self._ids(idx, lead)
        stats_mask = keep.reshape(indices.shape) if mask is not None else None
        # training runs in every process in step (the global batch); evaluation may run in one alone
        usage = usage_stats(indices.detach(), self.codebook_size, stats_mask, across_processes=self.training)
        return QuantizerOutput(z_q=zq, indices=indices, loss=loss, stats={**usage, **stats})

    def _neutral_usage(self) -> float:
        # fresh / restarted codes get ~log(2)/(1-decay) steps of grace before they count as dead
        return 2.0 * self.cfg.dead_code_threshold

    @torch.no_grad()
    def _restart_dead(self, h: torch.Tensor, idx: torch.Tensor, keep: torch.Tensor) -> int:
        """EMA of per-code assignment counts; re-seed dead codes from this batch's latents (h: code space)."""
        cfg = self.cfg
        counts = all_reduce_sum_(torch.bincount(idx[keep], minlength=self.codebook_size).float())
        self.usage_ema.mul_(cfg.usage_decay).add_(counts, alpha=1 - cfg.usage_decay)
        dead = (self.usage_ema < cfg.dead_code_threshold).nonzero().squeeze(-1)
        if dead.numel() == 0:   # the same answer in every process: usage_ema is global
            return 0
        n = dead.numel()
        candidates = h[keep]
        if candidates.shape[0] >= n:   # distinct latents when there are enough of them
            new = candidates[torch.randperm(candidates.shape[0], device=h.device)[:n]]
        elif candidates.shape[0] > 0:
            new = candidates[torch.randint(candidates.shape[0], (n,), device=h.device)]
        else:   # a process without latents keeps the old codes (process 0's are broadcast anyway)
            new = self._codes()[dead]
        self._seed_codes(dead, broadcast_(new.contiguous()))
        self.usage_ema[dead] = self._neutral_usage()
        return n

    @torch.no_grad()
    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """forward's ids without its losses, estimator or bookkeeping (no restarts, no collectives)."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            x, lead = self._chunks(z)
            return self._ids(self._nearest(self._to_code_space(x), self._codes()), lead)

    def traced_indices(self, z: torch.Tensor) -> torch.Tensor:
        """indices(z) with every row searched at once: a chunk loop would fix the chunk count in a
        trace. Not what indices runs: it holds an (N, K) distance matrix."""
        zl = channels_last(z.float())                             # (B, *sp, c*dim)
        h = self._to_code_space(zl.reshape(-1, self.chunk_dim))
        e = self._codes()
        return self._ids(_argmin_distance(h, e, (e * e).sum(-1)), zl.shape[:-1])

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, *spatial[, channels]) ids -> (B, channels*dim, *spatial), exactly as forward produces."""
        self.check_ids(indices)
        if self.channels > 1 and (indices.dim() < 2 or indices.shape[-1] != self.channels):
            raise ValueError(f"expected ids of shape (B, ..., {self.channels}), got {tuple(indices.shape)}")
        with torch.autocast(device_type=indices.device.type, enabled=False):
            return self.traced_codes(indices)

    def traced_codes(self, indices: torch.Tensor) -> torch.Tensor:
        lead = indices.shape if self.channels == 1 else indices.shape[:-1]
        q = self._codes()[indices.reshape(-1).long()]
        return channels_first(self._from_code_space(q).reshape(*lead, self.dim))
