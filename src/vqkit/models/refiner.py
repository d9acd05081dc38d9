"""UNet refiner (MQGAN Refiner): turns the decoder's draft into a refined output by adding a residual.

Input: the draft and a projection of the decoder's last hidden state, both *detached*, stacked along
the mel axis and seen as a one-channel (mel x time) image. Output: draft + residual.

mode="isolated" (default) also detaches the draft in that sum, so losses on the refined output (and
GAN losses) never reach the encoder, quantiser or decoder: the base model is trained by the draft
loss alone, the refiner by the refined losses alone. mode="shared" keeps the draft attached in the
sum, which is what the reference code does (there the refined losses do reach the base model).
Unlike the reference, the hidden projection sits inside the refiner, after the stop-gradient, so it
is trained.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import RefinerConfig
from ..nn.unet import UNet2d


class MelRefiner(nn.Module):
    def __init__(self, n_mels: int, hidden_channels: int, cfg: RefinerConfig):
        super().__init__()
        self.mode = cfg.mode
        self.hidden_bins = cfg.hidden_bins or max(1, n_mels // 8)
        self.hidden_proj = nn.Conv1d(hidden_channels, self.hidden_bins, 1)
        self.unet = UNet2d(1, 1, cfg.base_channels, cfg.channel_mults, pool=(1, 2))  # pool over time only
        rows = n_mels + self.hidden_bins
        self.out_proj = nn.Conv1d(rows, n_mels, 1)   # back to n_mels rows (a Linear over the mel axis)
        nn.init.normal_(self.out_proj.weight, std=0.02 / rows ** 0.5)  # start close to "refined = draft"
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, draft: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """draft (B, n_mels, T), hidden (B, C, T) -> refined (B, n_mels, T)."""
        extra = self.hidden_proj(hidden.detach())
        image = torch.cat([draft.detach(), extra], dim=1).unsqueeze(1)
        residual = self.out_proj(self.unet(image).squeeze(1))
        base = draft.detach() if self.mode == "isolated" else draft
        return base + residual
