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

    @property
    def edge_pad(self) -> int:
        """Reflect padding at each end of the signal: n_fft/2 when centred, (n_fft - hop)/2 (HiFi-GAN) if not."""
        c = self.cfg
        return c.n_fft // 2 if c.center else (c.n_fft - c.hop_length) // 2

    @property
    def latency_samples(self) -> int:
        """From the first sample of a frame's hop to the last sample its window needs: a frame
        can be computed (n_fft + hop) / 2 samples after its hop interval starts."""
        return (self.cfg.n_fft + self.cfg.hop_length) // 2

    def num_frames(self, num_samples: int) -> int:
        c = self.cfg
        return max(0, (num_samples + 2 * self.edge_pad - c.n_fft) // c.hop_length + 1)

    def magnitude(self, audio: torch.Tensor) -> torch.Tensor:
        p = self.edge_pad
        shape = audio.shape[:-1]
        x = audio.reshape(-1, audio.shape[-1]).float()
        x = F.pad(x.unsqueeze(1), (p, p), mode="reflect").squeeze(1)
        return self._spectrum(x).reshape(*shape, -1, self.num_frames(audio.shape[-1]))

    def _spectrum(self, padded: torch.Tensor) -> torch.Tensor:
        """(B, samples) already padded -> magnitude (B, n_fft/2 + 1, frames): one frame per hop."""
        c = self.cfg
        spec = torch.stft(padded, c.n_fft, hop_length=c.hop_length, win_length=c.win_length, window=self.window,
                          center=False, normalized=False, onesided=True, return_complex=True)
        power = spec.real.pow(2) + spec.imag.pow(2) + c.mag_eps   # HiFi-GAN: + 1e-9
        return power if c.power == 2.0 else torch.sqrt(power)

    def log_mel(self, magnitude: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.clamp(torch.matmul(self.filterbank, magnitude), min=self.cfg.log_clamp))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.shape[-1] <= self.edge_pad:
            raise ValueError(f"audio of {audio.shape[-1]} samples is too short for n_fft={self.cfg.n_fft}")
        return self.log_mel(self.magnitude(audio))

    def stream(self) -> "MelStream":
        """A stream over this frontend: push samples, get each frame as soon as its window is complete."""
        return MelStream(self)

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


class MelStream:
    """Audio samples in, log-mel frames out, equal to MelFrontend on the whole signal.

    `push(samples)` ((samples,) or (B, samples)) returns the frames whose windows are complete;
    `flush()` adds the reflect padding of the signal's end and returns the rest. The start's reflect
    padding needs the first edge_pad + 1 samples; until then nothing is returned.
    """

    def __init__(self, frontend: MelFrontend):
        self.fe = frontend
        self.buf: torch.Tensor | None = None   # padded signal not yet consumed by whole frames
        self.tail: torch.Tensor | None = None  # the signal's last edge_pad + 1 samples (for the end's padding)
        self.started = self.done = False
        self.samples = 0

    def push(self, audio: torch.Tensor) -> torch.Tensor:
        if self.done:
            raise RuntimeError("this stream was flushed; start a new one")
        audio = audio.float()
        p = self.fe.edge_pad
        self.samples += audio.shape[-1]
        self.buf = audio if self.buf is None else torch.cat([self.buf, audio], -1)
        self.tail = self.buf[..., -(p + 1):] if self.tail is None else torch.cat([self.tail, audio], -1)[..., -(p + 1):]
        if not self.started and self.buf.shape[-1] > p:
            self.buf = torch.cat([self.buf[..., 1: p + 1].flip(-1), self.buf], -1)
            self.started = True
        return self._frames()

    def flush(self) -> torch.Tensor:
        if self.done:
            raise RuntimeError("this stream was flushed already")
        self.done = True
        p = self.fe.edge_pad
        if not self.started:
            raise ValueError(f"audio of {self.samples} samples is too short for n_fft={self.fe.cfg.n_fft}")
        self.buf = torch.cat([self.buf, self.tail[..., :-1].flip(-1)[..., :p]], -1)
        return self._frames()

    def _frames(self) -> torch.Tensor:
        c = self.fe.cfg
        n = (self.buf.shape[-1] - c.n_fft) // c.hop_length + 1 if self.started else 0
        if n <= 0:
            shape = self.buf.shape[:-1] if self.buf is not None else ()
            return torch.zeros(*shape, c.n_mels, 0)
        shape = self.buf.shape[:-1]
        used = self.buf[..., : (n - 1) * c.hop_length + c.n_fft].reshape(-1, (n - 1) * c.hop_length + c.n_fft)
        self.buf = self.buf[..., n * c.hop_length:]
        return self.fe.log_mel(self.fe._spectrum(used)).reshape(*shape, c.n_mels, n)
