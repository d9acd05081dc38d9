"""Log-mel -> waveform, for listening to reconstructions and for audio metrics.

`vocoder_for(mel_cfg)` returns the shipped HiFi-GAN V1 when the mel settings are exactly HiFi-GAN
V1's (the MelConfig defaults) and its weights are installed, and Griffin-Lim otherwise.
Every vocoder maps log-mel (n_mels, T) -> audio (S,) or (B, n_mels, T) -> (B, S), where S is the
number of samples whose MelFrontend has exactly T frames (T * hop_length when center=False).
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from ..config import MelConfig

__all__ = ["Vocoder", "VocoderStream", "HiFiGANVocoder", "GriffinLimVocoder", "vocoder_for", "hifigan_mismatch",
           "HIFIGAN_V1_MEL"]

# The mel convention the shipped HiFi-GAN V1 weights were trained on.
HIFIGAN_V1_MEL = MelConfig(sample_rate=22050, n_fft=1024, hop_length=256, win_length=1024, n_mels=80,
                           fmin=0.0, fmax=8000.0, mel_scale="slaney", filter_norm="slaney", power=1.0,
                           log_clamp=1e-5, center=False)
_COMPARED = ("sample_rate", "n_fft", "hop_length", "win_length", "n_mels", "fmin", "fmax", "mel_scale",
             "filter_norm", "power", "log_clamp", "center")


def _same(a, b) -> bool:
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    return a == b


def hifigan_mismatch(mel_cfg: MelConfig) -> str | None:
    """The first mel setting that differs from HiFi-GAN V1's, as 'name=ours (V1: theirs)', or None."""
    for name in _COMPARED:
        ours, theirs = getattr(mel_cfg, name), getattr(HIFIGAN_V1_MEL, name)
        if not _same(ours, theirs):
            return f"{name}={ours!r} (HiFi-GAN V1 needs {theirs!r})"
    return None


def _samples_for(mel_cfg: MelConfig, frames: int) -> int:
    """Number of samples whose MelFrontend has exactly `frames` frames."""
    return (frames - 1) * mel_cfg.hop_length if mel_cfg.center else frames * mel_cfg.hop_length


class Vocoder:
    """Base: subclasses set `name`, `mel_cfg` and implement `_vocode(log_mel (B, n_mels, T)) -> (B, S)`."""

    name: str = "vocoder"
    mel_cfg: MelConfig

    @property
    def sample_rate(self) -> int:
        return self.mel_cfg.sample_rate

    def _vocode(self, log_mel: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, log_mel: torch.Tensor) -> torch.Tensor:
        log_mel = torch.as_tensor(log_mel)
        if log_mel.dim() not in (2, 3) or log_mel.shape[-2] != self.mel_cfg.n_mels:
            raise ValueError(f"{self.name}: expected log-mel ({self.mel_cfg.n_mels}, T) or "
                             f"(B, {self.mel_cfg.n_mels}, T), got {tuple(log_mel.shape)}")
        single = log_mel.dim() == 2
        audio = self._vocode(log_mel.unsqueeze(0) if single else log_mel)
        return audio[0] if single else audio

    def stream(self, window_frames: int = 2048, context_frames: int = 32) -> "VocoderStream":
        """Log-mel frames in, audio out, for mels of any length: window by window, each window with
        `context_frames` of mel on both sides (HiFi-GAN V1 depends on 13 frames each way, so its
        windows give what one pass over the whole mel gives; Griffin-Lim only approximately)."""
        return VocoderStream(self, window_frames, context_frames)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, sample_rate={self.sample_rate})"


class VocoderStream:
    """push(log_mel (n_mels, t) or (B, n_mels, t)) -> the audio determined so far; flush() -> the rest."""

    def __init__(self, vocoder: Vocoder, window_frames: int, context_frames: int):
        from fractions import Fraction

        from ..nn.streaming import WindowedRunner

        self.vocoder, self.single = vocoder, True
        self.runner = WindowedRunner(vocoder._vocode, Fraction(vocoder.mel_cfg.hop_length), context_frames,
                                     context_frames, 1, window_frames)

    def push(self, log_mel: torch.Tensor) -> torch.Tensor:
        self.single = log_mel.dim() == 2
        return self._join(self.runner.push(log_mel.unsqueeze(0) if self.single else log_mel))

    def flush(self) -> torch.Tensor:
        return self._join(self.runner.flush())

    def _join(self, parts: list[torch.Tensor]) -> torch.Tensor:
        audio = torch.cat(parts, -1) if parts else torch.zeros(1, 0)
        return audio[0] if self.single else audio


