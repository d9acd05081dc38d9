"""Residual finite scalar quantisation (as in Stable Codec and vector-quantize-pytorch's ResidualFSQ).

Stage 1 is FSQ (quantizers/fsq.py): the latent is bounded with tanh and rounded. Each later stage
quantises the residual u - (sum of the earlier stages' codes), u being the bounded latent before
rounding, on the same `levels` grid scaled down by L^(s-1) in a dimension of L levels. Why that
scale: after a stage the residual lies within half of that stage's grid step, and the L cells of
the next stage's grid tile exactly that interval, so the worst-case error shrinks L-fold per stage.
An even level count gives FSQ an asymmetric grid (-L/2 .. L/2-1); later stages shift it by half a
step, so that it is symmetric like the residual interval its L cells tile.

A position holds one index per stage, each in [0, prod(levels)); the code is the sum of the stage
codes, and the sum of the first k alone is a coarser code of the same latent: a lower bit rate from
the same model (`indices_to_codes(indices, stages=k)`). `stage_dropout` trains that: with that
probability an example's z_q holds only its first k stages, k uniform in 1..stages (SoundStream /
DAC quantiser dropout); its indices always hold every stage.

Where stage 1 sits at the edge of its grid in a dimension, the bounded latent cannot lie beyond it,
so the later stages' values pointing further out are never chosen there: every index tuple decodes
(and `codes_to_indices` inverts it), but not every tuple is one the encoder makes.

The gradient is straight-through to u, as FSQ's (the value is exactly the sum of the stage codes).
In training, usage statistics count every process's codes (the global batch), as every quantiser's do.
Always computed in float32, also under bf16 autocast.
"""
from __future__ import annotations

import torch

from ..config.quantizer_schema import RFSQConfig
from ..distributed import all_reduce_sum_
from .base import Quantizer, QuantizerOutput, channels_first, channels_last, code_counts, usage_of_counts
from .fsq import FSQ, straight_through_bound


