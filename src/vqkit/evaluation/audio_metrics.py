"""Objective audio metrics for reconstructions, in the conventions published numbers use.

Every function takes mono float arrays (numpy or torch, shape (S,)) at one sample rate, `estimate`
first and `reference` second. Where two lengths differ (vocoders often return a few samples more or
less), both are trimmed to the shorter one. Computation is in float64.

    si_sdr                          scale-invariant SDR in dB (Le Roux et al., "SDR - half-baked or
                                    well done?", ICASSP 2019); higher is better
    multi_resolution_stft_distance  spectral convergence + log-magnitude L1, averaged over STFT
                                    resolutions (Parallel WaveGAN / auraloss); lower is better, 0 = equal
    pesq_wb                         wideband PESQ, ITU-T P.862.2 MOS-LQO (`pesq` package) at 16 kHz;
                                    about 1.0 (bad) .. 4.64 (transparent)
    stoi                            STOI (Taal et al. 2011) or extended STOI (Jensen & Taal 2016) via
                                    `pystoi`, which resamples to 10 kHz itself; 0 .. 1

SI-SDR and the MR-STFT distance compare waveforms / magnitudes frame by frame, so they punish any
time shift or phase change (Griffin-Lim output scores badly on SI-SDR however good it sounds);
report them against the vocoded original as well as the source audio. A metric that cannot be
computed for a pair (package missing, signal too short or silent, non-finite samples) raises
MetricUnavailable with the reason; `audio_pair_metrics` records that reason instead of failing.
"""
from __future__ import annotations

import importlib.metadata
import math
import warnings

import numpy as np

PESQ_RATE = 16000                 # P.862.2 wideband is defined at 16 kHz
MIN_PESQ_SECONDS = 0.25           # the pesq C code needs more than 1/4 s; shorter is refused up front
SI_SDR_MAX_DB = 150.0             # residual-energy floor: identical signals give 150 dB, not inf
MRSTFT_RESOLUTIONS = ((512, 128, 512), (1024, 256, 1024), (2048, 512, 2048))  # (n_fft, hop, win)
MRSTFT_POWER_FLOOR = 1e-7         # as Parallel WaveGAN: |STFT| = sqrt(max(re^2 + im^2, 1e-7))
_INSTALL_HINT = "pip install 'vqkit[audio]'"


class MetricUnavailable(Exception):
    """A metric that cannot be computed for this pair; str(err) says why."""


