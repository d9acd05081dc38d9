"""Oversmoothing measures against hand-computed values and their expected behaviour."""
from __future__ import annotations

import numpy as np
import pytest

from vqkit.evaluation.oversmoothing import (OversmoothingAccumulator, global_variance, modulation_power,
                                            spectral_flux)


def test_global_variance_and_flux_by_hand():
    mel = np.array([[0.0, 2.0, 0.0, 2.0], [1.0, 1.0, 1.0, 4.0]])
    assert np.allclose(global_variance(mel), [1.0, 1.6875])     # var([0,2,0,2]) = 1; var([1,1,1,4]) = 27/16
    assert spectral_flux(mel) == pytest.approx((2 + 2 + 2 + 0 + 0 + 3) / 6)


def test_modulation_power_of_a_pure_modulation():
    """A bin oscillating at k cycles per window puts its power at modulation bin k (Hann: k +- 1)."""
    t = np.arange(128)
    mel = np.stack([np.cos(2 * np.pi * 8 * t / 128), np.zeros(128)])
    power, windows = modulation_power(mel)
    assert windows == 1
    # peak = (sum of the window / 2)^2: half of the cosine's energy lands on the positive frequency
    assert power[0].argmax() == 8 and power[0, 8] == pytest.approx((np.hanning(128).sum() / 2) ** 2, rel=1e-3)
    assert np.allclose(power[1], 0)


def test_identical_reconstruction_scores_perfectly():
    rng = np.random.default_rng(0)
    acc = OversmoothingAccumulator()
    for n in (50, 300):
        x = rng.normal(size=(8, n))
        acc.add(x, x)
    r = acc.result()
    assert r["gv_ratio"] == pytest.approx(1.0) and r["flux_ratio"] == pytest.approx(1.0)
    assert r["ms_distance_db"] == pytest.approx(0.0, abs=1e-9)


def test_a_smoothed_reconstruction_is_flagged():
    """A moving average halves the variance and the flux and removes fast modulation."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 400))
    smooth = np.stack([np.convolve(row, np.ones(5) / 5, mode="same") for row in x])
    acc = OversmoothingAccumulator()
    acc.add(x, smooth)
    r = acc.result()
    assert r["gv_ratio"] < 0.5 and r["flux_ratio"] < 0.5 and r["ms_distance_db"] > 5
    scaled = OversmoothingAccumulator()
    scaled.add(x, 2 * x)    # twice the deviations: four times the variance, twice the flux, +6 dB
    r2 = scaled.result()
    assert r2["gv_ratio"] == pytest.approx(4.0) and r2["flux_ratio"] == pytest.approx(2.0)
    assert r2["ms_distance_db"] == pytest.approx(20 * np.log10(2), abs=1e-6)
