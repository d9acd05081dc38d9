"""Image encoders and decoders: resnet2d (VQGAN), convnext (blog), vit (ViT-VQGAN-style patchify).

Decoder "stages" (what cfg.spatial_norm_blocks counts, from the lowest resolution):
- resnet2d / convnext: stage i = the blocks at width reversed(channels)[i]; the mid block belongs to
  stage 0 and the output norm to the last stage (so N = len(channels) conditions every norm, as MoVQ).
- vit: the transformer runs on the token grid; after unpatchifying, one residual norm-SiLU-conv3x3 unit
  per entry of channels runs at full resolution (they smooth grid artefacts); unit i is stage i.
SeQ-GAN extra attention (cfg.decoder_attention) runs right after decoder stage 0 and lives only in
`decoder.extra_attention`, so every other parameter name is the same with and without it.
"""
from __future__ import annotations

import math
import re
from typing import Callable, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from ..config import BackboneConfig
from ..nn.blocks2d import (AttnBlock2d, ConvNeXtBlock, Downsample2d, RMSNorm2d, ResBlock2d, Stage, Upsample2d,
                           call_norm, group_norm)
from ..nn.spatial_norm import spatial_norm_factory
from ..nn.transformer import Transformer
from ..nn.window_attention import WindowAttention2d
from .backbones import encoder_layers


def _n_down(cfg: BackboneConfig) -> int:
    return int(math.log2(cfg.downsample))


def _plain_norm(cfg: BackboneConfig):
    return RMSNorm2d if cfg.kind == "convnext" else group_norm


def _norm_for(cfg: BackboneConfig, stage: int, latent_dim: int):
    """Decoder stages below cfg.spatial_norm_blocks normalise with SpatialNorm(z_q)."""
    if stage < cfg.spatial_norm_blocks:
        return spatial_norm_factory(latent_dim, "rms" if cfg.kind == "convnext" else "group")
    return _plain_norm(cfg)


def _block(cfg: BackboneConfig, width: int, norm) -> nn.Module:
    if cfg.kind == "convnext":
        return ConvNeXtBlock(width, cfg.dropout, norm)
    return ResBlock2d(width, width, cfg.dropout, norm)


def _mid(cfg: BackboneConfig, width: int, norm) -> Stage:
    # VQGAN mid block: block, attention, block. Without attention only the two blocks remain.
    layers = [_block(cfg, width, norm)]
    if cfg.attention:
        layers.append(AttnBlock2d(width, cfg.heads, cfg.dropout, norm))
    return Stage(*layers, _block(cfg, width, norm))


def _extra_attention(cfg: BackboneConfig, width: int) -> nn.ModuleList:
    if cfg.decoder_attention == "none":
        return nn.ModuleList()
    return nn.ModuleList(WindowAttention2d(width, cfg.attention_window, cfg.heads, cfg.decoder_attention,
                                           cfg.dropout, zero_init=True)
                         for _ in range(cfg.decoder_attention_blocks))


class ConvEncoder2d(nn.Module):
    """resnet2d / convnext: (B, C, H, W) -> (B, latent_dim, H/f, W/f)."""

    def __init__(self, in_channels: int, latent_dim: int, cfg: BackboneConfig):
        super().__init__()
        ch, n_down, norm = cfg.channels, _n_down(cfg), _plain_norm(cfg)
        self.conv_in = nn.Conv2d(in_channels, ch[0], 3, padding=1)
        stage = lambda w: Stage(*[_block(cfg, w, norm) for _ in range(cfg.blocks_per_stage)])  # noqa: E731
        self.body = Stage(*encoder_layers(ch, n_down, stage, Downsample2d, lambda a, b: nn.Conv2d(a, b, 1)))
        self.mid = _mid(cfg, ch[-1], norm)
        self.norm_out = norm(ch[-1])
        self.conv_out = nn.Conv2d(ch[-1], latent_dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.body(self.conv_in(x)))
        return self.conv_out(F.silu(self.norm_out(h)))


class _DecoderBase(nn.Module):
    hidden_channels: int
    conv_out: nn.Conv2d

    @property
    def last_layer(self) -> torch.Tensor:
        """Weight of the final output conv (taming's adaptive GAN weight differentiates through it)."""
        return self.conv_out.weight