def _mono(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().double().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        arr = np.squeeze(arr)
        if arr.ndim != 1:
            raise ValueError(f"{name}: expected mono audio of shape (samples,), got {np.shape(x)}")
    if arr.size == 0:
        raise MetricUnavailable(f"{name} is empty")
    if not np.isfinite(arr).all():
        raise MetricUnavailable(f"{name} has {int((~np.isfinite(arr)).sum())} non-finite samples")
    return np.ascontiguousarray(arr)


def _pair(estimate, reference) -> tuple[np.ndarray, np.ndarray]:
    est, ref = _mono(estimate, "estimate"), _mono(reference, "reference")
    n = min(est.size, ref.size)
    return est[:n], ref[:n]


# ---- waveform metrics --------------------------------------------------------------------------

def si_sdr(estimate, reference) -> float:
    """Scale-invariant SDR in dB. Both signals are made zero-mean; the reference is scaled by
    alpha = <est, ref> / ||ref||^2 to give target = alpha * ref and residual = est - target, and
    SI-SDR = 10 log10(||target||^2 / ||residual||^2).

    The residual energy is floored at 1e-15 * ||est||^2 (both terms get the floor), which keeps the
    value scale-invariant and within [-150, 150] dB: identical signals (or scaled copies) give
    150 dB instead of inf, so metrics.json stays valid JSON. Raises MetricUnavailable
    for a constant (silent) reference or estimate, for which SI-SDR is undefined.
    """
    est, ref = _pair(estimate, reference)
    est, ref = est - est.mean(), ref - ref.mean()
    ref_energy = float(ref @ ref)
    est_energy = float(est @ est)
    if ref_energy == 0.0 or est_energy == 0.0:
        which = "reference" if ref_energy == 0.0 else "estimate"
        raise MetricUnavailable(f"SI-SDR is undefined: the {which} is constant (silent)")
    alpha = float(est @ ref) / ref_energy
    target = alpha * ref
    residual = est - target
    floor = est_energy * 10.0 ** (-SI_SDR_MAX_DB / 10.0)
    return float(10.0 * math.log10((float(target @ target) + floor) / (float(residual @ residual) + floor)))


def _stft_magnitude(x, n_fft: int, hop: int, win: int):
    import torch

    window = torch.hann_window(win, dtype=torch.float64)
    spec = torch.stft(x, n_fft, hop_length=hop, win_length=win, window=window, center=True,
                      pad_mode="reflect", return_complex=True)
    return torch.sqrt(torch.clamp(spec.real ** 2 + spec.imag ** 2, min=MRSTFT_POWER_FLOOR))


def multi_resolution_stft_distance(estimate, reference, resolutions=MRSTFT_RESOLUTIONS) -> float:
    """Multi-resolution STFT distance as in Parallel WaveGAN (Yamamoto et al. 2020, the `auraloss`
    MultiResolutionSTFTLoss with its default weights), with X = |STFT(estimate)|, Y = |STFT(ref)|:

        per (n_fft, hop, win):  ||Y - X||_F / ||Y||_F  +  mean |log Y - log X|
        result:                 the mean of that over the resolutions

    Hann window of length `win`, centred frames with reflect padding (torch.stft defaults), and
    magnitudes sqrt(max(re^2 + im^2, 1e-7)) as in Parallel WaveGAN's code, i.e. the 1e-7 floor is
    on the power, so log-magnitudes are floored at log(sqrt(1e-7)) ~ -8.06 (digital silence does
    not dominate). Defaults are auraloss's resolutions (512/128, 1024/256, 2048/512). Unitless;
    0 for identical signals. Not scale-invariant: a louder copy is at a distance.
    """
    import torch

    est, ref = _pair(estimate, reference)
    longest = max(int(r[0]) for r in resolutions)
    if est.size <= longest // 2:
        raise MetricUnavailable(f"MR-STFT needs more than {longest // 2} samples, got {est.size}")
    x, y = torch.from_numpy(est), torch.from_numpy(ref)
    total = 0.0
    for n_fft, hop, win in resolutions:
        n_fft, hop, win = int(n_fft), int(hop), int(win)
        xm, ym = _stft_magnitude(x, n_fft, hop, win), _stft_magnitude(y, n_fft, hop, win)
        sc = torch.linalg.norm(ym - xm) / torch.linalg.norm(ym)
        log_mag = (torch.log(ym) - torch.log(xm)).abs().mean()
        total += float(sc + log_mag)
    return total / len(resolutions)


# ---- perceptual / intelligibility metrics ------------------------------------------------------

def _resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return x
    import librosa

    return librosa.resample(x, orig_sr=rate, target_sr=target, res_type="soxr_hq")


def pesq_wb(estimate, reference, sample_rate: int) -> float:
    """Wideband PESQ (ITU-T P.862.2, MOS-LQO) via the `pesq` package. Inputs at another rate are
    resampled to 16 kHz with librosa (soxr_hq) first, each signal on its own. Raises
    MetricUnavailable when `pesq` is not installed, the (trimmed) pair is shorter than 0.25 s, a
    signal is silent, or PESQ finds no utterance or otherwise fails."""
    try:
        from pesq import PesqError, pesq
    except ImportError:
        raise MetricUnavailable(f"the 'pesq' package is not installed ({_INSTALL_HINT})") from None
    est, ref = _pair(estimate, reference)
    if est.size < MIN_PESQ_SECONDS * sample_rate:
        raise MetricUnavailable(f"PESQ needs at least {MIN_PESQ_SECONDS} s of audio, got "
                                f"{est.size / sample_rate:.3f} s")
    for name, sig in (("reference", ref), ("estimate", est)):
        if not np.abs(sig).max() > 0:
            raise MetricUnavailable(f"PESQ is undefined: the {name} is silent")
    est, ref = _resample(est, sample_rate, PESQ_RATE), _resample(ref, sample_rate, PESQ_RATE)
    n = min(est.size, ref.size)
    try:
        score = pesq(PESQ_RATE, ref[:n], est[:n], "wb")
    except PesqError as e:
        raise MetricUnavailable(f"PESQ failed: {type(e).__name__}: {e}") from None
    return float(score)


def stoi(estimate, reference, sample_rate: int, extended: bool = False) -> float:
    """STOI (or extended STOI) via `pystoi`, given the native rate (pystoi resamples to 10 kHz).
    Raises MetricUnavailable when `pystoi` is missing or too little non-silent speech is left
    (pystoi would warn and return 1e-5, which must not be averaged as a real score)."""
    try:
        from pystoi import stoi as _pystoi
    except ImportError:
        raise MetricUnavailable(f"the 'pystoi' package is not installed ({_INSTALL_HINT})") from None
    est, ref = _pair(estimate, reference)
    name = "ESTOI" if extended else "STOI"
    if not np.abs(ref).max() > 0:
        raise MetricUnavailable(f"{name} is undefined: the reference is silent")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            score = _pystoi(ref, est, int(sample_rate), extended=extended)
        except Exception as e:  # e.g. too short to resample or frame at all
            raise MetricUnavailable(f"{name} failed: {type(e).__name__}: {e}") from None
    for w in caught:
        if "Not enough STFT frames" in str(w.message):
            raise MetricUnavailable(f"{name} needs more non-silent speech (about 0.4 s at least): "
                                    f"{w.message}")
    if not math.isfinite(score):
        raise MetricUnavailable(f"{name} is not finite ({score})")
    return float(score)


# ---- bookkeeping -------------------------------------------------------------------------------

def metric_versions() -> dict:
    """Versions of the packages the numbers depend on (None where not installed), for reports."""
    versions = {}
    for pkg in ("pesq", "pystoi", "librosa", "soxr", "numpy", "scipy", "torch"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return versions


def audio_pair_metrics(estimate, reference, sample_rate: int) -> dict:
    """All four metrics for one pair: {"si_sdr", "mr_stft", "pesq_wb", "stoi"}. A metric that cannot
    be computed is None, with its reason under "<name>_unavailable"; this never raises
    MetricUnavailable (a ValueError for a non-mono array still does: that is a caller bug)."""
    out: dict = {}
    jobs = {
        "si_sdr": lambda: si_sdr(estimate, reference),
        "mr_stft": lambda: multi_resolution_stft_distance(estimate, reference),
        "pesq_wb": lambda: pesq_wb(estimate, reference, sample_rate),
        "stoi": lambda: stoi(estimate, reference, sample_rate),
    }
    for name, fn in jobs.items():
        try:
            out[name] = fn()
        except MetricUnavailable as e:
            out[name] = None
            out[f"{name}_unavailable"] = str(e)
    return out
