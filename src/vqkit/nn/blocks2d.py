"""2D blocks for image encoders/decoders: VQGAN residual block, full self-attention, ConvNeXt block.

Norm layers are passed in as a factory `norm(channels) -> module` so that a decoder can swap in
SpatialNorm (MoVQ) without this file knowing about it. A norm module that needs the quantised
latent sets `takes_zq = True` and is called as norm(x, zq); blocks forward zq to such norms.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .transformer import swiglu_hidden

NormFactory = Callable[[int], nn.Module]


def norm_groups(channels: int) -> int:
    """32 groups at VQGAN widths; at tiny widths keep >= 4 channels a group (1 would be instance norm)."""
    return math.gcd(channels, min(32, max(1, channels // 4)))


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(norm_groups(channels), channels, eps=1e-6)


def call_norm(norm: nn.Module, x: torch.Tensor, zq: torch.Tensor | None) -> torch.Tensor:
    """Call a plain norm as norm(x) and a conditional one (SpatialNorm) as norm(x, zq)."""
    if getattr(norm, "takes_zq", False):
        if zq is None:
            raise ValueError("a spatially conditioned norm needs z_q")
        return norm(x, zq)
    return norm(x)


class RMSNorm2d(nn.Module):
    """RMS over channels at every pixel: per-pixel, so it never mixes positions."""

    def __init__(self, channels: int, eps: float = 1e-6, affine: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + self.eps)
        return y * self.weight[:, None, None] if self.weight is not None else y


class ResBlock2d(nn.Module):
    """VQGAN residual block: GN-SiLU-Conv3x3-GN-SiLU-Dropout-Conv3x3, plus a (1x1 when widths differ) skip."""
    takes_zq = True

    def __init__(self, cin: int, cout: int | None = None, dropout: float = 0.0, norm: NormFactory = group_norm):
        super().__init__()
        cout = cout or cin
        self.norm1 = norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = norm(cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, zq: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(call_norm(self.norm1, x, zq)))
        h = self.conv2(self.dropout(F.silu(call_norm(self.norm2, h, zq))))
        return self.skip(x) + h


class AttnBlock2d(nn.Module):
    """Full multi-head self-attention over all H*W positions (used at the lowest resolution only)."""
    takes_zq = True

    def __init__(self, channels: int, heads: int = 1, dropout: float = 0.0, norm: NormFactory = group_norm):
        super().__init__()
        if channels % heads:
            raise ValueError(f"model.backbone.heads: {heads} heads do not divide width {channels}")
        self.heads = heads
        self.norm = norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, zq: torch.Tensor | None = None) -> torch.Tensor:
        b, c, hh, ww = x.shape
        qkv = self.qkv(call_norm(self.norm, x, zq))
        # (B, 3C, H, W) -> 3 x (B, heads, HW, C/heads)
        q, k, v = qkv.reshape(b, 3, self.heads, c // self.heads, hh * ww).transpose(-1, -2).unbind(1)
        # Contiguous inputs take the fused CPU kernel; strided ones fall back to materialising all scores.
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(b, c, hh, ww)
        return x + self.dropout(self.proj(out))


class SwiGLU2d(nn.Module):
    """Pointwise SwiGLU MLP on a (B, C, H, W) map: W3(silu(W1 x) * W2 x) with 1x1 convs."""

    def __init__(self, channels: int, hidden: int | None = None, bias: bool = False):
        super().__init__()
        hidden = hidden or swiglu_hidden(channels)
        self.w12 = nn.Conv2d(channels, 2 * hidden, 1, bias=bias)
        self.w3 = nn.Conv2d(hidden, channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.w12(x).chunk(2, dim=1)
        return self.w3(F.silu(a) * b)


class ConvNeXtBlock(nn.Module):
    """x + DWConv7x7(norm(x)); then x + SwiGLU(norm(x)) (the blog's block; dropout on both branches)."""
    takes_zq = True

    def __init__(self, channels: int, dropout: float = 0.0, norm: NormFactory = RMSNorm2d):
        super().__init__()
        self.prenorm = norm(channels)
        self.depthwise = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.postnorm = norm(channels)
        self.mlp = SwiGLU2d(channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, zq: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.dropout(self.depthwise(call_norm(self.prenorm, x, zq)))
        return x + self.dropout(self.mlp(call_norm(self.postnorm, x, zq)))


class Downsample2d(nn.Module):
    """Halve H and W: strided 3x3 conv after a right/bottom pad (taming), or 2x2 average pool then 3x3 conv."""

    def __init__(self, cin: int, cout: int, mode: str = "conv"):
        super().__init__()
        if mode not in ("conv", "avgpool"):
            raise ValueError(f"unknown downsample mode {mode!r}")
        self.mode = mode
        self.conv = nn.Conv2d(cin, cout, 3, stride=2 if mode == "conv" else 1, padding=0 if mode == "conv" else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "conv":
            return self.conv(F.pad(x, (0, 1, 0, 1)))
        return self.conv(F.avg_pool2d(x, 2))


class Upsample2d(nn.Module):
    """Double H and W: nearest-neighbour repeat, then a 3x3 conv (no checkerboard of transposed convs)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Stage(nn.Sequential):
    """Sequential that hands z_q to the blocks that take it."""
    takes_zq = True

    def forward(self, x: torch.Tensor, zq: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        for m in self:
            x = m(x, zq) if getattr(m, "takes_zq", False) else m(x)
        return x
