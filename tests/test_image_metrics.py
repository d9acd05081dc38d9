"""vqkit.evaluation.image_metrics against scikit-image's reference PSNR and SSIM on real photographs."""
from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from PIL import Image

skimage_data = pytest.importorskip("skimage.data")
from scipy.ndimage import gaussian_filter  # noqa: E402
from skimage.metrics import peak_signal_noise_ratio, structural_similarity  # noqa: E402

from vqkit.evaluation.image_metrics import psnr, psnr_batch, ssim, ssim_batch  # noqa: E402


def ref_ssim(a, b, data_range=255):
    return structural_similarity(a, b, data_range=data_range, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, channel_axis=-1 if a.ndim == 3 else None)


def degrade(img: np.ndarray, kind: str) -> np.ndarray:
    if kind == "noise":
        rng = np.random.default_rng(0)
        return np.clip(np.round(img + rng.normal(0, 15, img.shape)), 0, 255).astype(np.uint8)
    if kind == "blur":
        sigma = (1.2, 1.2, 0) if img.ndim == 3 else 1.2
        return np.clip(np.round(gaussian_filter(img.astype(np.float64), sigma)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()  # JPEG at low quality: blocking and ringing
    Image.fromarray(img).save(buf, format="JPEG", quality=20)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        return np.asarray(im)


def to_model_space(img: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(img.copy()).float()
    t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)
    return t / 127.5 - 1.0


PHOTOS = {"astronaut": skimage_data.astronaut, "coffee": skimage_data.coffee, "camera": skimage_data.camera}


@pytest.fixture(scope="module")
def photos():
    # The centre 256x256 keeps the test fast; the reference comparison is exact at any size.
    out = {}
    for name, fn in PHOTOS.items():
        img = fn()
        h, w = img.shape[:2]
        out[name] = np.ascontiguousarray(img[(h - 256) // 2: (h + 256) // 2, (w - 256) // 2: (w + 256) // 2])
    return out


@pytest.mark.parametrize("name", list(PHOTOS))
@pytest.mark.parametrize("kind", ["noise", "blur", "jpeg"])
def test_matches_scikit_image(photos, name, kind):
    a = photos[name]
    b = degrade(a, kind)
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-6)
    assert ssim(a, b) == pytest.approx(ref_ssim(a, b), abs=1e-3)
    assert 0.2 < ssim(a, b) < 0.99 and 15 < psnr(a, b) < 45    # a real, non-trivial degradation


def test_full_size_photo_matches_too():
    a = skimage_data.coffee()
    b = degrade(a, "jpeg")
    assert ssim(a, b) == pytest.approx(ref_ssim(a, b), abs=1e-6)


def test_identical_images(photos):
    a = photos["astronaut"]
    assert psnr(a, a) == math.inf
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    t = to_model_space(a)
    assert psnr(t, t.clone()) == math.inf and ssim(t, t) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("name", ["coffee", "camera"])
def test_float_input_equals_uint8_input(photos, name):
    a, b = photos[name], degrade(photos[name], "noise")
    ta, tb = to_model_space(a), to_model_space(b)
    assert psnr(ta, tb) == pytest.approx(psnr(a, b), abs=1e-4)
    assert ssim(ta, tb) == pytest.approx(ssim(a, b), abs=1e-6)
    assert ssim(ta, b) == pytest.approx(ssim(a, b), abs=1e-6)   # mixed forms are fine too


def test_data_range_is_255_not_2_or_1(photos):
    """The known bug: SSIM with a data range that does not match the pixel values."""
    a, b = photos["astronaut"], degrade(photos["astronaut"], "noise")
    ta, tb = to_model_space(a), to_model_space(b)
    ours = ssim(ta, tb)
    assert ours == pytest.approx(ref_ssim(a, b, 255), abs=1e-6)
    fa, fb = (t.permute(1, 2, 0).double().numpy() for t in (ta, tb))
    wrong = {"uint8 pixels, data_range=2": ref_ssim(a, b, 2), "uint8 pixels, data_range=1": ref_ssim(a, b, 1),
             "[-1, 1] values, data_range=255": ref_ssim(fa, fb, 255), "[0, 1] values, data_range=255":
             ref_ssim((fa + 1) / 2, (fb + 1) / 2, 255)}
    for label, value in wrong.items():
        assert abs(ours - value) > 0.02, label
    # PSNR likewise: peak 2 on [-1, 1] values is consistent, peak 255 on them is not.
    mse = float(((ta - tb).double() ** 2).mean())
    assert psnr(ta, tb) == pytest.approx(10 * math.log10(4 / mse), abs=1e-4)
    assert abs(psnr(ta, tb) - 10 * math.log10(255 ** 2 / mse)) > 40


def test_batch_versions_return_per_image_values(photos):
    a = photos["astronaut"]
    pairs = [(a, degrade(a, k)) for k in ("noise", "blur", "jpeg")]
    xs = torch.stack([to_model_space(x) for x, _ in pairs])
    ys = torch.stack([to_model_space(y) for _, y in pairs])
    p, s = psnr_batch(xs, ys), ssim_batch(xs, ys)
    assert p.shape == (3,) and s.shape == (3,)
    assert np.allclose(p, [psnr(x, y) for x, y in pairs], atol=1e-4)
    assert np.allclose(s, [ssim(x, y) for x, y in pairs], atol=1e-6)
    assert np.allclose(ssim_batch(np.stack([x for x, _ in pairs]), np.stack([y for _, y in pairs])), s, atol=1e-6)
    assert psnr_batch(xs, xs)[0] == math.inf


def test_bad_inputs_are_rejected(photos):
    a = photos["camera"]
    with pytest.raises(TypeError, match="uint8"):
        psnr(a.astype(np.float32), a.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        ssim(a, a[:100])
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(a[:8, :8], a[:8, :8])
