"""The mel frontend against librosa's own STFT + filterbank, for each convention we support."""
from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from vqkit.config import MelConfig
from vqkit.frontends.mel import MelFrontend

CONVENTIONS = {
    "hifigan-v1": MelConfig(),
    "mqgan-44k": MelConfig(sample_rate=44100, n_fft=2048, hop_length=512, win_length=2048, n_mels=128,
                           fmax=22050.0, mel_scale="htk", filter_norm=None, mag_eps=0.0),
    "centered-power": MelConfig(sample_rate=16000, n_fft=512, hop_length=160, win_length=400, n_mels=64,
                                fmin=50.0, fmax=7600.0, power=2.0, center=True, log_clamp=1e-7),
}


def librosa_log_mel(audio: np.ndarray, c: MelConfig) -> np.ndarray:
    if not c.center:
        pad = (c.n_fft - c.hop_length) // 2
        audio = np.pad(audio, (pad, pad), mode="reflect")
    spec = librosa.stft(audio, n_fft=c.n_fft, hop_length=c.hop_length, win_length=c.win_length,
                        window="hann", center=c.center, pad_mode="reflect")
    mag = (np.abs(spec) ** 2 + c.mag_eps) ** (c.power / 2)
    fb = librosa.filters.mel(sr=c.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax,
                             htk=c.mel_scale == "htk", norm=c.filter_norm)
    return np.log(np.clip(fb @ mag, c.log_clamp, None))


def speech_or_chirp(sr: int, seconds: float = 1.5) -> np.ndarray:
    """Real speech when the demo corpus source is installed, else a chirp with noise."""
    from vqkit.data.demo import asterisk_dir
    from vqkit.frontends.audio_io import load_audio

    d = asterisk_dir()
    if d is not None:
        files = sorted(d.rglob("*.g722"))
        audio = load_audio(files[len(files) // 2], sr)
        if len(audio) > sr // 2:
            return audio[: int(seconds * sr)]
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(0)
    return (0.5 * np.sin(2 * np.pi * (200 + 1500 * t) * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(CONVENTIONS))
def test_mel_matches_librosa(name):
    c = CONVENTIONS[name]
    audio = speech_or_chirp(c.sample_rate)
    ours = MelFrontend(c)(torch.from_numpy(audio)).numpy()
    ref = librosa_log_mel(audio, c)
    assert ours.shape == ref.shape == (c.n_mels, MelFrontend(c).num_frames(len(audio)))
    # Linear mel: equal up to float32 FFT round-off, relative to the loudest bin.
    lin_err = np.abs(np.exp(ours) - np.exp(ref)).max() / np.exp(ref).max()
    assert lin_err < 1e-5, lin_err
    # Log mel: equal wherever the energy is clear of the clamp floor (at the floor, round-off of
    # ~1e-8 in an empty band changes the log by a lot and means nothing).
    audible = ref > np.log(c.log_clamp) + 5
    assert audible.mean() > 0.3
    assert np.abs(ours - ref)[audible].max() < 1e-3


def test_mag_eps_is_honoured():
    audio = torch.from_numpy(speech_or_chirp(22050, 0.5))
    with_eps, without = MelFrontend(MelConfig())(audio), MelFrontend(MelConfig(mag_eps=0.0))(audio)
    assert (with_eps >= without - 1e-6).all() and (with_eps - without).max() > 1e-3


def test_batched_equals_single_and_frame_rate():
    fe = MelFrontend()
    audio = torch.from_numpy(speech_or_chirp(22050, 1.0))
    batch = fe(torch.stack([audio, audio.flip(0)]))
    assert torch.allclose(batch[0], fe(audio), atol=1e-5)
    assert fe.frames_per_second == pytest.approx(22050 / 256)
    assert batch.shape[-1] == fe.num_frames(len(audio)) == len(audio) // 256


def test_silence_maps_to_the_clamp_and_short_audio_is_refused():
    fe = MelFrontend()
    mel = fe(torch.zeros(22050))
    assert torch.allclose(mel, torch.full_like(mel, fe.silence_level), atol=1e-3)
    with pytest.raises(ValueError, match="too short"):
        fe(torch.zeros(100))
