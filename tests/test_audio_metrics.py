"""vqkit.evaluation.audio_metrics: SI-SDR, MR-STFT distance, wideband PESQ and STOI on real speech."""
from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

librosa = pytest.importorskip("librosa")

from vqkit.evaluation.audio_metrics import (MetricUnavailable, audio_pair_metrics, metric_versions,
                                            multi_resolution_stft_distance, pesq_wb, si_sdr, stoi)

ASTERISK_CLIP = Path("/usr/share/asterisk/sounds/en_US_f_Allison/demo-thanks.g722")  # 5.5 s, one speaker
SECONDS = 3.0


def _speech_source(tmp_path_factory) -> Path:
    if ASTERISK_CLIP.is_file():
        pytest.importorskip("av")
        return ASTERISK_CLIP
    if shutil.which("espeak-ng") is None:
        pytest.skip("no real speech: neither Asterisk prompts nor espeak-ng are installed")
    wav = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav),
                    "Thank you for calling. Please listen carefully, as our menu options have changed."],
                   check=True, capture_output=True)
    return wav


@pytest.fixture(scope="module")
def speech_path(tmp_path_factory) -> Path:
    return _speech_source(tmp_path_factory)


def _load(path: Path, rate: int) -> np.ndarray:
    from vqkit.frontends.audio_io import load_audio

    x = load_audio(path, rate).astype(np.float64)
    assert x.size >= SECONDS * rate, "speech clip shorter than 3 s"
    return x[: int(SECONDS * rate)]


@pytest.fixture(scope="module")
def speech(speech_path) -> np.ndarray:
    """3 s of real speech at 16 kHz, float64."""
    return _load(speech_path, 16000)


