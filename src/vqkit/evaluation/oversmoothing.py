"""Measures of oversmoothing: how much of the original's temporal detail a reconstructed log-mel
keeps. MSE-trained decoders regress to the conditional mean, which shrinks frame-to-frame
variation; these numbers show it where mel L1 cannot (L1 rewards the blur).

- gv_ratio: global variance (Toda & Tokuda, "A speech parameter generation algorithm considering
  global variance for HMM-based speech synthesis", IEICE Trans. Inf. & Syst. E90-D(5), 2007): the
  variance over time of each mel bin's trajectory, reconstruction / original, as a geometric mean
  over bins and frames. 1 = as varied as the original; below 1 = oversmoothed.
- flux_ratio: spectral flux (mean absolute frame-to-frame change of the log-mel, a classic measure
  of spectral change, e.g. Scheirer & Slaney, ICASSP 1997), reconstruction / original.
- ms_distance_db: modulation spectrum distance (Takamichi et al., "Postfilters to modify the
  modulation spectrum for statistical parametric speech synthesis", IEEE/ACM TASLP 24(4), 2016):
  the power spectrum of each bin's (mean-removed) trajectory over 128-frame Hann windows, averaged
  over the corpus, in dB; RMS difference between reconstruction and original over bins and
  modulation frequencies. 0 = identical temporal modulation.

Everything accumulates as sums, so a corpus of any size is measured in bounded memory.
"""
from __future__ import annotations

import numpy as np

MS_WINDOW = 128   # frames per modulation-spectrum window (~1.5 s at 86 frames/s), hop half of it


def global_variance(mel: np.ndarray) -> np.ndarray:
    """(n_mels, T) -> (n_mels,) variance of each bin over time."""
    return np.asarray(mel, np.float64).var(axis=-1)


def spectral_flux(mel: np.ndarray) -> float:
    """Mean absolute change between consecutive frames (over bins and frames)."""
    m = np.asarray(mel, np.float64)
    return float(np.abs(np.diff(m, axis=-1)).mean()) if m.shape[-1] > 1 else 0.0


def modulation_power(mel: np.ndarray, window: int = MS_WINDOW) -> tuple[np.ndarray, int]:
    """(sum over windows of |rfft(hann * (trajectory - mean))|^2 per bin, number of windows).
    A clip shorter than a window is zero-padded to one window."""
    m = np.asarray(mel, np.float64)
    m = m - m.mean(axis=-1, keepdims=True)
    if m.shape[-1] < window:
        m = np.pad(m, ((0, 0), (0, window - m.shape[-1])))
    starts = range(0, m.shape[-1] - window + 1, window // 2)
    hann = np.hanning(window)
    total = np.zeros((m.shape[0], window // 2 + 1))
    for s in starts:
        total += np.abs(np.fft.rfft(m[:, s: s + window] * hann, axis=-1)) ** 2
    return total, len(starts)


class OversmoothingAccumulator:
    """Adds (original, reconstruction) log-mel pairs; result() gives the three measures."""

    def __init__(self):
        self.frames = 0
        self.log_gv = 0.0       # frame-weighted sum of mean_bins log(GV_rec / GV_ref)
        self.flux_ref = self.flux_rec = 0.0
        self.ms_ref = self.ms_rec = None
        self.windows = 0

    def add(self, original: np.ndarray, reconstruction: np.ndarray) -> None:
        n = original.shape[-1]
        if n < 2:
            return
        eps = 1e-10
        gv = np.log((global_variance(reconstruction) + eps) / (global_variance(original) + eps))
        self.log_gv += n * float(gv.mean())
        self.flux_ref += n * spectral_flux(original)
        self.flux_rec += n * spectral_flux(reconstruction)
        p_ref, k = modulation_power(original)
        p_rec, _ = modulation_power(reconstruction)
        self.ms_ref = p_ref if self.ms_ref is None else self.ms_ref + p_ref
        self.ms_rec = p_rec if self.ms_rec is None else self.ms_rec + p_rec
        self.windows += k
        self.frames += n

    def result(self) -> dict[str, float]:
        if not self.frames:
            return {}
        db = lambda p: 10 * np.log10(p / self.windows + 1e-10)  # noqa: E731
        return {"gv_ratio": float(np.exp(self.log_gv / self.frames)),
                "flux_ratio": self.flux_rec / max(self.flux_ref, 1e-12),
                "ms_distance_db": float(np.sqrt(np.mean((db(self.ms_rec) - db(self.ms_ref)) ** 2)))}
