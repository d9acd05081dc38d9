"""GAN loss kinds against hand computations, and taming's adaptive weight against gradients
computed by hand."""
from __future__ import annotations

import math

import pytest
import torch

from vqkit.losses.gan import adaptive_gan_weight, d_loss, d_loss_lsgan, g_loss, g_loss_lsgan

R1, R2 = [0.5, -2.0, 1.5, 0.0], [3.0, -1.0]
F1, F2 = [-0.5, 2.0, -1.5, 0.25], [0.0, -3.0]
W = [0.7, 0.3]


def heads(a, b):
    # two heads of different shapes: a (1, 1, 2, 2) logit map and (2, 1) per-image logits
    return [(torch.tensor(a).view(1, 1, 2, 2), []), (torch.tensor(b).view(2, 1), [])]


def mean(v):
    return sum(v) / len(v)


def softplus(t):
    return math.log1p(math.exp(t))


def test_d_loss_hand_values():
    real, fake = heads(R1, R2), heads(F1, F2)
    hinge = sum(w * (mean([max(0, 1 - r) for r in rs]) + mean([max(0, 1 + f) for f in fs]))
                for w, rs, fs in zip(W, (R1, R2), (F1, F2)))
    # head 1: relu(1-r) = .5, 3, 0, 1; relu(1+f) = .5, 3, 0, 1.25 -> 1.125 + 1.1875
    assert hinge == pytest.approx(0.7 * (1.125 + 1.1875) + 0.3 * ((0 + 2) / 2 + (1 + 0) / 2))
    ns = sum(w * (mean([softplus(-r) for r in rs]) + mean([softplus(f) for f in fs]))
             for w, rs, fs in zip(W, (R1, R2), (F1, F2)))
    ls = sum(w * (mean([(r - 1) ** 2 for r in rs]) + mean([f ** 2 for f in fs]))
             for w, rs, fs in zip(W, (R1, R2), (F1, F2)))
    assert d_loss(real, fake, W, "hinge").item() == pytest.approx(hinge, rel=1e-6)
    assert d_loss(real, fake, W, "non_saturating").item() == pytest.approx(ns, rel=1e-6)
    assert d_loss(real, fake, W, "lsgan").item() == pytest.approx(ls, rel=1e-6)
    assert d_loss(real, fake, W, "lsgan").item() == pytest.approx(d_loss_lsgan(real, fake, W).item())


def test_g_loss_hand_values():
    fake = heads(F1, F2)
    assert g_loss(fake, W, "hinge").item() == pytest.approx(-(0.7 * mean(F1) + 0.3 * mean(F2)), rel=1e-6)
    ns = 0.7 * mean([softplus(-f) for f in F1]) + 0.3 * mean([softplus(-f) for f in F2])
    assert g_loss(fake, W, "non_saturating").item() == pytest.approx(ns, rel=1e-6)
    ls = 0.7 * mean([(f - 1) ** 2 for f in F1]) + 0.3 * mean([(f - 1) ** 2 for f in F2])
    assert g_loss(fake, W, "lsgan").item() == pytest.approx(ls, rel=1e-6)
    assert g_loss(fake, W, "lsgan").item() == pytest.approx(g_loss_lsgan(fake, W).item())
    with pytest.raises(ValueError, match="hinge"):
        g_loss(fake, W, "wgan")
    with pytest.raises(ValueError, match="non_saturating"):
        d_loss(fake, fake, W, "wgan")


def test_losses_push_the_right_way():
    # the generator gradient raises fake logits, the discriminator gradient lowers them
    for kind in ("lsgan", "hinge", "non_saturating"):
        f = torch.full((4,), 0.5, requires_grad=True)
        g_loss([(f, [])], [1.0], kind).backward()
        assert (f.grad < 0).all(), kind
        f2, r2 = (torch.full((4,), 0.5, requires_grad=True) for _ in range(2))
        d_loss([(r2, [])], [(f2, [])], [1.0], kind).backward()
        assert (f2.grad > 0).all() and (r2.grad < 0).all(), kind


def test_adaptive_weight_is_the_gradient_norm_ratio():
    g = torch.Generator().manual_seed(0)
    x, t, v = torch.randn(5, 4, generator=g), torch.randn(5, 3, generator=g), torch.randn(3, generator=g)
    last = torch.randn(3, 4, generator=g).requires_grad_(True)  # the decoder's last weight
    out = x @ last.T
    recon = (out - t).pow(2).mean()
    gan = -(out @ v).mean()
    weight = adaptive_gan_weight(recon, gan, last)
    # by hand: d recon / dW = 2 (out - t)^T x / (B O); d gan / dW = -v (sum_b x_b) / B
    with torch.no_grad():
        g_rec = 2 * (out - t).T @ x / out.numel()
        g_gan = -torch.outer(v, x.sum(0)) / x.shape[0]
    expected = g_rec.norm() / (g_gan.norm() + 1e-4)
    torch.testing.assert_close(weight, expected, rtol=1e-5, atol=0)
    assert weight.grad_fn is None and not weight.requires_grad
    (recon + weight * gan).backward()  # graphs were retained for the real backward pass
    assert last.grad is not None

    out = x @ last.T
    assert adaptive_gan_weight((out - t).pow(2).mean(), 1e-9 * out.sum(), last, max_weight=10.0).item() == 10.0
    free = torch.ones((), requires_grad=True) * 2  # a GAN loss that does not reach the layer
    assert adaptive_gan_weight((out - t).pow(2).mean(), free, last, max_weight=7.0).item() == 7.0
