"""Image backbones: shapes, real autoencoding on photos, MoVQ spatial norm, SeQ-GAN local attention."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vqkit.config import BackboneConfig, tagged_kinds
from vqkit.models.backbones2d import build_image_backbone
from vqkit.nn.spatial_norm import SpatialNorm
from vqkit.nn.window_attention import WindowAttention2d

LATENT = 8


pytestmark = pytest.mark.usefixtures("single_thread")   # see conftest.py


def make_cfg(kind: str = "resnet2d", **kw) -> BackboneConfig:
    base = dict(channels=[16, 32], downsample=4)
    cfg = tagged_kinds(BackboneConfig)[kind](**{**base, **kw})
    cfg.validate()
    return cfg


def build(cfg: BackboneConfig, seed: int = 0):
    torch.manual_seed(seed)
    return build_image_backbone(3, LATENT, cfg)


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """Three real photos, centre-cropped square, resized to 32x32, in [-1, 1]: (3, 3, 32, 32)."""
    skdata = pytest.importorskip("skimage.data")
    from skimage.transform import resize

    out = []
    for name in ("astronaut", "coffee", "chelsea"):
        img = getattr(skdata, name)().astype(np.float64) / 255.0
        h, w = img.shape[:2]
        s = min(h, w)
        img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        out.append(resize(img, (32, 32), anti_aliasing=True))
    return torch.tensor(np.stack(out), dtype=torch.float32).permute(0, 3, 1, 2) * 2 - 1


@pytest.mark.parametrize("kind,f", [("resnet2d", 4), ("resnet2d", 8), ("resnet2d", 16), ("convnext", 4),
                                    ("convnext", 8), ("vit", 4), ("vit", 8)])
def test_shapes_hidden_and_last_layer(kind, f):
    enc, dec = build(make_cfg(kind, downsample=f))
    x = torch.randn(2, 3, 32, 48)
    z = enc(x)
    assert z.shape == (2, LATENT, 32 // f, 48 // f)
    y, hidden = dec(z)
    assert y.shape == x.shape
    assert hidden.shape == (2, dec.hidden_channels, 32, 48) and dec.hidden_channels == 16
    assert dec.last_layer is dec.conv_out.weight and dec.last_layer.shape[:2] == (3, 16)
    (g,) = torch.autograd.grad(y.pow(2).mean(), dec.last_layer)
    assert g.abs().sum() > 0


@pytest.mark.parametrize("kind,kw,lr", [
    ("resnet2d", {}, 2e-3),
    ("convnext", {}, 2e-3),
    ("vit", {}, 1e-3),
    ("vit", {"patch_overlap": True}, 1e-3),
    ("resnet2d", {"spatial_norm_blocks": 2, "decoder_attention": "window", "decoder_attention_blocks": 1,
                  "dropout": 0.05}, 2e-3),
])
def test_autoencodes_real_photos(photos, kind, kw, lr):
    enc, dec = build(make_cfg(kind, **kw))
    params = list(enc.parameters()) + list(dec.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    losses = []
    for _ in range(40):
        y, _ = dec(enc(photos))
        loss = torch.nn.functional.mse_loss(y, photos)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    enc.eval()
    dec.eval()
    with torch.no_grad():
        final = torch.nn.functional.mse_loss(dec(enc(photos))[0], photos).item()
    assert np.isfinite(losses).all()
    assert final < 0.35 * losses[0], (losses[0], final)   # measured 0.08-0.23 over seeds


def test_vit_patch_overlap_changes_patch_embedding():
    e0, d0 = build(make_cfg("vit", downsample=8))
    e1, d1 = build(make_cfg("vit", downsample=8, patch_overlap=True))
    assert e0.patch_embed.weight.shape == (32, 3, 8, 8)
    assert e1.patch_embed.weight.shape == (32, 3, 16, 16)
    assert d0.unpatchify.weight.shape != d1.unpatchify.weight.shape
    x = torch.randn(1, 3, 32, 32)
    for enc, dec in ((e0, d0), (e1, d1)):
        z = enc(x)
        assert z.shape == (1, LATENT, 4, 4) and dec(z)[0].shape == x.shape


def test_spatial_norm_depends_on_zq():
    torch.manual_seed(0)
    sn = SpatialNorm(16, LATENT)
    x = torch.randn(2, 16, 8, 8)
    z1, z2 = torch.randn(2, LATENT, 2, 2), torch.randn(2, LATENT, 2, 2)
    a, b = sn(x, z1), sn(x, z2)
    assert a.shape == x.shape
    assert not torch.allclose(a, b)
    assert torch.equal(a, sn(x, z1))
    # Nearest resize: each z_q cell modulates exactly its own 4x4 block of x.
    z3 = z1.clone()
    z3[:, :, 0, 0] += 1.0
    diff = (sn(x, z3) - a).abs().sum((0, 1)) > 0
    assert diff[:4, :4].all() and not diff[4:].any() and not diff[:, 4:].any()


@pytest.mark.parametrize("kind", ["resnet2d", "convnext", "vit"])
def test_spatial_norm_counts_decoder_stages(kind):
    counts = []
    for n in (0, 1, 2):
        _, dec = build(make_cfg(kind, channels=[16, 32], spatial_norm_blocks=n))
        mods = [m for m in dec.modules() if isinstance(m, SpatialNorm)]
        counts.append(len(mods))
        calls = []
        for m in mods:
            m.register_forward_hook(lambda *_: calls.append(1))
        zq = torch.randn(1, LATENT, 8, 8)
        y, _ = dec(zq)
        assert y.shape == (1, 3, 32, 32) and len(calls) == len(mods)   # every SpatialNorm sees z_q
    assert counts[0] == 0 and counts[0] < counts[1] < counts[2]


def _probe(block, x, pos):
    """Which output pixels change when the input pixel at `pos` is perturbed."""
    with torch.no_grad():
        base = block(x)
        x2 = x.clone()
        # A random vector: a constant shift over channels would vanish in the per-pixel LayerNorm.
        x2[:, :, pos[0], pos[1]] += 3.0 * torch.randn(x.shape[:2], generator=torch.Generator().manual_seed(1))
        return (block(x2) - base).abs().amax((0, 1)) > 1e-6


def test_window_attention_is_local():
    torch.manual_seed(0)
    blk = WindowAttention2d(8, window=4, heads=2, mode="window", zero_init=False)
    for size in (16, 14):                        # 14: padded to 16, padded keys masked
        x = torch.randn(2, 8, size, size)
        assert blk(x).shape == x.shape
        changed = _probe(blk, x, (5, 6))         # window rows 4..7, cols 4..7
        assert changed[4:8, 4:8].all()
        changed[4:8, 4:8] = False
        assert not changed.any()
    # A partial (padded) window computes the same as attention over just its real pixels.
    x = torch.randn(1, 8, 14, 14)
    torch.testing.assert_close(blk(x)[..., 12:, 12:], blk(x[..., 12:, 12:].contiguous()))


def test_dilated_attention_mixes_far_pixels():
    torch.manual_seed(0)
    blk = WindowAttention2d(8, window=4, heads=2, mode="dilated", zero_init=False)
    x = torch.randn(2, 8, 16, 16)
    assert blk(x).shape == x.shape
    changed = _probe(blk, x, (1, 2))             # stride H/w = 4: group = rows 1,5,9,13 x cols 2,6,10,14
    expect = torch.zeros(16, 16, dtype=torch.bool)
    expect[1::4, 2::4] = True
    assert torch.equal(changed, expect)
    x = torch.randn(1, 8, 14, 14)
    assert blk(x).shape == x.shape and torch.isfinite(blk(x)).all()


@pytest.mark.parametrize("kind,mode", [("resnet2d", "window"), ("resnet2d", "dilated"), ("convnext", "window"),
                                       ("vit", "dilated")])
def test_extra_attention_loads_phase1_weights_and_starts_identical(kind, mode):
    common = dict(spatial_norm_blocks=1, attention_window=4)
    _, dec1 = build(make_cfg(kind, **common), seed=0)
    _, dec2 = build(make_cfg(kind, decoder_attention=mode, decoder_attention_blocks=2, **common), seed=1)
    assert len(dec1.extra_attention) == 0 and len(dec2.extra_attention) == 2
    keys1, keys2 = set(dec1.state_dict()), set(dec2.state_dict())
    assert not any(k.startswith("extra_attention.") for k in keys1)
    assert {k for k in keys2 if not k.startswith("extra_attention.")} == keys1
    res = dec2.load_state_dict(dec1.state_dict(), strict=False)
    assert not res.unexpected_keys and all(k.startswith("extra_attention.") for k in res.missing_keys)
    dec1.eval()
    dec2.eval()
    zq = torch.randn(2, LATENT, 8, 8)
    with torch.no_grad():
        (y1, h1), (y2, h2) = dec1(zq), dec2(zq)
    torch.testing.assert_close(y2, y1)
    torch.testing.assert_close(h2, h1)
    # The extras are trainable from there: their zero projections get a gradient.
    dec2.train()
    dec2(zq)[0].pow(2).mean().backward()
    assert dec2.extra_attention[0].attn.out.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["resnet2d", "convnext"])
def test_attention_flag_controls_mid_attention(kind):
    enc_a, dec_a = build(make_cfg(kind, attention=True))
    enc_n, dec_n = build(make_cfg(kind, attention=False))
    assert n_params(enc_n) < n_params(enc_a) and n_params(dec_n) < n_params(dec_a)
    assert len(enc_a.mid) == 3 and len(enc_n.mid) == 2
    z = enc_n(torch.randn(1, 3, 32, 32))
    assert dec_n(z)[0].shape == (1, 3, 32, 32)