class ResidualFSQ(Quantizer):
    """forward(z (B, dim, *spatial), mask (B, *spatial) | None) -> QuantizerOutput with indices
    (B, *spatial, stages), or (B, *spatial) for a single stage (which is plain FSQ)."""

    def __init__(self, levels: list[int], stages: int = 2, stage_dropout: float = 0.0):
        super().__init__()
        if stages < 1:
            raise ValueError(f"residual FSQ needs stages >= 1, got {stages}")
        if not 0 <= stage_dropout <= 1:
            raise ValueError(f"stage_dropout must be in [0, 1], got {stage_dropout}")
        self.fsq = FSQ(levels)
        self.dim, self.codebook_size = self.fsq.dim, self.fsq.codebook_size
        self.stages = self.tokens_per_position = stages
        self.stage_dropout = stage_dropout
        lv = torch.tensor(levels, dtype=torch.float64)
        power = torch.arange(stages, dtype=torch.float64)[:, None]
        scale = lv ** -power                                                   # (stages, dim)
        centre = torch.where((power > 0) & (lv % 2 == 0), 0.5, 0.0)          # (stages, dim)
        self.register_buffer("scale", scale.float(), persistent=False)
        self.register_buffer("centre", centre.float(), persistent=False)
        self.register_buffer("half_width", (lv // 2).float(), persistent=False)
        self.register_buffer("grid_low", -(lv // 2).float(), persistent=False)
        self.register_buffer("grid_high", (lv - 1 - lv // 2).float(), persistent=False)

    @classmethod
    def from_config(cls, cfg: RFSQConfig) -> "ResidualFSQ":
        cfg.validate()
        return cls(cfg.levels, cfg.stages, cfg.stage_dropout)

    def extra_repr(self) -> str:
        return f"levels={self.fsq.levels_list}, stages={self.stages}, stage_dropout={self.stage_dropout}"

    # ---- the stages ----------------------------------------------------------------------------
    def _stage_code(self, grid: torch.Tensor, s: int) -> torch.Tensor:
        """Rounded grid values of stage s (channels last) -> its code. The one formula of forward and
        indices_to_codes, so both give the same bits (stage 0: exactly FSQ's code)."""
        return (grid + self.centre[s]) / self.half_width * self.scale[s]

    def _check(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, dim, ...), checked."""
        if z.dim() < 3 or z.shape[1] != self.dim:
            raise ValueError(f"residual FSQ expects (B, {self.dim}, ...) latents (one channel per level), "
                             f"got shape {tuple(z.shape)}")
        return z

    def _grids_of_bound(self, bounded: torch.Tensor) -> list[torch.Tensor]:
        """The rounded grid values of every stage, from FSQ's bounded latent (channels last)."""
        u = bounded / self.half_width
        first = torch.round(bounded)   # stage 1 is FSQ's rounding, from its bounded value itself
        return self._residual_grids(u - self._stage_code(first, 0), [first])

    def _finish(self, bounded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_q channels last: the sum of the stage codes kept, indices), from the bounded latent."""
        grids = self._grids_of_bound(bounded)
        codes = self._kept([self._stage_code(g, s) for s, g in enumerate(grids)])
        return self._sum(codes), self._stack(grids)

    def _residual_grids(self, residual: torch.Tensor, grids: list[torch.Tensor]) -> list[torch.Tensor]:
        """`grids` extended with the stages after them, each rounding what is left of `residual`
        (code units, channels last) to its grid."""
        for s in range(len(grids), self.stages):
            grid = residual * self.half_width / self.scale[s] - self.centre[s]
            grid = torch.round(torch.clamp(grid, self.grid_low, self.grid_high))
            grids.append(grid)
            residual = residual - self._stage_code(grid, s)
        return grids

    def _stack(self, grids: list[torch.Tensor]) -> torch.Tensor:
        indices = torch.stack([self.fsq._grid_to_indices(g) for g in grids], dim=-1)
        return indices.squeeze(-1) if self.stages == 1 else indices

    @staticmethod
    def _sum(codes: list[torch.Tensor]) -> torch.Tensor:
        total = codes[0]
        for c in codes[1:]:
            total = total + c
        return total

    def _kept(self, codes: list[torch.Tensor]) -> list[torch.Tensor]:
        """Stage dropout: per example, with probability stage_dropout, zero the stages after a random k."""
        if not (self.training and self.stage_dropout > 0 and self.stages > 1):
            return codes
        b, device = codes[0].shape[0], codes[0].device
        k = torch.randint(1, self.stages + 1, (b,), device=device)
        k = torch.where(torch.rand(b, device=device) < self.stage_dropout, k, self.stages)
        view = (b,) + (1,) * (codes[0].dim() - 1)
        return [c * (s < k).float().view(view) for s, c in enumerate(codes)]

    # ---- public API ----------------------------------------------------------------------------
    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> QuantizerOutput:
        with torch.autocast(device_type=z.device.type, enabled=False):
            # value exactly the sum of the stage codes, gradient the identity to u = bound(z) / half_width
            z_q, indices = straight_through_bound(self.fsq, channels_last(self._check(z).float()), self._finish)
            z_q = channels_first(z_q)
        return QuantizerOutput(z_q=z_q, indices=indices, loss=z.new_zeros((), dtype=torch.float32),
                               stats=self.stage_stats(indices.detach(), mask))

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=z.device.type, enabled=False):
            return self.traced_indices(self._check(z))

    def traced_indices(self, z: torch.Tensor) -> torch.Tensor:
        return self._stack(self._grids_of_bound(self.fsq.bound(channels_last(z.float()))))

    def stage_stats(self, indices: torch.Tensor, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Usage and perplexity over every stage's codes together (as multichannel VQ counts its
        channels), and per stage (`usage_stage1`, `perplexity_stage1`, ...)."""
        per = indices if self.stages > 1 else indices.unsqueeze(-1)
        counts = code_counts(per, self.codebook_size, mask)   # (stages, K): one collective for all
        if self.training:
            counts = all_reduce_sum_(counts)
        stats = usage_of_counts(counts.sum(0))
        for s in range(self.stages):
            for key, value in usage_of_counts(counts[s]).items():
                stats[f"{key}_stage{s + 1}"] = value
        return stats

    def check_stages(self, stages: int | None, name: str = "stages") -> int:
        """The number of stages to decode from: `stages` (1..self.stages), or all for None; an error
        names the value as `name` (the command line: --stages)."""
        if stages is None:
            return self.stages
        if isinstance(stages, bool) or not isinstance(stages, int) or not 1 <= stages <= self.stages:
            raise ValueError(f"{name}={stages!r}: must be an integer in [1, {self.stages}] "
                             f"(this residual quantiser has {self.stages} stages)")
        return stages

    def _check_ids(self, indices: torch.Tensor) -> torch.Tensor:
        """Checked ids, one per stage: (B, *spatial, stages) (a single stage's (B, *spatial) unsqueezed)."""
        if self.stages > 1 and (indices.dim() < 2 or indices.shape[-1] != self.stages):
            raise ValueError(f"expected ids of shape (B, ..., {self.stages}) (one per stage), "
                             f"got {tuple(indices.shape)}")
        per = indices.unsqueeze(-1) if self.stages == 1 else indices
        for s in range(self.stages):   # every stage's, also those a k-stage decode leaves out
            self.fsq.check_ids(per[..., s])
        return per

    def _stage_codes(self, per: torch.Tensor) -> list[torch.Tensor]:
        """(B, *spatial, stages) ids -> each stage's code, channels last (no checks)."""
        return [self._stage_code(self.fsq.traced_grid(per[..., s]), s) for s in range(self.stages)]

    def stage_codes(self, indices: torch.Tensor) -> list[torch.Tensor]:
        """(B, *spatial, stages) ids (or (B, *spatial) for one stage) -> each stage's code, (B, dim, *spatial)."""
        per = self._check_ids(indices)
        with torch.autocast(device_type=indices.device.type, enabled=False):
            return [channels_first(c) for c in self._stage_codes(per)]

    def codes_to_indices(self, z_q: torch.Tensor) -> torch.Tensor:
        """(B, dim, ...) codes -> the stage ids whose sum they are (inverse of indices_to_codes, also
        for the tuples the encoder never makes: see the module's docstring)."""
        with torch.autocast(device_type=z_q.device.type, enabled=False):
            return self._stack(self._residual_grids(z_q.float().movedim(1, -1), []))

    def indices_to_codes(self, indices: torch.Tensor, stages: int | None = None) -> torch.Tensor:
        """ids -> (B, dim, *spatial): the sum of the first `stages` stage codes (default: all), exactly
        as forward produces it (forward with stage dropout: for the k it drew). Later stages' ids
        are read (they must be valid) but do not count."""
        k = self.check_stages(stages)
        per = self._check_ids(indices)
        with torch.autocast(device_type=indices.device.type, enabled=False):
            return channels_first(self._sum(self._stage_codes(per)[:k]))

    def traced_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """indices_to_codes(indices) (every stage) without its checks."""
        per = indices.unsqueeze(-1) if self.stages == 1 else indices
        return channels_first(self._sum(self._stage_codes(per)))
