"""VGG16 / LPIPS / SeQ-GAN perceptual losses with seeded random weights (no pretrained files here):
layout and loading are checked exactly; the distances are checked for their metric properties and
for ordering real degradations of a real photo."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vqkit.config import ImageLossConfig
from vqkit.losses import perceptual as P
from vqkit.losses.perceptual import (LPIPS, SemanticPerceptualLoss, VGG16Features, build_perceptual,
                                     load_lpips_heads, load_vgg16)

# torchvision's vgg16 keys, written out by construction (not taken from our module).
TORCHVISION_VGG16_KEYS = [f"features.{i}.{p}" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
                          for p in ("weight", "bias")] + \
                         [f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")]


@pytest.fixture(scope="module")
def vgg() -> VGG16Features:
    return load_vgg16(None, allow_random=True, seed=0)


@pytest.fixture(scope="module")
def lpips(vgg) -> LPIPS:
    return LPIPS(vgg)


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """skimage's astronaut, 64x64, in [-1, 1], (1, 3, 64, 64)."""
    data = pytest.importorskip("skimage.data")
    img = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 127.5 - 1
    return F.interpolate(img, size=(64, 64), mode="area")


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = int(3 * sigma + 1)
    t = torch.arange(-r, r + 1, dtype=torch.float)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def rand_images(n=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


# --- VGG16 ------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [64, 224])
def test_vgg_tap_shapes(vgg, size):
    with torch.no_grad():
        taps, logits = vgg(rand_images(1, size), logits=True)
    expected = [(64, size), (128, size // 2), (256, size // 4), (512, size // 8), (512, size // 16)]
    assert [tuple(t.shape) for t in taps] == [(1, c, s, s) for c, s in expected]
    assert logits.shape == (1, 1000)
    if size == 64:  # grayscale is accepted (repeated to RGB); logits are optional
        gray_taps, no_logits = vgg(rand_images(1, size)[:, :1])
        assert no_logits is None and gray_taps[4].shape == taps[4].shape


def test_vgg_layout_and_frozen(vgg):
    assert list(vgg.state_dict().keys()) == TORCHVISION_VGG16_KEYS
    assert list(load_vgg16(None, allow_random=True, classifier=False).state_dict()) == TORCHVISION_VGG16_KEYS[:26]
    assert not any(p.requires_grad for p in vgg.parameters())
    vgg.train()  # an owner switching to train mode must not enable the classifier's dropout
    assert not vgg.training and not any(m.training for m in vgg.modules())
    again = load_vgg16(None, allow_random=True, seed=0, classifier=False)
    assert torch.equal(again.features[28].weight, vgg.features[28].weight)  # seeded


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_vgg_file_round_trip(vgg, tmp_path, suffix):
    # .pth: the full model (logits too); .safetensors: features only (writing 0.5 GB twice is slow)
    path, full = tmp_path / f"vgg16{suffix}", suffix == ".pth"
    sd = vgg.state_dict() if full else load_vgg16(None, allow_random=True, seed=1, classifier=False).state_dict()
    if full:
        torch.save({"state_dict": sd}, path)  # nested under "state_dict" is accepted too
    else:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    loaded = load_vgg16(str(path), classifier=full)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in sd.items())
    source = vgg if full else load_vgg16(None, allow_random=True, seed=1, classifier=False)
    x = rand_images(2, 32)
    with torch.no_grad():
        (a, la), (b, lb) = source(x, logits=full), loaded(x, logits=full)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert (la is None and lb is None) if not full else torch.equal(la, lb)
    assert not any(p.requires_grad for p in loaded.parameters())


def test_vgg_missing_file_message(tmp_path):
    for path in (None, str(tmp_path / "nope.pth")):
        with pytest.raises(FileNotFoundError) as e:
            load_vgg16(path)
        msg = str(e.value)
        assert "loss.vgg_weights=" in msg and "vgg16-397923af.pth" in msg and "loss.perceptual=0" in msg
    with pytest.raises(FileNotFoundError, match="loss.lpips_weights="):
        load_lpips_heads(None)


def test_vgg_wrong_keys_and_shapes(tmp_path):
    small = load_vgg16(None, allow_random=True, classifier=False).state_dict()
    renamed = {k.replace("features.0.", "features.1."): v for k, v in small.items()}
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(ValueError, match=r"missing keys \['features.0.bias'.*unexpected keys \['features.1.bias'"):
        load_vgg16(str(tmp_path / "renamed.pth"), classifier=False)
    torch.save(small, tmp_path / "features_only.pth")
    with pytest.raises(ValueError, match="classifier.0.bias"):  # SeQ-GAN's logits need the classifier
        load_vgg16(str(tmp_path / "features_only.pth"))
    assert load_vgg16(str(tmp_path / "features_only.pth"), classifier=False).classifier is None
    bad = dict(small, **{"features.0.weight": torch.zeros(64, 1, 3, 3)})
    torch.save(bad, tmp_path / "bad_shape.pth")
    with pytest.raises(ValueError, match="shapes"):
        load_vgg16(str(tmp_path / "bad_shape.pth"), classifier=False)
    (tmp_path / "vgg.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="safetensors"):
        load_vgg16(str(tmp_path / "vgg.npz"))


class NotATensor:  # a pickle that would need arbitrary code to rebuild
    pass


def test_torch_load_is_weights_only(tmp_path, monkeypatch):
    torch.save({"features.0.weight": NotATensor()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="weights_only"):
        load_vgg16(str(tmp_path / "evil.pth"))
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: calls.append(kw) or real_load(*a, **kw))
    torch.save({f"lin{i}.model.1.weight": torch.ones(1, c, 1, 1) for i, c in enumerate(P.TAP_CHANNELS)},
               tmp_path / "lin.pth")
    load_lpips_heads(str(tmp_path / "lin.pth"))
    assert calls and all(kw.get("weights_only") is True and kw.get("map_location") == "cpu" for kw in calls)


# --- LPIPS --------------------------------------------------------------------------------------

def test_lpips_metric_properties(lpips):
    x, y = rand_images(2, 32, seed=1), rand_images(2, 32, seed=2)
    with torch.no_grad():
        assert lpips(x, x).item() == 0.0
        dxy, dyx = lpips(x, y), lpips(y, x)
    assert dxy.ndim == 0 and dxy.item() > 0
    torch.testing.assert_close(dxy, dyx)
    xg = x.clone().requires_grad_(True)
    lpips(xg, y).backward()
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0
    assert [n for n, _ in lpips.named_parameters() if n.startswith("lin")] == \
        [f"lin{i}.model.1.weight" for i in range(5)]


def test_lpips_heads_file(vgg, lpips, tmp_path):
    g = torch.Generator().manual_seed(0)
    heads = {f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for i, c in enumerate(P.TAP_CHANNELS)}
    torch.save(heads, tmp_path / "vgg.pth")
    weighted = LPIPS(vgg, load_lpips_heads(str(tmp_path / "vgg.pth")))
    x, y = rand_images(1, 32, seed=3), rand_images(1, 32, seed=4)
    # independent computation of the weighted sum from the taps
    with torch.no_grad():
        fx, _ = vgg(x)
        fy, _ = vgg(y)
        ref = sum(((F.normalize(a, dim=1) - F.normalize(b, dim=1)) ** 2 * heads[f"lin{i}.model.1.weight"])
                  .sum(1).mean() for i, (a, b) in enumerate(zip(fx, fy)))
        torch.testing.assert_close(weighted(x, y), ref, rtol=1e-4, atol=1e-6)
        assert weighted(x, y).item() != pytest.approx(lpips(x, y).item())
    heads["lin2.model.1.weight"] = torch.ones(1, 3, 1, 1)
    torch.save(heads, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="lin2"):
        load_lpips_heads(str(tmp_path / "bad.pth"))


# --- SeQ-GAN ---------------------------------------------------------------------------------------

class FixedFeatures(torch.nn.Module):
    """A stand-in for VGG16 that returns given features of x (first half of the batch) and y."""
    classifier = True

    def __init__(self, fx: list, fy: list, lx: list, ly: list):
        super().__init__()
        self.taps = [torch.tensor([a, b], dtype=torch.float) for a, b in zip(fx, fy)]   # (2, C, H, W)
        self.logits = torch.tensor([lx, ly], dtype=torch.float)

    def forward(self, x, logits=False):
        return self.taps, self.logits if logits else None


# Five layers of different sizes (one sample each), values chosen so every term is easy by hand.
FX = [[[[0.0, 0.0]]], [[[3.0]], [[0.0]]], [[[1.0, 1.0], [1.0, 1.0]]], [[[3.0, 0.0]], [[4.0, 2.0]]], [[[0.0]]]]
FY = [[[[1.0, 3.0]]], [[[1.0]], [[0.0]]], [[[1.0, 1.0], [1.0, 3.0]]], [[[1.0, 0.0]], [[0.0, 5.0]]], [[[2.0]]]]
LX, LY = [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 3.0]


def test_seqgan_paper_form_by_hand():
    """Per layer 1/(H W C) ||fx - fy||^2: (1+9)/2, 4/2, 4/4, (4+0+16+9)/4, 4/1; logits 12/4."""
    layers = [5.0, 2.0, 1.0, 7.25, 4.0]
    low, sem = sum(layers), layers[-1] + 3.0
    net = FixedFeatures(FX, FY, LX, LY)
    x = torch.zeros(1, 3, 4, 4)   # ignored by the stand-in
    for alpha in (0.0, 0.3, 1.0):
        got = SemanticPerceptualLoss(net, alpha)(x, x).item()
        assert got == pytest.approx(alpha * sem + (1 - alpha) * low, rel=1e-6), alpha


def test_seqgan_normalized_form_by_hand():
    """Unit vectors per pixel, sum over channels of the squared difference, mean over pixels; the
    low layers averaged. Layer 2: (1,0) vs (1,0) -> 0; layer 4: pixel 1 (0.6,0.8) vs (1,0) -> 0.8,
    pixel 2 (0,1) vs (0,1) -> 0, mean 0.4; one-channel layers: 0 where both sides are positive, 1
    where one is 0 (whose unit vector is 0)."""
    layers = [(1 + 1) / 2, 0.0, 0.0, 0.4, 1.0]
    low, sem = sum(layers) / 5, layers[-1] + 3.0
    net = FixedFeatures(FX, FY, LX, LY)
    x = torch.zeros(1, 3, 4, 4)
    for alpha in (0.0, 0.3, 1.0):
        got = SemanticPerceptualLoss(net, alpha, normalized=True)(x, x).item()
        assert got == pytest.approx(alpha * sem + (1 - alpha) * low, rel=1e-6), alpha


def independent(vgg, x, y, alpha, normalized):
    """Both forms from the taps of a real (random-weight) VGG16, written without our helpers."""
    with torch.no_grad():
        (fx, lx), (fy, ly) = vgg(x, logits=True), vgg(y, logits=True)
    if normalized:
        unit = lambda f: f / f.norm(dim=1, keepdim=True).clamp_min(1e-10)  # noqa: E731
        per_layer = [((unit(a) - unit(b)) ** 2).sum(1).mean((1, 2)) for a, b in zip(fx, fy)]
        low = torch.stack(per_layer).mean(0)
    else:
        per_layer = [((a - b) ** 2).sum((1, 2, 3)) / (a.shape[1] * a.shape[2] * a.shape[3]) for a, b in zip(fx, fy)]
        low = torch.stack(per_layer).sum(0)
    sem = per_layer[-1] + ((lx - ly) ** 2).sum(1) / lx.shape[1]
    return (alpha * sem + (1 - alpha) * low).mean()


@pytest.mark.parametrize("normalized", [False, True], ids=["paper", "normalized"])
def test_seqgan_forms_on_a_random_vgg(vgg, normalized):
    x, y = rand_images(2, 32, seed=5), rand_images(2, 32, seed=6)
    low, sem, half = (SemanticPerceptualLoss(vgg, a, normalized=normalized) for a in (0.0, 1.0, 0.5))
    with torch.no_grad():
        for alpha, loss in ((0.0, low), (1.0, sem), (0.5, half)):
            torch.testing.assert_close(loss(x, y), independent(vgg, x, y, alpha, normalized), rtol=1e-5, atol=1e-6)
        assert low(x, y).item() > 0 and abs(low(x, y).item() - sem(x, y).item()) > 1e-4
        for loss in (low, sem, half, SemanticPerceptualLoss(vgg, 1.0, logit_loss="kl", normalized=normalized)):
            assert loss(x, x).item() == 0.0
    xg = x.clone().requires_grad_(True)
    half(xg, y).backward()
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="classifier"):
        SemanticPerceptualLoss(load_vgg16(None, allow_random=True, classifier=False), 0.5, normalized=normalized)


def test_distances_order_real_degradations(vgg, lpips, photo):
    noisy = (photo + 0.15 * torch.randn(photo.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    blurred = [gaussian_blur(photo, s) for s in (0.7, 1.4, 2.8)]
    for loss in (lpips, *(SemanticPerceptualLoss(vgg, a, normalized=n) for a in (0.0, 1.0) for n in (False, True))):
        with torch.no_grad():
            d_blur = [loss(b, photo).item() for b in blurred]
            d_noise = loss(noisy, photo).item()
        assert d_noise > 0 and d_blur[0] > 0
        assert d_blur[0] < d_blur[1] < d_blur[2], (type(loss).__name__, d_blur)


def test_build_perceptual(tmp_path):
    assert build_perceptual(ImageLossConfig(perceptual=0.0)) is None
    with pytest.raises(FileNotFoundError, match="loss.lpips_weights"):
        build_perceptual(ImageLossConfig(perceptual=1.0))
    with pytest.raises(FileNotFoundError, match="loss.vgg_weights"):
        build_perceptual(ImageLossConfig(perceptual=1.0, perceptual_kind="seqgan"))
    lp = build_perceptual(ImageLossConfig(perceptual=1.0), allow_random=True)
    assert isinstance(lp, LPIPS) and lp.net.classifier is None  # LPIPS never loads the FC layers
    phase2 = build_perceptual(ImageLossConfig(perceptual=1.0, perceptual_kind="seqgan", perceptual_alpha=0.0),
                              allow_random=True)
    assert isinstance(phase2, SemanticPerceptualLoss) and phase2.alpha == 0.0 and phase2.net.classifier is None
    assert not phase2.normalized   # "seqgan" is the paper's form
    normalized = build_perceptual(ImageLossConfig(perceptual=1.0, perceptual_kind="seqgan_normalized",
                                             perceptual_alpha=1.0), allow_random=True)
    assert normalized.normalized and normalized.alpha == 1.0 and normalized.net.classifier is not None
    from vqkit.config import ConfigError

    with pytest.raises(ConfigError, match="loss.perceptual_kind: must be 'lpips', 'seqgan' or 'seqgan_normalized'"):
        ImageLossConfig(perceptual_kind="seqgan-normalised").validate()
