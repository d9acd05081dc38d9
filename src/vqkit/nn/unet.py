"""A small 2D UNet: conv blocks, pooling, skip concatenation. Pooling can be over one axis only
(time, for spectrograms) or both (images)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBlock2d(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        groups = 8 if cout % 8 == 0 else 1
        self.net = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.SiLU(),
            nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.SiLU())
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.net(x)


class UNet2d(nn.Module):
    """(B, in_ch, H, W) -> (B, out_ch, H, W). Inputs whose pooled axes are not a multiple of the total
    pooling factor are padded (replicate) and cropped back."""

    def __init__(self, in_ch: int, out_ch: int, base: int, mults: list[int], pool: tuple[int, int] = (2, 2)):
        super().__init__()
        widths = [base * m for m in mults]
        self.pool = pool
        self.levels = len(widths) - 1
        self.stem = nn.Conv2d(in_ch, widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        cin = widths[0]
        for w in widths:
            self.down.append(ConvBlock2d(cin, w))
            cin = w
        self.up = nn.ModuleList(ConvBlock2d(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(self.levels)))
        self.head = nn.Conv2d(widths[0], out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h_in, w_in = x.shape[-2:]
        fh, fw = self.pool[0] ** self.levels, self.pool[1] ** self.levels
        ph, pw = (-h_in) % fh, (-w_in) % fw
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        h = self.stem(x)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h)
            if i < self.levels:
                skips.append(h)
                h = F.avg_pool2d(h, self.pool)
        for block in self.up:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = block(torch.cat([h, skip], 1))
        return self.head(h)[..., :h_in, :w_in]
