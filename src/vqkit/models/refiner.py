"""UNet refiner (MQGAN Refiner): turns the decoder's draft into a refined output by adding a residual.

Input: the draft and a projection of the decoder's last hidden state, both *detached*. For mels they
are stacked along the mel axis and seen as a one-channel (mel x time) image, pooled over time only
(as in MQGAN); for images the projection adds channels and the UNet pools both axes. The module is
the same: the MQGAN post notes the design is not specific to spectrograms.

mode="isolated" (default) also detaches the draft in the final sum, so losses on the refined output
(and GAN losses) never reach the encoder, quantiser or decoder: the base model is trained by the
draft loss alone, the refiner by the refined losses alone. mode="shared" keeps the draft attached in
the sum, which is what the reference code does (there the refined losses do reach the base model).
Unlike the reference, the hidden projection sits inside the refiner, after the stop-gradient, so it
is trained. For mels the UNet's statistics are per time frame, and `causal` makes it see only the
past (see nn/unet.py), so the refiner streams like the decoder it follows.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import RefinerConfig
from ..nn.unet import UNet2d


class Refiner(nn.Module):
    def __init__(self, signal_channels: int, hidden_channels: int, cfg: RefinerConfig, layout: str = "mel",
                 causal: bool = False):
        super().__init__()
        if layout not in ("mel", "image"):
            raise ValueError(f"unknown refiner layout {layout!r}")
        # Mels: statistics per time frame unless a saved config asks for the whole clip.
        norm = cfg.norm or ("frame" if layout == "mel" else "clip")
        self.mode, self.layout = cfg.mode, layout
        conv = nn.Conv1d if layout == "mel" else nn.Conv2d
        self.hidden_bins = cfg.hidden_bins or (max(1, signal_channels // 8) if layout == "mel" else 8)
        self.hidden_proj = conv(hidden_channels, self.hidden_bins, 1)
        rows = signal_channels + self.hidden_bins
        if layout == "mel":   # one-channel (mel rows x time) image, pooled over time only
            self.unet = UNet2d(1, 1, cfg.base_channels, cfg.channel_mults, pool=(1, 2), causal=causal, norm=norm)
        else:
            self.unet = UNet2d(rows, rows, cfg.base_channels, cfg.channel_mults, pool=(2, 2), norm=norm)
        self.out_proj = conv(rows, signal_channels, 1)   # back to the signal's rows / channels
        nn.init.normal_(self.out_proj.weight, std=0.02 / rows ** 0.5)  # start close to "refined = draft"
        nn.init.zeros_(self.out_proj.bias)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.out_proj.weight

    def residual(self, draft: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """What the refiner adds to the draft (inputs as given: forward detaches them)."""
        stacked = torch.cat([draft, self.hidden_proj(hidden)], dim=1)
        if self.layout == "mel":
            return self.out_proj(self.unet(stacked.unsqueeze(1)).squeeze(1))
        return self.out_proj(self.unet(stacked))

    def forward(self, draft: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """draft (B, C, *spatial), hidden (B, H, *spatial) -> refined, shaped like draft."""
        residual = self.residual(draft.detach(), hidden.detach())
        base = draft.detach() if self.mode == "isolated" else draft
        return base + residual
