"""Image discriminators: shapes, the MelDiscriminators container convention, state round trip, and
that a few hinge steps tell real photo crops from noise."""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

from vqkit.config import DiscriminatorConfig, MelDiscriminatorConfig, tagged_kinds
from vqkit.losses.gan import d_loss, lecam
from vqkit.models.image_discriminators import (PatchGAN, StyleGANDiscriminator, build_image_discriminator,
                                               minibatch_stddev)

KINDS = ("patchgan", "stylegan")


def make(kind, channels=(32, 64, 64), in_channels=3, seed=0):
    torch.manual_seed(seed)
    cfg = tagged_kinds(DiscriminatorConfig)[kind](patch_channels=list(channels))
    return build_image_discriminator(cfg, in_channels)


@pytest.fixture(scope="module")
def photo128() -> torch.Tensor:
    data = pytest.importorskip("skimage.data")
    img = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 127.5 - 1
    return F.interpolate(img, size=(128, 128), mode="area")[0]


def crops(photo, n, size, g):
    ij = torch.randint(0, photo.shape[-1] - size + 1, (n, 2), generator=g)
    return torch.stack([photo[:, i:i + size, j:j + size] for i, j in ij.tolist()])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("batch", [1, 4])
def test_logit_shapes(kind, size, batch):
    disc = make(kind)
    out = disc(torch.randn(batch, 3, size, size))
    assert len(out) == len(disc.heads) == len(disc.head_weights) == 1 and disc.head_weights == [1.0]
    logits, feats = out[0]
    if kind == "patchgan":  # 4x4 convs: stride 2, 2, then stride 1 (-1), output conv (-1)
        side = size // 4 - 2
        assert logits.shape == (batch, 1, side, side)
        assert [f.shape[1] for f in feats] == [32, 64, 64]
    else:
        assert logits.shape == (batch, 1)
        assert [f.shape[-1] for f in feats] == [size // 2, size // 4, size // 8, size // 8]
    assert torch.isfinite(logits).all()


def test_reference_sizes():
    # taming's default (ndf=64, n_layers=3) on 256x256 gives the familiar 30x30 patch map
    taming = PatchGAN(3, [64, 128, 256, 512])
    assert taming(torch.randn(1, 3, 256, 256))[0][0].shape == (1, 1, 30, 30)
    style = StyleGANDiscriminator(1, [8, 8, 8])  # grayscale, 256x256 -> 32x32 before the dense layers
    assert style(torch.randn(2, 1, 256, 256))[0][0].shape == (2, 1)
    with pytest.raises(ValueError, match="patchgan, stylegan"):
        build_image_discriminator(MelDiscriminatorConfig(), 3)


def test_patchgan_is_per_sample():
    # no batch statistics: a sample's logits do not depend on the rest of the batch (batch 1, DDP)
    disc = make("patchgan").eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(disc(x)[0][0][1:2], disc(x[1:2])[0][0], rtol=1e-5, atol=1e-6)


def test_minibatch_stddev():
    x = torch.randn(6, 5, 4, 4)
    y = minibatch_stddev(x, group=4)  # 6 is not a multiple of 4: groups of 3
    assert y.shape == (6, 6, 4, 4) and torch.equal(y[:, :5], x)
    # sample i is grouped with i +- 2 (groups of 3 over the 6 = 3 x 2 layout, as in StyleGAN)
    expected = x[0::2].var(0, unbiased=False).add(1e-8).sqrt().mean()
    torch.testing.assert_close(y[0, 5], expected.expand(4, 4))
    torch.testing.assert_close(y[2, 5], y[4, 5])
    single = minibatch_stddev(x[:1])
    assert single[0, 5].max() < 1e-3  # a lone sample has no spread


@pytest.mark.parametrize("kind", KINDS)
def test_lecam_buffers_and_state_round_trip(kind):
    disc = make(kind, seed=1)
    head = disc.heads[0]
    assert head.lecam_real.shape == () and head.lecam_real == 0 and head.lecam_fake == 0
    x, z = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    real, fake = disc(x), disc(z)
    lecam(real, fake, list(disc.heads), disc.head_weights, decay=0.9).backward()
    assert head.lecam_real != 0 and head.lecam_fake != 0
    buf = io.BytesIO()
    torch.save(disc.state_dict(), buf)
    assert {"heads.0.lecam_real", "heads.0.lecam_fake"} <= set(disc.state_dict())
    other = make(kind, seed=2)
    buf.seek(0)
    other.load_state_dict(torch.load(buf, weights_only=True))
    disc.eval(), other.eval()
    assert other.heads[0].lecam_real == head.lecam_real
    with torch.no_grad():
        torch.testing.assert_close(other(x)[0][0], disc(x)[0][0])


@pytest.mark.parametrize("kind", KINDS)
def test_hinge_training_separates_photo_from_noise(kind, photo128):
    disc = make(kind, channels=(16, 32, 32), seed=0)
    opt = torch.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.9))
    g = torch.Generator().manual_seed(0)
    for _ in range(15):
        real = crops(photo128, 8, 32, g)
        fake = (0.5 * torch.randn(8, 3, 32, 32, generator=g)).clamp(-1, 1)
        loss = d_loss(disc(real), disc(fake), disc.head_weights, "hinge")
        opt.zero_grad()
        loss.backward()
        opt.step()
    disc.eval()
    with torch.no_grad():  # fresh crops and fresh noise
        real_logit = disc(crops(photo128, 8, 32, g))[0][0].mean()
        fake_logit = disc((0.5 * torch.randn(8, 3, 32, 32, generator=g)).clamp(-1, 1))[0][0].mean()
    assert real_logit > fake_logit + 0.25, (real_logit.item(), fake_logit.item())
