"""PSNR and SSIM for images, in the field-standard convention: pixel values in [0, 255], data_range 255.

Inputs may be uint8 arrays (H, W) / (H, W, C) in [0, 255], or torch tensors: float (C, H, W) in
[-1, 1] (model space; clamped, then mapped to [0, 255] without rounding) or uint8 (C, H, W). Using
a data range that does not match the values (e.g. data_range=2 or 1 on [0, 255] pixels, or 255 on
[-1, 1] tensors) changes SSIM's stabilising constants and PSNR's peak, which makes published
numbers incomparable; converting everything to [0, 255] first rules that out.

SSIM follows Wang et al. (2004): 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, population
(co)variances, per channel then averaged, in float64. Only positions where the whole window fits in
the image are averaged, which is what scikit-image's structural_similarity (gaussian_weights=True,
use_sample_covariance=False) reports as well.
"""
from __future__ import annotations

import math

import numpy as np
import torch

DATA_RANGE = 255.0
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5          # 11x11 window: int(3.5 * sigma + 0.5), as scipy's truncate=3.5 gives
SSIM_K1, SSIM_K2 = 0.01, 0.03


def to_pixels(x) -> np.ndarray:
    """One image in any accepted form -> float64 (H, W, C) in [0, 255]."""
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.ndim == 2:
            t = t[None]
        if t.ndim != 3:
            raise ValueError(f"expected an image tensor (C, H, W), got shape {tuple(t.shape)}")
        if t.dtype == torch.uint8:
            arr = t.double()
        elif t.is_floating_point():
            arr = (t.double().clamp(-1.0, 1.0) + 1.0) * (DATA_RANGE / 2.0)
        else:
            raise TypeError(f"image tensors must be float in [-1, 1] or uint8, got {t.dtype}")
        return arr.permute(1, 2, 0).numpy()
    arr = np.asarray(x)
    if arr.dtype != np.uint8:
        raise TypeError(f"image arrays must be uint8 in [0, 255] (got {arr.dtype}); "
                        f"pass model outputs as torch tensors in [-1, 1]")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise ValueError(f"expected an image array (H, W) or (H, W, C), got shape {arr.shape}")
    return arr.astype(np.float64)


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    a, b = to_pixels(x), to_pixels(y)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape} (as H, W, C)")
    return a, b


def psnr(x, y) -> float:
    """Peak signal-to-noise ratio in dB, 10 log10(255^2 / MSE). Identical images give inf."""
    a, b = _pair(x, y)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(DATA_RANGE ** 2 / mse)


def _gaussian_kernel() -> np.ndarray:
    r = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=np.float64)
    k = np.exp(-0.5 * (r / SSIM_SIGMA) ** 2)
    return k / k.sum()


def _filter_valid(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of (H, W, C) with the 1D kernel k along H then W.

    The SSIM map is only averaged where the window fits, so no border padding is ever needed.
    """
    n = len(k)
    h, w = img.shape[:2]
    rows = sum(k[i] * img[i: h - n + 1 + i] for i in range(n))
    return sum(k[i] * rows[:, i: w - n + 1 + i] for i in range(n))


def _ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    size = 2 * SSIM_RADIUS + 1
    if min(a.shape[:2]) < size:
        raise ValueError(f"SSIM needs images of at least {size}x{size} pixels, got {a.shape[1]}x{a.shape[0]}")
    k = _gaussian_kernel()
    mu_a, mu_b = _filter_valid(a, k), _filter_valid(b, k)
    var_a = _filter_valid(a * a, k) - mu_a * mu_a
    var_b = _filter_valid(b * b, k) - mu_b * mu_b
    cov = _filter_valid(a * b, k) - mu_a * mu_b
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)
    return num / den   # (H - 10, W - 10, C)


def ssim(x, y) -> float:
    """Mean structural similarity (Wang et al. 2004), averaged over positions, then channels."""
    a, b = _pair(x, y)
    return float(_ssim_map(a, b).mean(axis=(0, 1)).mean())


def _split(batch) -> list:
    """A batch (B, C, H, W) tensor / (B, H, W[, C]) uint8 array, or a list of images -> list of images."""
    if isinstance(batch, (list, tuple)):
        return list(batch)
    if isinstance(batch, torch.Tensor):
        if batch.ndim != 4:
            raise ValueError(f"expected a batch tensor (B, C, H, W), got shape {tuple(batch.shape)}")
        return list(batch.unbind(0))
    arr = np.asarray(batch)
    if arr.ndim not in (3, 4):
        raise ValueError(f"expected a batch array (B, H, W) or (B, H, W, C), got shape {arr.shape}")
    return list(arr)


def _batch(metric, xs, ys) -> np.ndarray:
    xs, ys = _split(xs), _split(ys)
    if len(xs) != len(ys):
        raise ValueError(f"batches differ in size: {len(xs)} vs {len(ys)}")
    return np.array([metric(x, y) for x, y in zip(xs, ys)], dtype=np.float64)


def psnr_batch(xs, ys) -> np.ndarray:
    """Per-image PSNR (dB) of two equally sized batches; inf where an image pair is identical."""
    return _batch(psnr, xs, ys)


def ssim_batch(xs, ys) -> np.ndarray:
    """Per-image SSIM of two equally sized batches."""
    return _batch(ssim, xs, ys)