@functools.lru_cache(maxsize=None)
def _cached_hifigan(weights: str, device: str):
    from .hifigan import load_hifigan

    return load_hifigan(weights, device=device)


class HiFiGANVocoder(Vocoder):
    """Shipped HiFi-GAN V1 generator; the weights load on first use and are shared within the process.

    Long inputs run in chunks of `chunk_frames` with `context_frames` of extra mel on each side that is
    generated and then discarded, so the seams see the same receptive field as a whole-clip pass.
    """

    def __init__(self, weights: str = "universal", device: str | torch.device = "cpu",
                 chunk_frames: int = 2048, context_frames: int = 32):
        if chunk_frames < 1 or context_frames < 0:
            raise ValueError("chunk_frames must be >= 1 and context_frames >= 0")
        self.weights = weights
        self.device = str(torch.device(device))
        self.chunk_frames = chunk_frames
        self.context_frames = context_frames
        self.mel_cfg = HIFIGAN_V1_MEL
        self.name = f"hifigan-{weights}"

    @property
    def generator(self):
        return _cached_hifigan(self.weights, self.device)

    def _vocode(self, log_mel: torch.Tensor) -> torch.Tensor:
        gen = self.generator
        hop = gen.hop_length
        x = log_mel.to(self.device, torch.float32)
        frames = x.shape[-1]
        with torch.inference_mode():
            if frames <= self.chunk_frames + 2 * self.context_frames:
                return gen(x).cpu()
            pieces = []
            for start in range(0, frames, self.chunk_frames):
                stop = min(start + self.chunk_frames, frames)
                lo, hi = max(0, start - self.context_frames), min(frames, stop + self.context_frames)
                audio = gen(x[..., lo:hi])
                pieces.append(audio[..., (start - lo) * hop:(stop - lo) * hop])
            return torch.cat(pieces, dim=-1).cpu()


class GriffinLimVocoder(Vocoder):
    """Griffin-Lim through MelFrontend(mel_cfg).griffin_lim: any mel setting, lower quality, slower."""

    name = "griffin-lim"

    def __init__(self, mel_cfg: MelConfig | None = None, n_iter: int = 32):
        from ..frontends.mel import MelFrontend

        self.mel_cfg = mel_cfg or MelConfig()
        self.n_iter = n_iter
        self.frontend = MelFrontend(self.mel_cfg)

    def _vocode(self, log_mel: torch.Tensor) -> torch.Tensor:
        c = self.mel_cfg
        frames = log_mel.shape[-1]
        target = _samples_for(c, frames)
        out = []
        for item in log_mel.detach().float().cpu():
            audio = self.frontend.griffin_lim(item, n_iter=self.n_iter)
            if not c.center:
                # librosa's frames are centred on t*hop; ours (reflect-padded, center=False) on t*hop + hop/2.
                audio = F.pad(audio, (c.hop_length // 2, 0))
            audio = audio[:target]
            out.append(F.pad(audio, (0, target - audio.shape[-1])))
        return torch.stack(out).clamp(-1.0, 1.0)


def vocoder_for(mel_cfg: MelConfig | None = None, prefer: str = "auto", device: str | torch.device = "cpu",
                weights: str = "universal") -> Vocoder:
    """The best vocoder for `mel_cfg`.

    prefer="auto": HiFi-GAN when every mel setting equals HiFi-GAN V1's and the weights are installed,
    else Griffin-Lim. prefer="griffin-lim": always Griffin-Lim. prefer="hifigan": HiFi-GAN or an error
    (ValueError naming the first mismatching setting; FileNotFoundError when the weights are missing).
    """
    mel_cfg = mel_cfg or MelConfig()
    if prefer not in ("auto", "hifigan", "griffin-lim"):
        raise ValueError(f"prefer must be 'auto', 'hifigan' or 'griffin-lim', got {prefer!r}")
    if prefer == "griffin-lim":
        return GriffinLimVocoder(mel_cfg)
    from .hifigan import find_shipped_weights

    mismatch = hifigan_mismatch(mel_cfg)
    if prefer == "hifigan":
        if mismatch:
            raise ValueError(f"HiFi-GAN V1 cannot vocode these mels: {mismatch}")
        find_shipped_weights(weights)  # FileNotFoundError with the install hint
        return HiFiGANVocoder(weights, device=device)
    if mismatch is None:
        try:
            find_shipped_weights(weights)
        except FileNotFoundError:
            return GriffinLimVocoder(mel_cfg)
        return HiFiGANVocoder(weights, device=device)
    return GriffinLimVocoder(mel_cfg)
