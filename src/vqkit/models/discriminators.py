"""Mel discriminators: a 2D patch discriminator over (mel x time) and a multi-band one (a patch
discriminator per band of mel bins). Each head owns its LeCam EMA state as buffers, so the state is
saved and restored with the discriminator's weights."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ..config import DiscriminatorConfig


class SqueezeExcite2d(nn.Module):
    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(4, channels // reduction)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc(x.mean((2, 3))))[:, :, None, None]


class PatchDiscriminator2d(nn.Module):
    """(B, 1, F, T) -> per-patch logits (B, 1, F', T') and the intermediate feature maps."""

    def __init__(self, channels: list[int]):
        super().__init__()
        layers, cin = [], 1
        for i, c in enumerate(channels):
            stride = (2, 2) if i < len(channels) - 1 else (1, 1)
            layers.append(spectral_norm(nn.Conv2d(cin, c, 3, stride=stride, padding=1)))
            cin = c
        self.convs = nn.ModuleList(layers)
        self.se = SqueezeExcite2d(cin)
        self.out = spectral_norm(nn.Conv2d(cin, 1, 3, padding=1))
        self.register_buffer("lecam_real", torch.zeros(()))   # EMA of mean D(real)
        self.register_buffer("lecam_fake", torch.zeros(()))   # EMA of mean D(fake)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            feats.append(x)
        x = self.se(x)
        return self.out(x), feats


class MelDiscriminators(nn.Module):
    """forward(mel (B, n_mels, T)) -> list of (logits, features) per head; the first head is the
    full-band patch discriminator, the rest are the bands. `head_weights` averages the band heads so
    the multi-band discriminator counts as much as the patch one (as in MQGAN)."""

    def __init__(self, n_mels: int, cfg: DiscriminatorConfig):
        super().__init__()
        self.heads = nn.ModuleList([PatchDiscriminator2d(cfg.patch_channels)])
        self.bands = cfg.bands
        self.heads.extend(PatchDiscriminator2d(cfg.band_channels) for _ in range(cfg.bands))
        w_band = 0.5 / cfg.bands if cfg.bands else 0.0
        self.head_weights = [0.5 if cfg.bands else 1.0] + [w_band] * cfg.bands

    def forward(self, mel: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        image = mel.unsqueeze(1)
        outs = [self.heads[0](image)]
        if self.bands:
            for head, band in zip(self.heads[1:], torch.tensor_split(image, self.bands, dim=2)):
                outs.append(head(band))
        return outs
