"""Finite scalar quantisation (Mentzer et al., 2023).

Each latent dimension is bounded with tanh to its level count, rounded with a straight-through
estimator and rescaled to [-1, 1]; the codebook is the product of the levels and a code's index is
its mixed-radix number. Always computed in float32, also under bf16 autocast.
"""
from __future__ import annotations

import math

import torch

from .base import Quantizer, QuantizerOutput, channels_first, channels_last, usage_stats


class _StraightThrough(torch.autograd.Function):
    """finish(bound(z)) -> (value, *extras) as one autograd node, with FSQ's straight-through gradient:
    d value / d z = bound'(z) / half_width, whatever finish rounds. A handful of small ops and their
    autograd records are most of FSQ's time at these sizes; backward takes the same operations in
    the same order as autograd did through bound(), the round and the rescale: the same bits."""

    @staticmethod
    def forward(ctx, z, fsq, finish):
        t = torch.tanh(z + fsq._shift)
        out = finish(t * fsq._half - fsq._offset)   # (value, *non-differentiable extras)
        ctx.save_for_backward(t)
        ctx.fsq = fsq
        ctx.mark_non_differentiable(*out[1:])
        return out

    @staticmethod
    def backward(ctx, g, *_):
        (t,), fsq = ctx.saved_tensors, ctx.fsq
        return torch.ops.aten.tanh_backward(g / fsq._half_width * fsq._half, t), None, None


def straight_through_bound(fsq: "FSQ", z: torch.Tensor, finish) -> tuple[torch.Tensor, ...]:
    """(value, *extras) = finish(fsq.bound(z)), the gradient of value straight through to bound(z) / half_width."""
    return _StraightThrough.apply(z, fsq, finish)


class FSQ(Quantizer):
    def __init__(self, levels: list[int], eps: float = 1e-3):
        super().__init__()
        if not levels or any(lv < 2 for lv in levels):
            raise ValueError(f"FSQ levels must all be >= 2, got {levels}")
        self.levels_list = list(levels)
        self.dim = len(levels)
        self.eps = eps
        lv = torch.tensor(levels, dtype=torch.long)
        basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.long), lv[:-1]]), 0)
        self.register_buffer("levels", lv, persistent=False)
        self.register_buffer("basis", basis, persistent=False)
        # bound()'s constants, computed once (they cost more than the work on small inputs)
        half = (lv - 1).float() * (1 + eps) / 2
        offset = (lv % 2 == 0).float() * 0.5   # even levels: shift so the grid is symmetric
        self.register_buffer("_half", half, persistent=False)
        self.register_buffer("_offset", offset, persistent=False)
        self.register_buffer("_shift", torch.atanh(offset / half), persistent=False)
        self.register_buffer("_half_width", (lv // 2).float(), persistent=False)
        self.register_buffer("_half_levels", lv // 2, persistent=False)
        self.codebook_size = math.prod(self.levels_list)   # plain ints: also builds on the meta device

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash z so that rounding gives exactly `levels` values per dimension."""
        return torch.tanh(z + self._shift) * self._half - self._offset

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> QuantizerOutput:
        if z.shape[1] != self.dim:
            raise ValueError(f"FSQ expects {self.dim} channels (one per level), got shape {tuple(z.shape)}")
        with torch.autocast(device_type=z.device.type, enabled=False):
            codes, indices = straight_through_bound(self, channels_last(z.float()), self._finish)
        z_q = channels_first(codes)
        stats = usage_stats(indices.detach(), self.codebook_size, mask, across_processes=self.training)
        return QuantizerOutput(z_q=z_q, indices=indices, loss=z.new_zeros(()), stats=stats)

    def _finish(self, bounded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # round(b) is the value b + (round(b) - b).detach() had (round(b) - b is exact in floats)
        grid = torch.round(bounded)
        return grid / self._half_width, self._grid_to_indices(grid)   # codes in [-1, 1], ids

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=z.device.type, enabled=False):
            return self.traced_indices(z)

    def traced_indices(self, z: torch.Tensor) -> torch.Tensor:
        return self._grid_to_indices(torch.round(self.bound(channels_last(z.float()))))

    def _codes_to_indices(self, rounded: torch.Tensor) -> torch.Tensor:
        digits = (rounded + self._half_levels).round().long()   # 0 .. level-1 per dim
        return (digits * self.basis).sum(-1)

    def _grid_to_indices(self, grid: torch.Tensor) -> torch.Tensor:
        """_codes_to_indices of grid values that are already integers (rounded): no second round."""
        return ((grid + self._half_levels).long() * self.basis).sum(-1)

    def codes_to_indices(self, z_q: torch.Tensor) -> torch.Tensor:
        """(B, dim, ...) quantised latents -> (B, ...) integer codes (inverse of indices_to_codes)."""
        return self._codes_to_indices(channels_last(z_q.float()) * self._half_width)

    def indices_to_grid(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, ...) integer codes -> (B, ..., dim) rounded grid values (-L//2 .. (L-1)//2, as float),
        channels last: what forward rounds to before rescaling (residual FSQ rescales them its way)."""
        self.check_ids(indices)
        return self.traced_grid(indices)

    def traced_grid(self, indices: torch.Tensor) -> torch.Tensor:
        """indices_to_grid without its check (torch.div / remainder: `//` and `%`, as export spells them)."""
        digits = torch.remainder(torch.div(indices.long().unsqueeze(-1), self.basis, rounding_mode="floor"),
                                 self.levels)
        return (digits - self._half_levels).float()

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, ...) integer codes -> (B, dim, ...) quantised latents, exactly as forward produces them."""
        self.check_ids(indices)
        return self.traced_codes(indices)

    def traced_codes(self, indices: torch.Tensor) -> torch.Tensor:
        return channels_first(self.traced_grid(indices) / self._half_width)
