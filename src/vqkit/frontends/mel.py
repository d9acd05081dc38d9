"""Audio <-> log-mel spectrogram.

Default settings are HiFi-GAN V1's (see MelConfig), so mels made here can be vocoded by the shipped
HiFi-GAN weights. The filterbank comes from librosa; the STFT is torch.stft, so the frontend runs
on any device and inside a DataLoader worker.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import MelConfig


class MelFrontend(nn.Module):
    """`forward(audio)` maps waveforms (..., samples) in [-1, 1] to log-mel (..., n_mels, frames)."""

    def __init__(self, cfg: MelConfig | None = None):
        super().__init__()
        import librosa  # audio extra; imported lazily so image-only installs do not need it

        self.cfg = cfg = cfg or MelConfig()
        cfg.validate()
        fb = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin,
                                 fmax=cfg.fmax, htk=cfg.mel_scale == "htk", norm=cfg.filter_norm)
        self.register_buffer("filterbank", torch.from_numpy(fb).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(cfg.win_length), persistent=False)

    @property
    def frames_per_second(self) -> float:
        return self.cfg.frames_per_second

    @property
    def silence_level(self) -> float:
        """Log-mel value of digital silence: what padded frames hold."""
        return float(np.log(self.cfg.log_clamp))

    def num_frames(self, num_samples: int) -> int:
        c = self.cfg
        if c.center:
            return num_samples // c.hop_length + 1
        padded = num_samples + 2 * ((c.n_fft - c.hop_length) // 2)
        return max(0, (padded - c.n_fft) // c.hop_length + 1)

    def magnitude(self, audio: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        shape = audio.shape[:-1]
        x = audio.reshape(-1, audio.shape[-1]).float()
        if not c.center:
            pad = (c.n_fft - c.hop_length) // 2
            x = F.pad(x.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
        spec = torch.stft(x, c.n_fft, hop_length=c.hop_length, win_length=c.win_length, window=self.window,
                          center=c.center, pad_mode="reflect", normalized=False, onesided=True,
                          return_complex=True)
        power = spec.real.pow(2) + spec.imag.pow(2) + c.mag_eps   # HiFi-GAN: + 1e-9
        mag = power if c.power == 2.0 else torch.sqrt(power)
        return mag.reshape(*shape, *mag.shape[-2:])

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.shape[-1] <= (self.cfg.n_fft - self.cfg.hop_length) // 2:
            raise ValueError(f"audio of {audio.shape[-1]} samples is too short for n_fft={self.cfg.n_fft}")
        mel = torch.matmul(self.filterbank, self.magnitude(audio))
        return torch.log(torch.clamp(mel, min=self.cfg.log_clamp))

    def griffin_lim(self, log_mel: torch.Tensor, n_iter: int = 32) -> torch.Tensor:
        """Invert log-mel to audio with librosa's Griffin-Lim: works for any mel setting, lower quality."""
        import librosa

        c = self.cfg
        mel = np.exp(log_mel.detach().float().cpu().numpy())
        stft = librosa.feature.inverse.mel_to_stft(
            mel, sr=c.sample_rate, n_fft=c.n_fft, power=c.power, fmin=c.fmin, fmax=c.fmax,
            htk=c.mel_scale == "htk", norm=c.filter_norm)
        # A fixed initial phase: the same mel always gives the same audio (reports are reproducible).
        audio = librosa.griffinlim(stft, n_iter=n_iter, hop_length=c.hop_length, win_length=c.win_length,
                                   center=True, random_state=0)
        return torch.from_numpy(np.ascontiguousarray(audio)).float()
