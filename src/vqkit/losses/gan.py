"""Adversarial losses: LSGAN, LeCam regularisation (Tseng et al., 2021), feature matching.

Heads come as the list MelDiscriminators returns: [(logits, features), ...], weighted by the
discriminator's `head_weights`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

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
        r_mean, f_mean = r.detach().float().mean(), f.detach().float().mean()
        head.lecam_real.mul_(decay).add_((1 - decay) * r_mean)
        head.lecam_fake.mul_(decay).add_((1 - decay) * f_mean)
        total = total + w * (F.relu(r.float() - head.lecam_fake).pow(2).mean()
                             + F.relu(head.lecam_real - f.float()).pow(2).mean())
    return total
