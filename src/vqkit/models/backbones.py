"""Encoders and decoders. `resnet1d`: MQGAN-style, time as the only spatial axis, mel bins as channels."""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ..config import BackboneConfig
from ..nn.blocks1d import Conv1d, Downsample1d, MelMixer, ResBlock1d, Upsample1d


def encoder_layers(channels: list[int], n_down: int, stage: Callable[[int], nn.Module],
                   down: Callable[[int, int], nn.Module], project: Callable[[int, int], nn.Module]) -> list[nn.Module]:
    """A stage per width; the first n_down stages end with a halving (to the next width), the others
    with a projection when the width changes. More halvings than stages: the rest come at the end.
    Shared by the 1D and 2D encoders (their decoders mirror it)."""
    layers: list[nn.Module] = []
    for i, width in enumerate(channels):
        layers.append(stage(width))
        nxt = channels[i + 1] if i + 1 < len(channels) else width
        if i < n_down:
            layers.append(down(width, nxt))
        elif nxt != width:
            layers.append(project(width, nxt))
    layers += [down(channels[-1], channels[-1]) for _ in range(max(0, n_down - len(channels)))]
    return layers


def _stage(width: int, cfg: BackboneConfig, causal: bool) -> nn.Sequential:
    # Dilations 1, 3, 9, ... widen the receptive field without downsampling.
    return nn.Sequential(*[ResBlock1d(width, cfg.kernel_size, 3 ** (j % 3), cfg.dropout, cfg.attention, causal,
                                      cfg.attention_frames)
                           for j in range(cfg.blocks_per_stage)])


class ResNet1dEncoder(nn.Module):
    """(B, in_channels, T) -> (B, latent_dim, T / downsample). Causal: token j sees mel frames up
    to the last of its own downsample frames, none later."""

    def __init__(self, in_channels: int, latent_dim: int, cfg: BackboneConfig, causal: bool = False):
        super().__init__()
        ch = cfg.channels
        n_down = int(math.log2(cfg.downsample))
        self.proj_in = nn.Conv1d(in_channels, ch[0], 1)     # mel bins become channels
        self.mixer = MelMixer(causal=causal) if cfg.mel_mixer else nn.Identity()
        self.body = nn.Sequential(*encoder_layers(ch, n_down, lambda w: _stage(w, cfg, causal),
                                                  lambda a, b: Downsample1d(a, b, causal),
                                                  lambda a, b: nn.Conv1d(a, b, 1)))
        self.proj_out = nn.Sequential(nn.LeakyReLU(0.1), nn.Conv1d(ch[-1], latent_dim, 1))

        self.latent_dim = latent_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mixer(self.proj_in(x))
        for layer in self.body:
            h = layer(h)
            if h.shape[-1] == 0:   # a stream chunk that completes no token: nothing more to compute
                return h.new_zeros(h.shape[0], self.latent_dim, 0)
        return self.proj_out(h)


class ResNet1dDecoder(nn.Module):
    """(B, latent_dim, T') -> (output (B, out_channels, T' * downsample), last hidden (B, channels[0], T))."""

    def __init__(self, out_channels: int, latent_dim: int, cfg: BackboneConfig, causal: bool = False):
        super().__init__()
        ch = list(reversed(cfg.channels))
        causal = causal or cfg.causal_decoder
        n_down = int(math.log2(cfg.downsample))
        n_up_stages = len(ch)
        self.proj_in = Conv1d(latent_dim, ch[0], cfg.kernel_size, causal=causal)
        layers: list[nn.Module] = [Upsample1d(ch[0], ch[0], causal) for _ in range(max(0, n_down - n_up_stages))]
        for i, width in enumerate(ch):
            layers.append(_stage(width, cfg, causal))
            nxt = ch[i + 1] if i + 1 < len(ch) else width
            # Mirror of the encoder: its first n_down stages end with a downsample.
            if n_up_stages - 1 - i < n_down:
                layers.append(Upsample1d(width, nxt, causal))
            elif nxt != width:
                layers.append(nn.Conv1d(width, nxt, 1))
        self.body = nn.Sequential(*layers)
        self.mixer = MelMixer(causal=causal) if cfg.mel_mixer else nn.Identity()
        self.act = nn.LeakyReLU(0.1)
        self.proj_out = nn.Conv1d(ch[-1], out_channels, 1)
        self.hidden_channels = ch[-1]

    @property
    def last_layer(self) -> torch.Tensor:
        """The output layer's weight (taming's adaptive GAN weight balances gradients there)."""
        return self.proj_out.weight

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.mixer(self.body(self.proj_in(z)))
        return self.proj_out(self.act(hidden)), hidden


def build_backbone(in_channels: int, latent_dim: int, cfg: BackboneConfig,
                   causal: bool = False) -> tuple[nn.Module, nn.Module]:
    """(encoder, decoder) of any backbone kind. causal (model.causal, mels): both see only the past."""
    if cfg.kind == "resnet1d":
        return (ResNet1dEncoder(in_channels, latent_dim, cfg, causal),
                ResNet1dDecoder(in_channels, latent_dim, cfg, causal))
    from .backbones2d import build_image_backbone   # resnet2d, convnext, vit

    return build_image_backbone(in_channels, latent_dim, cfg)
