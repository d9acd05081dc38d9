"""1D blocks over time with features as channels: the MQGAN-style residual block and its parts.

Every block takes `causal`: with it, outputs at time t depend only on inputs at times <= t
(left padding, cumulative statistics), which is what a streaming decoder needs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class Conv1d(nn.Module):
    """Conv1d that keeps the length: symmetric padding, or left-only padding when causal."""

    def __init__(self, cin: int, cout: int, kernel_size: int, dilation: int = 1, causal: bool = False,
                 weight_normed: bool = True):
        super().__init__()
        conv = nn.Conv1d(cin, cout, kernel_size, dilation=dilation)
        self.conv = weight_norm(conv) if weight_normed else conv
        total = dilation * (kernel_size - 1)
        self.pad = (total, 0) if causal else (total // 2, total - total // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad))


class ChannelAttention(nn.Module):
    """Squeeze-excitation over channels; the causal variant squeezes with a running mean over time."""

    def __init__(self, channels: int, causal: bool, reduction: int = 4):
        super().__init__()
        hidden = max(4, channels // reduction)
        self.mlp = nn.Sequential(nn.Conv1d(channels, hidden, 1), nn.SiLU(), nn.Conv1d(hidden, channels, 1))
        self.causal = causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.causal:
            steps = torch.arange(1, x.shape[-1] + 1, device=x.device, dtype=x.dtype)
            squeezed = x.cumsum(-1) / steps
        else:
            squeezed = x.mean(-1, keepdim=True)
        return x * torch.sigmoid(self.mlp(squeezed))


class TemporalAttention(nn.Module):
    """Gate each time step from the channel mean and max (CBAM's spatial attention, over time)."""

    def __init__(self, causal: bool, kernel_size: int = 7):
        super().__init__()
        self.conv = Conv1d(2, 1, kernel_size, causal=causal, weight_normed=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
        return x * torch.sigmoid(self.conv(pooled))


class ResBlock1d(nn.Module):
    """x + Attn(Conv(act(Conv(act(x))))): two weight-normed convolutions, channel + temporal attention."""

    def __init__(self, channels: int, kernel_size: int, dilation: int = 1, dropout: float = 0.0,
                 attention: bool = True, causal: bool = False):
        super().__init__()
        self.conv1 = Conv1d(channels, channels, kernel_size, dilation, causal)
        self.conv2 = Conv1d(channels, channels, kernel_size, 1, causal)
        self.act = nn.LeakyReLU(0.1)
        self.dropout = nn.Dropout(dropout)
        self.attn = (nn.Sequential(ChannelAttention(channels, causal), TemporalAttention(causal))
                     if attention else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(x))
        h = self.conv2(self.dropout(self.act(h)))
        return x + self.attn(h)


class MelMixer(nn.Module):
    """Small residual 2D conv over the (channels x time) map, mixing neighbouring feature rows."""

    def __init__(self, width: int = 8, causal: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3)
        self.conv2 = nn.Conv2d(width, 1, 3)
        self.act = nn.LeakyReLU(0.1)
        self.tpad = (2, 0) if causal else (1, 1)   # time is the last axis

    def _conv(self, conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
        return conv(F.pad(x, (*self.tpad, 1, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._conv(self.conv1, x.unsqueeze(1))
        h = self._conv(self.conv2, self.act(h))
        return x + h.squeeze(1)


class Downsample1d(nn.Module):
    """Halve the time axis with a strided convolution."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = weight_norm(nn.Conv1d(cin, cout, 4, stride=2, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample1d(nn.Module):
    """Double the time axis: nearest-neighbour repeat, then a (causal when asked) convolution."""

    def __init__(self, cin: int, cout: int, causal: bool):
        super().__init__()
        self.conv = Conv1d(cin, cout, 3, causal=causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.repeat_interleave(2, dim=-1))
