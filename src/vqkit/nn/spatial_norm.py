"""MoVQ spatially conditional normalisation: norm(x) * gamma(z_q) + beta(z_q).

gamma and beta are 1x1 convs of the quantised latent resized (nearest) to x's resolution, so the same
code index can decode differently at different places (MoVQ's fix for repeated-patch artefacts).
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from .blocks2d import RMSNorm2d, norm_groups


class SpatialNorm(nn.Module):
    """base="group": GroupNorm (MoVQ); base="rms": per-pixel RMSNorm (for ConvNeXt decoders)."""
    takes_zq = True

    def __init__(self, channels: int, zq_channels: int, base: str = "group"):
        super().__init__()
        if base == "group":
            # No affine of its own: gamma/beta from z_q are the affine.
            self.norm: nn.Module = nn.GroupNorm(norm_groups(channels), channels, eps=1e-6, affine=False)
        elif base == "rms":
            self.norm = RMSNorm2d(channels, affine=False)
        else:
            raise ValueError(f"unknown SpatialNorm base {base!r}")
        self.gamma = nn.Conv2d(zq_channels, channels, 1)
        self.beta = nn.Conv2d(zq_channels, channels, 1)
        # gamma's bias starts at 1 so a fresh block is close to the plain norm rather than a random rescale.
        nn.init.ones_(self.gamma.bias)

    def forward(self, x: torch.Tensor, zq: torch.Tensor) -> torch.Tensor:
        if zq.shape[-2:] != x.shape[-2:]:
            zq = F.interpolate(zq, size=x.shape[-2:], mode="nearest")
        return self.norm(x) * self.gamma(zq) + self.beta(zq)


def spatial_norm_factory(zq_channels: int, base: str = "group"):
    """A `norm(channels)` factory for the blocks in blocks2d."""
    return partial(SpatialNorm, zq_channels=zq_channels, base=base)
