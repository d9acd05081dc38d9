"""Local attention for high-resolution maps (SeQ-GAN phase-2 decoder, MaxViT-style partitions).

window:  attention inside non-overlapping w x w windows (block-regional).
dilated: attention inside each of the (H/w) x (W/w) grid groups; a group holds the w x w tokens that are
         H/w (resp. W/w) apart, so it spans the whole image sparsely.
Both are residual blocks x + attn(norm(x)), attn being nn.transformer's attention over a group's
tokens. The norm is per pixel (LayerNorm over channels): a GroupNorm would pool statistics over the
whole image and break locality. When H or W is not a multiple of the window, the map is zero-padded
and the padded tokens are masked out of the keys.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .transformer import Attention


def _partition(x: torch.Tensor, wh: int, ww: int, mode: str) -> torch.Tensor:
    """(B, Hp, Wp, C) -> (B * groups, wh * ww, C)."""
    b, hp, wp, c = x.shape
    nh, nw = hp // wh, wp // ww
    if mode == "window":   # row = window_row * wh + inner_row
        x = x.reshape(b, nh, wh, nw, ww, c).permute(0, 1, 3, 2, 4, 5)
    else:                  # row = inner_row * nh + group_row: members are nh rows apart
        x = x.reshape(b, wh, nh, ww, nw, c).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b * nh * nw, wh * ww, c)


def _merge(x: torch.Tensor, b: int, hp: int, wp: int, wh: int, ww: int, mode: str) -> torch.Tensor:
    """Inverse of _partition."""
    nh, nw, c = hp // wh, wp // ww, x.shape[-1]
    x = x.reshape(b, nh, nw, wh, ww, c)
    if mode == "window":
        x = x.permute(0, 1, 3, 2, 4, 5)
    else:
        x = x.permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, hp, wp, c)


class WindowAttention2d(nn.Module):
    """(B, C, H, W) -> (B, C, H, W). mode "window" or "dilated"; window w (clamped to H, W on small maps).

    zero_init: the output projection starts at zero, so the block starts as the identity (a phase-2
    decoder with extra blocks then computes exactly the phase-1 function before fine-tuning).
    """

    def __init__(self, channels: int, window: int = 8, heads: int = 4, mode: str = "window",
                 dropout: float = 0.0, zero_init: bool = True):
        super().__init__()
        if mode not in ("window", "dilated"):
            raise ValueError(f"unknown local attention mode {mode!r}; use 'window' or 'dilated'")
        if channels % heads:
            raise ValueError(f"model.backbone.heads: {heads} heads do not divide width {channels}")
        self.mode, self.window = mode, window
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.attn = Attention(channels, heads, bias=True)
        self.dropout = nn.Dropout(dropout)
        if zero_init:
            nn.init.zeros_(self.attn.out.weight)
            nn.init.zeros_(self.attn.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        wh, ww = min(self.window, h), min(self.window, w)   # no point padding a small map up to w
        ph, pw = (-h) % wh, (-w) % ww
        t = self.norm(x.permute(0, 2, 3, 1))
        mask = None
        if ph or pw:
            t = F.pad(t, (0, 0, 0, pw, 0, ph))
            valid = torch.zeros(1, h + ph, w + pw, 1, dtype=torch.bool, device=x.device)
            valid[:, :h, :w] = True
            # (groups, 1, 1, tokens): keys that are padding get no weight; broadcast over batch and heads.
            mask = _partition(valid, wh, ww, self.mode).reshape(-1, 1, 1, wh * ww).repeat(b, 1, 1, 1)
        hp, wp = h + ph, w + pw
        out = self.attn(_partition(t, wh, ww, self.mode), mask=mask)
        out = _merge(out, b, hp, wp, wh, ww, self.mode)[:, :h, :w]
        return x + self.dropout(out.permute(0, 3, 1, 2))