class ConvDecoder2d(_DecoderBase):
    """resnet2d / convnext: z_q (B, latent_dim, h, w) -> (image (B, C, h*f, w*f), hidden (B, channels[0], h*f, w*f))."""

    def __init__(self, out_channels: int, latent_dim: int, cfg: BackboneConfig):
        super().__init__()
        ch, n_down = list(reversed(cfg.channels)), _n_down(cfg)
        n_stages = len(ch)
        self.conv_in = nn.Conv2d(latent_dim, ch[0], 3, padding=1)
        self.mid = _mid(cfg, ch[0], _norm_for(cfg, 0, latent_dim))
        self.pre_up = nn.ModuleList(Upsample2d(ch[0], ch[0]) for _ in range(max(0, n_down - n_stages)))
        self.stages = nn.ModuleList()
        self.ups = nn.ModuleList()
        for i, width in enumerate(ch):
            norm = _norm_for(cfg, i, latent_dim)
            self.stages.append(Stage(*[_block(cfg, width, norm) for _ in range(cfg.blocks_per_stage)]))
            nxt = ch[i + 1] if i + 1 < len(ch) else width
            # Mirror of the encoder: its first n_down stages end with a downsample.
            if n_stages - 1 - i < n_down:
                self.ups.append(Upsample2d(width, nxt))
            else:
                self.ups.append(nn.Conv2d(width, nxt, 1) if nxt != width else nn.Identity())
        self.extra_attention = _extra_attention(cfg, ch[0])
        self.norm_out = _norm_for(cfg, n_stages - 1, latent_dim)(ch[-1])
        self.conv_out = nn.Conv2d(ch[-1], out_channels, 3, padding=1)
        self.hidden_channels = ch[-1]

    def forward(self, zq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.mid(self.conv_in(zq), zq)
        for up in self.pre_up:
            h = up(h)
        for i, (stage, up) in enumerate(zip(self.stages, self.ups)):
            h = stage(h, zq)
            if i == 0:
                for attn in self.extra_attention:
                    h = attn(h)
            h = up(h)
        return self.conv_out(F.silu(call_norm(self.norm_out, h, zq))), h


def sincos_2d(dim: int, h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(h*w, dim) fixed 2D sine-cosine position embedding for any grid: dim/2 channels per axis."""
    if dim % 4:
        raise ValueError(f"model.backbone.channels: ViT width {dim} must be a multiple of 4")
    freqs = 1.0 / (10000 ** (torch.arange(dim // 4, device=device, dtype=torch.float32) / (dim // 4)))
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    ay, ax = ys.reshape(-1, 1) * freqs, xs.reshape(-1, 1) * freqs
    return torch.cat([ay.sin(), ay.cos(), ax.sin(), ax.cos()], dim=1).to(dtype)


def _vit_transformer(cfg: BackboneConfig, dim: int) -> Transformer:
    """The encoder's or decoder's stack: biased attention projections and PyTorch's default
    initialisation (as the ViT always had; the priors re-initialise theirs), no rotary positions."""
    if dim % cfg.heads:
        raise ValueError(f"model.backbone.heads: {cfg.heads} heads do not divide ViT width {dim}")
    return Transformer(dim, cfg.blocks_per_stage, cfg.heads, dropout=cfg.dropout, bias=True)


class ViTEncoder(nn.Module):
    """Patchify (patch f; overlapping: kernel 2f, stride f, padding f/2) -> transformer -> linear to latent."""

    def __init__(self, in_channels: int, latent_dim: int, cfg: BackboneConfig):
        super().__init__()
        f, dim = cfg.downsample, cfg.channels[-1]
        if cfg.patch_overlap:
            self.patch_embed = nn.Conv2d(in_channels, dim, 2 * f, stride=f, padding=f // 2)
        else:
            self.patch_embed = nn.Conv2d(in_channels, dim, f, stride=f)
        self.transformer = _vit_transformer(cfg, dim)
        self.proj_out = nn.Linear(dim, latent_dim)
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch_embed(x)
        b, d, h, w = t.shape
        t = t.flatten(2).transpose(1, 2) + sincos_2d(d, h, w, t.device, t.dtype)
        return self.proj_out(self.transformer(t)).transpose(1, 2).reshape(b, -1, h, w)


class SmoothUnit(nn.Module):
    """Full-resolution residual norm-SiLU-conv3x3 (the 'extra conv' that removes ViT grid artefacts)."""
    takes_zq = True

    def __init__(self, channels: int, norm, dropout: float = 0.0):
        super().__init__()
        self.norm = norm(channels)
        self.dropout = nn.Dropout(dropout)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, zq: torch.Tensor | None = None) -> torch.Tensor:
        return x + self.conv(self.dropout(F.silu(call_norm(self.norm, x, zq))))


class ViTDecoder(_DecoderBase):
    """linear in -> transformer on the token grid -> unpatchify to channels[0] at full resolution ->
    len(channels) smoothing units (the decoder stages) -> GN-SiLU-conv3x3 out."""

    def __init__(self, out_channels: int, latent_dim: int, cfg: BackboneConfig):
        super().__init__()
        f, dim, width = cfg.downsample, cfg.channels[-1], cfg.channels[0]
        self.f = f
        self.proj_in = nn.Linear(latent_dim, dim)
        self.transformer = _vit_transformer(cfg, dim)
        if cfg.patch_overlap:   # overlapping patches: each output pixel is written by up to 2x2 tokens
            self.unpatchify = nn.ConvTranspose2d(dim, width, 2 * f, stride=f, padding=f // 2)
        else:                   # linear to f*f*width, then pixel-shuffle
            self.unpatchify = nn.Linear(dim, f * f * width)
        self.stages = nn.ModuleList(SmoothUnit(width, _norm_for(cfg, i, latent_dim), cfg.dropout)
                                    for i in range(len(cfg.channels)))
        self.extra_attention = _extra_attention(cfg, width)
        self.norm_out = _norm_for(cfg, len(cfg.channels) - 1, latent_dim)(width)
        self.conv_out = nn.Conv2d(width, out_channels, 3, padding=1)
        self.hidden_channels = width

    def forward(self, zq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = zq.shape
        t = self.proj_in(zq.flatten(2).transpose(1, 2))
        t = t + sincos_2d(t.shape[-1], h, w, t.device, t.dtype)
        t = self.transformer(t)
        if isinstance(self.unpatchify, nn.ConvTranspose2d):
            x = self.unpatchify(t.transpose(1, 2).reshape(b, -1, h, w))
        else:
            x = F.pixel_shuffle(self.unpatchify(t).transpose(1, 2).reshape(b, -1, h, w), self.f)
        for i, unit in enumerate(self.stages):
            x = unit(x, zq)
            if i == 0:
                for attn in self.extra_attention:
                    x = attn(x)
        return self.conv_out(F.silu(call_norm(self.norm_out, x, zq))), x


def build_image_backbone(in_channels: int, latent_dim: int, cfg: BackboneConfig) -> tuple[nn.Module, nn.Module]:
    """(encoder, decoder) for cfg.kind in resnet2d | convnext | vit; H and W must be multiples of cfg.downsample."""
    if cfg.kind in ("resnet2d", "convnext"):
        return ConvEncoder2d(in_channels, latent_dim, cfg), ConvDecoder2d(in_channels, latent_dim, cfg)
    if cfg.kind == "vit":
        return ViTEncoder(in_channels, latent_dim, cfg), ViTDecoder(in_channels, latent_dim, cfg)
    raise ValueError(f"unknown image backbone {cfg.kind!r}; available: resnet2d, convnext, vit")


# Tensor names of checkpoints saved before nn/transformer.py existed (up to commit bb29660): a ViT
# block held its layers itself, the stack's final norm was the encoder's norm_out (the decoder's
# norm_mid), and a window attention block held its two projections. Only ViT models rename the
# first two: a resnet2d or convnext encoder's norm_out keeps its name.
_VIT_BLOCK = {"norm1": "attn_norm", "qkv": "attn.qkv", "proj": "attn.out", "norm2": "mlp_norm",
              "w12": "mlp.gate_up", "w3": "mlp.down"}
_Rename = tuple[re.Pattern, Callable[[re.Match], str]]
_OLD_VIT: tuple[_Rename, ...] = (
    (re.compile(rf"(encoder|decoder)\.blocks\.(\d+)\.({'|'.join(_VIT_BLOCK)})\."),
     lambda m: f"{m[1]}.transformer.blocks.{m[2]}.{_VIT_BLOCK[m[3]]}."),
    (re.compile(r"encoder\.norm_out\."), lambda m: "encoder.transformer.norm."),
    (re.compile(r"decoder\.norm_mid\."), lambda m: "decoder.transformer.norm."))
_OLD_WINDOW: tuple[_Rename, ...] = (
    (re.compile(r"decoder\.extra_attention\.(\d+)\.(qkv|proj)\."),
     lambda m: f"decoder.extra_attention.{m[1]}.attn.{'out' if m[2] == 'proj' else 'qkv'}."),)

T = TypeVar("T")


def upgrade_keys(state: dict[str, T], cfg: BackboneConfig) -> dict[str, T]:
    """A tokenizer's state dict (or its {name: shape}) with the names older checkpoints of this
    backbone used renamed to today's; today's names pass unchanged."""
    renames = _OLD_WINDOW + (_OLD_VIT if cfg.kind == "vit" else ())

    def renamed(key: str) -> str:
        for pattern, new in renames:
            if m := pattern.match(key):
                return new(m) + key[m.end():]
        return key
    return {renamed(k): v for k, v in state.items()}
