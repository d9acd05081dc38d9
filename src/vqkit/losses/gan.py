"""Adversarial losses: LSGAN, hinge and non-saturating, LeCam regularisation (Tseng et al., 2021),
feature matching, and taming's adaptive GAN weight.

Heads come as the list MelDiscriminators returns: [(logits, features), ...], weighted by the
discriminator's `head_weights`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..distributed import all_reduce_mean_

Heads = list[tuple[torch.Tensor, list[torch.Tensor]]]


def d_loss_lsgan(real: Heads, fake: Heads, weights: list[float]) -> torch.Tensor:
    return sum(w * (F.mse_loss(r.float(), torch.ones_like(r, dtype=torch.float))
                    + f.float().pow(2).mean())
               for w, (r, _), (f, _) in zip(weights, real, fake))


def g_loss_lsgan(fake: Heads, weights: list[float]) -> torch.Tensor:
    return sum(w * (f.float() - 1).pow(2).mean() for w, (f, _) in zip(weights, fake))


def feature_matching(real: Heads, fake: Heads, weights: list[float]) -> torch.Tensor:
    total = 0.0
    for w, (_, rf), (_, ff) in zip(weights, real, fake):
        total = total + w * sum(F.l1_loss(f.float(), r.detach().float()) for r, f in zip(rf, ff)) / len(rf)
    return total


def lecam(real: Heads, fake: Heads, heads: list, weights: list[float], decay: float) -> torch.Tensor:
    """LeCam regulariser; updates each head's EMA buffers (lecam_real / lecam_fake) in place."""
    total = 0.0
    for w, head, (r, _), (f, _) in zip(weights, heads, real, fake):
        # the global batch's means: every process keeps the same EMAs under DDP
        r_mean = all_reduce_mean_(r.detach().float().mean())
        f_mean = all_reduce_mean_(f.detach().float().mean())
        head.lecam_real.mul_(decay).add_((1 - decay) * r_mean)
        head.lecam_fake.mul_(decay).add_((1 - decay) * f_mean)
        total = total + w * (F.relu(r.float() - head.lecam_fake).pow(2).mean()
                             + F.relu(head.lecam_real - f.float()).pow(2).mean())
    return total


# --- Loss kinds for image tokenizers (and any Heads): lsgan, hinge, non_saturating -------------
# No 0.5 factor on the discriminator losses (taming halves hinge): it is a learning-rate scale.

GAN_KINDS = ("lsgan", "hinge", "non_saturating")


def _check_kind(kind: str) -> None:
    if kind not in GAN_KINDS:
        raise ValueError(f"unknown GAN loss {kind!r}; available: {', '.join(GAN_KINDS)}")


def d_loss(real: Heads, fake: Heads, weights: list[float], kind: str) -> torch.Tensor:
    """Discriminator loss summed over heads: lsgan (r-1)^2 + f^2, hinge relu(1-r) + relu(1+f),
    non_saturating softplus(-r) + softplus(f) (= -log sigmoid(r) - log(1 - sigmoid(f)))."""
    _check_kind(kind)
    if kind == "lsgan":
        return d_loss_lsgan(real, fake, weights)
    total = 0.0
    for w, (r, _), (f, _) in zip(weights, real, fake):
        r, f = r.float(), f.float()
        if kind == "hinge":
            total = total + w * (F.relu(1 - r).mean() + F.relu(1 + f).mean())
        else:
            total = total + w * (F.softplus(-r).mean() + F.softplus(f).mean())
    return total


def g_loss(fake: Heads, weights: list[float], kind: str) -> torch.Tensor:
    """Generator loss summed over heads: lsgan (f-1)^2, hinge -f, non_saturating softplus(-f)."""
    _check_kind(kind)
    if kind == "lsgan":
        return g_loss_lsgan(fake, weights)
    if kind == "hinge":
        return sum(w * -f.float().mean() for w, (f, _) in zip(weights, fake))
    return sum(w * F.softplus(-f.float()).mean() for w, (f, _) in zip(weights, fake))


def adaptive_gan_weight(recon_loss: torch.Tensor, gan_loss: torch.Tensor, last_layer: torch.Tensor,
                        max_weight: float = 1e4) -> torch.Tensor:
    """taming's adaptive weight ||d recon / d last|| / (||d gan / d last|| + 1e-4), clamped to
    [0, max_weight] and detached, so the GAN gradient at the decoder's last layer is as large as the
    reconstruction's. Both graphs are retained: the caller still backpropagates the total loss."""
    g_rec = torch.autograd.grad(recon_loss, last_layer, retain_graph=True, allow_unused=True)[0]
    g_gan = torch.autograd.grad(gan_loss, last_layer, retain_graph=True, allow_unused=True)[0]
    # under DDP: the global batch's gradients (their mean over processes), so all use one weight
    n_rec = all_reduce_mean_(g_rec.float()).norm() if g_rec is not None else last_layer.new_zeros((), dtype=torch.float)
    n_gan = all_reduce_mean_(g_gan.float()).norm() if g_gan is not None else last_layer.new_zeros((), dtype=torch.float)
    return (n_rec / (n_gan + 1e-4)).clamp(0.0, max_weight).detach()
