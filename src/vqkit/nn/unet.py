"""A small 2D UNet: conv blocks, pooling, skip concatenation. Pooling can be over one axis only
(time, for spectrograms) or both (images).

For spectrograms (time = the last axis) two options keep the receptive field finite and local:
norm="frame" takes GroupNorm statistics per time frame (not over the whole clip), and causal=True
makes every output frame depend only on input frames at or before it: 3x3 convolutions see two past
frames, pooling averages whole pairs of past frames, and upsampling lags one frame, so a coarse
frame (made of fine frames 2c and 2c+1) is used from fine frame 2c+1 on. The same forward then runs
on whole clips and chunk by chunk (nn/streaming.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .streaming import Held, Past, windows


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm with statistics per time frame: over a group's channels and that frame's rows."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, t = x.shape
        frames = x.permute(0, 3, 1, 2).reshape(b * t, c, h)
        y = F.group_norm(frames, self.num_groups, self.weight, self.bias, self.eps)
        return y.reshape(b, t, c, h).permute(0, 2, 3, 1)


class Conv3x3(nn.Conv2d):
    """3x3 convolution keeping the size; causal: the time axis (last) sees the past only."""

    def __init__(self, cin: int, cout: int, causal: bool = False):
        super().__init__(cin, cout, 3, padding=(1, 0) if causal else 1)
        self.past = Past(3) if causal else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.past is None:
            return super().forward(x)
        return windows(super().forward, self.past(x), 3)


class ConvBlock2d(nn.Module):
    def __init__(self, cin: int, cout: int, causal: bool = False, norm: str = "clip"):
        super().__init__()
        groups = 8 if cout % 8 == 0 else 1
        norm_cls = FrameGroupNorm if norm == "frame" else nn.GroupNorm
        self.net = nn.Sequential(
            Conv3x3(cin, cout, causal), norm_cls(groups, cout), nn.SiLU(),
            Conv3x3(cout, cout, causal), norm_cls(groups, cout), nn.SiLU())
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.net(x)


class UNet2d(nn.Module):
    """(B, in_ch, H, W) -> (B, out_ch, H, W). Not causal: inputs whose pooled axes are not a
    multiple of the total pooling factor are padded (replicate) and cropped back."""

    def __init__(self, in_ch: int, out_ch: int, base: int, mults: list[int], pool: tuple[int, int] = (2, 2),
                 causal: bool = False, norm: str = "clip"):
        super().__init__()
        if norm not in ("clip", "frame"):
            raise ValueError(f"unknown UNet norm {norm!r}; 'clip' or 'frame'")
        if causal and (tuple(pool) != (1, 2) or norm != "frame"):
            raise ValueError("a causal UNet pools over time only (pool (1, 2)) with per-frame norm")
        self.widths = widths = [base * m for m in mults]
        self.pool, self.causal = pool, causal
        self.levels = len(widths) - 1
        self.stem = Conv3x3(in_ch, widths[0], causal)
        self.down = nn.ModuleList()
        cin = widths[0]
        for w in widths:
            self.down.append(ConvBlock2d(cin, w, causal, norm))
            cin = w
        self.up = nn.ModuleList(ConvBlock2d(widths[i + 1] + widths[i], widths[i], causal, norm)
                                for i in reversed(range(self.levels)))
        self.head = Conv3x3(widths[0], out_ch, causal)
        if causal:
            self.pairs = nn.ModuleList(Past(2, stride=2) for _ in range(self.levels))
            self.lags = nn.ModuleList(Held(1) for _ in range(self.levels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stem.weight.is_contiguous(memory_format=torch.channels_last) and self.stem.weight.shape[1] > 1:
            x = x.contiguous(memory_format=torch.channels_last)   # weights made channels-last (inference copies)
        if self.causal:   # whole pairs and a one-frame lag fit any length: nothing to pad
            return self._forward(x).contiguous()
        h_in, w_in = x.shape[-2:]
        fh, fw = self.pool[0] ** self.levels, self.pool[1] ** self.levels
        ph, pw = (-h_in) % fh, (-w_in) % fw
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return self._forward(x)[..., :h_in, :w_in].contiguous()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        skips = []
        for i, block in enumerate(self.down):
            h = _unless_empty(block, h, self.widths[i])
            if i < self.levels:
                skips.append(h)
                h = self._pool(i, h)
        for j, block in enumerate(self.up):
            skip = skips.pop()
            h = self._upsample(j, h, skip.shape[-2:])
            h = _unless_empty(block, torch.cat([h, skip], 1), skip.shape[1])
        return self.head(h)

    def _pool(self, level: int, h: torch.Tensor) -> torch.Tensor:
        if not self.causal:
            return F.avg_pool2d(h, self.pool)
        h = self.pairs[level](h)
        n = h.shape[-1] // 2
        return h[..., : 2 * n].unflatten(-1, (n, 2)).mean(-1)

    def _upsample(self, j: int, h: torch.Tensor, size: torch.Size) -> torch.Tensor:
        if not self.causal:
            return F.interpolate(h, size=size, mode="nearest")
        return self.lags[j](h.repeat_interleave(2, dim=-1), size[-1])


def _unless_empty(block: nn.Module, x: torch.Tensor, channels: int) -> torch.Tensor:
    """block(x); a stream chunk that completed no frame at this level has nothing to compute."""
    return block(x) if x.shape[-1] else x.new_zeros(x.shape[0], channels, *x.shape[2:])
