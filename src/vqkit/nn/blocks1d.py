"""1D blocks over time with features as channels: the MQGAN-style residual block and its parts.

Every block takes `causal`: with it, outputs at time t depend only on inputs at times <= t (left
context through nn/streaming.py's Past), so the same block runs on whole clips and chunk by chunk.
Receptive fields are finite (windowed channel attention), so tokens do not depend on how long the
clip is, on padding in a batch, or on where a long file is cut into windows.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from .streaming import Past, windows


class Conv1d(nn.Module):
    """Conv1d that keeps the length: symmetric padding, or the past only when causal."""

    def __init__(self, cin: int, cout: int, kernel_size: int, dilation: int = 1, causal: bool = False,
                 weight_normed: bool = True):
        super().__init__()
        conv = nn.Conv1d(cin, cout, kernel_size, dilation=dilation)
        self.conv = weight_norm(conv) if weight_normed else conv
        total = dilation * (kernel_size - 1)
        self.past = Past(total + 1) if causal else None
        self.pad = (total // 2, total - total // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.past is None:
            return self.conv(F.pad(x, self.pad))
        return windows(self.conv, self.past(x), self.past.span)


class ChannelAttention(nn.Module):
    """Squeeze-excitation over channels, squeezed with the mean over a window of `frames` frames
    (centred; causal: the last `frames`). frames=None squeezes over the whole clip (causal: a
    running mean from the start), as models saved before the window existed did."""

    def __init__(self, channels: int, causal: bool, reduction: int = 4, frames: int | None = None):
        super().__init__()
        hidden = max(4, channels // reduction)
        self.mlp = nn.Sequential(nn.Conv1d(channels, hidden, 1), nn.SiLU(), nn.Conv1d(hidden, channels, 1))
        self.causal, self.frames = causal, frames
        self.past = Past(frames) if (causal and frames) else None

    def _squeeze(self, x: torch.Tensor) -> torch.Tensor:
        if self.frames is None:
            if self.causal:
                steps = torch.arange(1, x.shape[-1] + 1, device=x.device, dtype=x.dtype)
                return x.cumsum(-1) / steps
            return x.mean(-1, keepdim=True)
        mean = lambda h: F.avg_pool1d(h, self.frames, stride=1)  # noqa: E731 (zeros count: purely local)
        if self.past is not None:
            return windows(mean, self.past(x), self.frames)
        left = (self.frames - 1) // 2
        return mean(F.pad(x, (left, self.frames - 1 - left)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.mlp(self._squeeze(x)))


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
                 attention: bool = True, causal: bool = False, attention_frames: int | None = None):
        super().__init__()
        self.conv1 = Conv1d(channels, channels, kernel_size, dilation, causal)
        self.conv2 = Conv1d(channels, channels, kernel_size, 1, causal)
        self.act = nn.LeakyReLU(0.1)
        self.dropout = nn.Dropout(dropout)
        self.attn = (nn.Sequential(ChannelAttention(channels, causal, frames=attention_frames),
                                   TemporalAttention(causal))
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
        self.past = nn.ModuleList([Past(3), Past(3)]) if causal else None   # one per convolution

    def _conv(self, i: int, x: torch.Tensor) -> torch.Tensor:
        # time is the last axis, neighbouring feature rows the one before it
        conv = (self.conv1, self.conv2)[i]
        if self.past is None:
            return conv(F.pad(x, (1, 1, 1, 1)))
        return windows(lambda h: conv(F.pad(h, (0, 0, 1, 1))), self.past[i](x), 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._conv(0, x.unsqueeze(1))
        h = self._conv(1, self.act(h))
        return x + h.squeeze(1)


class Downsample1d(nn.Module):
    """Halve the time axis with a strided convolution (kernel 4). Causal: output j sees frames
    2j-2 .. 2j+1, so it is known as soon as frame 2j+1 has arrived."""

    def __init__(self, cin: int, cout: int, causal: bool = False):
        super().__init__()
        self.conv = weight_norm(nn.Conv1d(cin, cout, 4, stride=2, padding=0 if causal else 1))
        self.past = Past(4, stride=2) if causal else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.past is None:
            return self.conv(x)
        return windows(self.conv, self.past(x), 4)


class Upsample1d(nn.Module):
    """Double the time axis: nearest-neighbour repeat, then a (causal when asked) convolution."""

    def __init__(self, cin: int, cout: int, causal: bool):
        super().__init__()
        self.conv = Conv1d(cin, cout, 3, causal=causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.repeat_interleave(2, dim=-1))