def add_noise(x: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """x plus white Gaussian noise at exactly `snr_db` relative to x's (zero-mean) power."""
    noise = np.random.default_rng(seed).standard_normal(x.size)
    noise -= noise.mean()
    xc = x - x.mean()
    noise *= math.sqrt((xc @ xc) / (noise @ noise) / 10 ** (snr_db / 10))
    return x + noise


def lowpass(x: np.ndarray, rate: int, cutoff: float = 1000.0) -> np.ndarray:
    from scipy.signal import butter, sosfiltfilt

    return sosfiltfilt(butter(8, cutoff, fs=rate, output="sos"), x)


def reference_si_sdr(est: np.ndarray, ref: np.ndarray) -> float:
    """Textbook SI-SDR (Le Roux et al. 2019, eqs. 2-3), no floor."""
    est, ref = est - est.mean(), ref - ref.mean()
    target = (np.dot(est, ref) / np.dot(ref, ref)) * ref
    return 10 * np.log10(np.sum(target ** 2) / np.sum((est - target) ** 2))


def reference_mrstft(est, ref, resolutions=((512, 128, 512), (1024, 256, 1024), (2048, 512, 2048))):
    """Parallel WaveGAN's MR-STFT loss written with librosa's STFT (periodic Hann, reflect padding)."""
    total = 0.0
    for n_fft, hop, win in resolutions:
        mags = [np.sqrt(np.maximum(np.abs(librosa.stft(s, n_fft=n_fft, hop_length=hop, win_length=win,
                                                       window="hann", center=True, pad_mode="reflect")) ** 2,
                                   1e-7)) for s in (est, ref)]
        x, y = mags
        total += np.linalg.norm(y - x) / np.linalg.norm(y) + np.mean(np.abs(np.log(y) - np.log(x)))
    return total / len(resolutions)


# ---- SI-SDR ------------------------------------------------------------------------------------

def test_si_sdr_identical_is_capped_at_150_db_and_scale_invariant(speech):
    # Documented: identical signals give the 150 dB cap (a finite number, never inf).
    assert si_sdr(speech, speech) == pytest.approx(150.0, abs=1e-6)
    assert si_sdr(0.5 * speech, speech) == pytest.approx(si_sdr(speech, speech), abs=1e-6)
    y = add_noise(speech, 15.0)
    base = si_sdr(y, speech)
    assert si_sdr(0.5 * y, speech) == pytest.approx(base, abs=1e-9)
    assert si_sdr(y, 3.0 * speech) == pytest.approx(base, abs=1e-9)
    assert si_sdr(y + 0.2, speech) == pytest.approx(base, abs=1e-9)  # DC offsets are removed


@pytest.mark.parametrize("snr", [0.0, 10.0, 20.0])
def test_si_sdr_of_white_noise_at_known_snr(speech, snr):
    y = add_noise(speech, snr, seed=int(snr))
    assert si_sdr(y, speech) == pytest.approx(snr, abs=0.5)
    assert si_sdr(y, speech) == pytest.approx(reference_si_sdr(y, speech), abs=1e-9)


def test_si_sdr_matches_textbook_on_random_signals_and_trims_lengths():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal(4000)
    est = 0.7 * ref + 0.4 * rng.standard_normal(4000) + 0.1
    assert si_sdr(est, ref) == pytest.approx(reference_si_sdr(est, ref), abs=1e-9)
    longer = np.concatenate([est, rng.standard_normal(37)])
    assert si_sdr(longer, ref) == pytest.approx(si_sdr(est, ref), abs=1e-12)
    assert si_sdr(-ref, ref) == pytest.approx(150.0)  # a polarity flip is only a (negative) scale


def test_si_sdr_undefined_for_silence():
    with pytest.raises(MetricUnavailable, match="silent"):
        si_sdr(np.ones(1000), np.random.default_rng(0).standard_normal(1000))
    with pytest.raises(MetricUnavailable, match="silent"):
        si_sdr(np.random.default_rng(0).standard_normal(1000), np.zeros(1000))


# ---- MR-STFT -----------------------------------------------------------------------------------

def test_mrstft_zero_for_identical_and_matches_librosa_reference(speech):
    assert multi_resolution_stft_distance(speech, speech) == 0.0
    y = add_noise(speech, 20.0)
    assert multi_resolution_stft_distance(y, speech) == pytest.approx(reference_mrstft(y, speech), rel=1e-6)


def test_mrstft_grows_with_noise_and_ignores_small_shifts(speech):
    d = [multi_resolution_stft_distance(add_noise(speech, snr, seed=3), speech) for snr in (30.0, 15.0, 0.0)]
    assert 0 < d[0] < d[1] < d[2]
    shifted = np.concatenate([np.zeros(3), speech[:-3]])
    d_shift = multi_resolution_stft_distance(shifted, speech)
    assert d_shift < 0.1 * d[0]  # 3 samples late is far closer than even 30 dB white noise


# ---- PESQ / STOI on real speech ----------------------------------------------------------------

def test_pesq_and_stoi_identical_speech(speech):
    assert 4.4 < pesq_wb(speech, speech, 16000) <= 4.65
    assert stoi(speech, speech, 16000) > 0.99
    assert stoi(speech, speech, 16000, extended=True) > 0.99


def test_pesq_and_stoi_drop_for_degraded_speech(speech):
    for degraded in (add_noise(speech, 5.0), lowpass(speech, 16000)):
        assert pesq_wb(degraded, speech, 16000) < 3.0
        assert stoi(degraded, speech, 16000) < 0.93


def test_pesq_and_stoi_fall_monotonically_with_noise(speech):
    noisy = [add_noise(speech, snr, seed=5) for snr in (30.0, 20.0, 10.0)]
    p = [pesq_wb(y, speech, 16000) for y in noisy]
    s = [stoi(y, speech, 16000) for y in noisy]
    assert p[0] > p[1] + 0.3 and p[1] > p[2] + 0.05, p
    assert s[0] > s[1] > s[2], s


def test_pesq_resamples_other_rates_to_16k(speech_path):
    x22 = _load(speech_path, 22050)
    y22 = lowpass(x22, 22050, 2000.0)
    ours = pesq_wb(y22, x22, 22050)
    to16 = [librosa.resample(s, orig_sr=22050, target_sr=16000, res_type="soxr_hq") for s in (y22, x22)]
    assert ours == pytest.approx(pesq_wb(to16[0], to16[1], 16000), abs=0.05)
    assert pesq_wb(x22, x22, 22050) > 4.4
    # and the same degradation applied at 16 kHz scores about the same
    x16 = _load(speech_path, 16000)
    assert ours == pytest.approx(pesq_wb(lowpass(x16, 16000, 2000.0), x16, 16000), abs=0.15)


# ---- failures are reported, not raised ---------------------------------------------------------

def test_too_short_or_silent_raises_metric_unavailable(speech):
    short = speech[:3000]  # 0.19 s
    with pytest.raises(MetricUnavailable, match="0.25 s"):
        pesq_wb(short, short, 16000)
    with pytest.raises(MetricUnavailable):
        stoi(short, short, 16000)
    with pytest.raises(MetricUnavailable, match="silent"):
        pesq_wb(np.zeros_like(speech), speech, 16000)


def test_missing_package_raises_metric_unavailable(speech, monkeypatch):
    monkeypatch.setitem(sys.modules, "pesq", None)  # makes `import pesq` fail
    monkeypatch.setitem(sys.modules, "pystoi", None)
    with pytest.raises(MetricUnavailable, match="pesq.*not installed"):
        pesq_wb(speech, speech, 16000)
    with pytest.raises(MetricUnavailable, match="pystoi.*not installed"):
        stoi(speech, speech, 16000)


def test_audio_pair_metrics_full_and_partial(speech):
    m = audio_pair_metrics(add_noise(speech, 20.0), speech, 16000)
    assert set(m) == {"si_sdr", "mr_stft", "pesq_wb", "stoi"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in m.values())
    assert m["si_sdr"] == pytest.approx(20.0, abs=0.5)

    short = audio_pair_metrics(speech[:3000], speech[:3000], 16000)
    assert short["pesq_wb"] is None and "0.25 s" in short["pesq_wb_unavailable"]
    assert short["stoi"] is None and short["stoi_unavailable"]
    assert short["si_sdr"] == pytest.approx(150.0) and short["mr_stft"] == 0.0

    broken = speech.copy()
    broken[100] = np.nan
    bad = audio_pair_metrics(broken, speech, 16000)
    assert all(bad[k] is None and "non-finite" in bad[f"{k}_unavailable"]
               for k in ("si_sdr", "mr_stft", "pesq_wb", "stoi"))


def test_metric_versions_are_recorded():
    v = metric_versions()
    assert {"pesq", "pystoi", "librosa", "numpy", "scipy", "torch"} <= set(v)
    assert v["numpy"] == np.__version__
    assert v["pesq"] and v["pystoi"]
