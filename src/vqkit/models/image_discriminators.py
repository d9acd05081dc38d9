"""Image discriminators: taming's PatchGAN and a StyleGAN2-style residual discriminator (SeQ-GAN).

Same convention as MelDiscriminators: `heads` (ModuleList; each head owns its LeCam EMA buffers
lecam_real / lecam_fake, so that state is saved with the weights), `head_weights`, and
forward(x (B, C, H, W)) -> [(logits, feature_maps), ...] per head, as losses.gan expects.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ..config import DiscriminatorConfig


def _lecam_buffers(module: nn.Module) -> None:
    module.register_buffer("lecam_real", torch.zeros(()))   # EMA of mean D(real)
    module.register_buffer("lecam_fake", torch.zeros(()))   # EMA of mean D(fake)


class PatchGANHead(nn.Module):
    """taming's NLayerDiscriminator: 4x4 convs + LeakyReLU(0.2), every layer but the last of
    `channels` with stride 2, the last with stride 1, then a 4x4 conv to a 1-channel logit map.
    patch_channels=[64, 128, 256, 512] is taming's default (n_layers=3, 70x70 receptive field).

    Normalisation: taming uses BatchNorm; here every conv is spectrally normalised and there is no
    norm layer. BatchNorm breaks at batch size 1, needs SyncBatchNorm under DDP and couples the
    samples of a batch (real and fake batches get different statistics); spectral norm is per-sample,
    bounds D's Lipschitz constant (stabler hinge training) and matches the mel discriminators."""

    def __init__(self, in_channels: int, channels: list[int]):
        super().__init__()
        n, cin, convs = len(channels), in_channels, []
        for i, c in enumerate(channels):
            stride = 2 if i < max(n - 1, 1) else 1
            convs.append(spectral_norm(nn.Conv2d(cin, c, 4, stride=stride, padding=1)))
            cin = c
        self.convs = nn.ModuleList(convs)
        self.out = spectral_norm(nn.Conv2d(cin, 1, 4, stride=1, padding=1))
        _lecam_buffers(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            feats.append(x)
        return self.out(x), feats


def _blur_down(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """StyleGAN2's [1, 3, 3, 1] low-pass then stride 2: halves H and W exactly, without aliasing."""
    c = x.shape[1]
    return F.conv2d(x, kernel.to(x.dtype).expand(c, 1, 4, 4), stride=2, padding=1, groups=c)


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv0 = nn.Conv2d(cin, cin, 3, padding=1)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.conv0(x), 0.2)
        h = _blur_down(F.leaky_relu(self.conv1(h), 0.2), kernel)
        # 1/sqrt(2) keeps the variance of the sum of two branches at that of one.
        return (h + self.skip(_blur_down(x, kernel))) / math.sqrt(2)


def minibatch_stddev(x: torch.Tensor, group: int = 4) -> torch.Tensor:
    """Append one channel: the feature std across a group of samples (StyleGAN), averaged over
    channels and positions. The group is the largest divisor of B up to `group` (1 at batch 1:
    the channel is then ~0, which is what a single sample can say about diversity)."""
    b, c, h, w = x.shape
    g = min(group, b)
    while b % g:
        g -= 1
    y = x.float().reshape(g, b // g, c, h, w)
    y = (y.var(0, unbiased=False) + 1e-8).sqrt().mean((1, 2, 3))      # (b // g,)
    y = y.repeat(g).reshape(b, 1, 1, 1).expand(b, 1, h, w).to(x.dtype)  # sample i <- group i % (b // g)
    return torch.cat([x, y], 1)


class StyleGANHead(nn.Module):
    """StyleGAN2-style residual discriminator: 1x1 from-RGB, one residual downsampling block per
    width in `channels` (inputs whose sides are multiples of 2^len(channels)), minibatch stddev,
    a 3x3 conv, then dense layers to one logit per image. The last map is average-pooled to 4x4
    before the dense layers so one set of weights serves every input size (32, 64, 256, ...)."""

    def __init__(self, in_channels: int, channels: list[int], mbstd_group: int = 4):
        super().__init__()
        self.from_rgb = nn.Conv2d(in_channels, channels[0], 1)
        cin, blocks = channels[0], []
        for c in channels:
            blocks.append(_ResBlock(cin, c))
            cin = c
        self.blocks = nn.ModuleList(blocks)
        self.mbstd_group = mbstd_group
        self.final_conv = nn.Conv2d(cin + 1, cin, 3, padding=1)
        self.fc = nn.Linear(cin * 16, cin)
        self.out = nn.Linear(cin, 1)
        k = torch.tensor([1.0, 3.0, 3.0, 1.0])
        self.register_buffer("blur", (k[:, None] * k[None, :] / 64).view(1, 1, 4, 4), persistent=False)
        _lecam_buffers(self)
        # PyTorch's default init shrinks the signal ~3x per layer (initial logits ~1e-5, slow start);
        # He init for LeakyReLU(0.2) keeps the scale, as StyleGAN's equalised learning rate does.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, a=0.2, nonlinearity="leaky_relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = F.leaky_relu(self.from_rgb(x), 0.2)
        feats = []
        for block in self.blocks:
            x = block(x, self.blur)
            feats.append(x)
        x = F.leaky_relu(self.final_conv(minibatch_stddev(x, self.mbstd_group)), 0.2)
        feats.append(x)
        x = F.adaptive_avg_pool2d(x, 4).flatten(1)
        return self.out(F.leaky_relu(self.fc(x), 0.2)), feats


class ImageDiscriminator(nn.Module):
    """A single-head container with the MelDiscriminators interface."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.heads = nn.ModuleList([head])
        self.head_weights = [1.0]

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        return [head(x) for head in self.heads]


class PatchGAN(ImageDiscriminator):
    """forward(x) -> [(logit map (B, 1, H', W'), features)]."""

    def __init__(self, in_channels: int, channels: list[int]):
        super().__init__(PatchGANHead(in_channels, list(channels)))


class StyleGANDiscriminator(ImageDiscriminator):
    """forward(x) -> [(logits (B, 1), features)]."""

    def __init__(self, in_channels: int, channels: list[int], mbstd_group: int = 4):
        super().__init__(StyleGANHead(in_channels, list(channels), mbstd_group))


def build_image_discriminator(cfg: DiscriminatorConfig, in_channels: int) -> ImageDiscriminator:
    if cfg.kind == "patchgan":
        return PatchGAN(in_channels, cfg.patch_channels)
    if cfg.kind == "stylegan":
        return StyleGANDiscriminator(in_channels, cfg.patch_channels)
    raise ValueError(f"discriminator.kind: {cfg.kind!r} is not an image discriminator; "
                     "available: patchgan, stylegan")
