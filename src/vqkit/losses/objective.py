"""Every generator and discriminator loss of one config, in one place.

Generator: draft reconstruction (MSE / L1) + output reconstruction (MSE / L1 / perceptual) +
adversarial (+ feature matching) on the output. The output is the refiner's when there is one,
otherwise the draft itself. Discriminator: real vs detached output (+ LeCam).
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import LossConfig
from . import gan as G
from .reconstruction import l1, mse


class RealFakeDiscriminator(nn.Module):
    """The discriminator on real and fake in ONE call. Under DDP a module may run forward only once
    per backward (a second call would break gradient reduction), so this pair is what gets wrapped;
    the two inputs still pass through the discriminator separately (its minibatch statistics never
    mix real and fake)."""

    def __init__(self, disc: nn.Module):
        super().__init__()
        self.disc = disc

    def forward(self, real: torch.Tensor, fake: torch.Tensor):
        return self.disc(real), self.disc(fake)


class Objective:
    def __init__(self, cfg: LossConfig, perceptual: nn.Module | None = None):
        self.cfg = cfg
        self.perceptual = perceptual

    def reconstruction(self, out, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Returns (draft loss, output loss, logs). The draft loss is all the base model sees when an
        isolated refiner exists."""
        c, target, logs = self.cfg, out.target, {}
        logs["draft_mse"] = mse(out.draft, target, mask)
        draft_loss = c.draft_mse * logs["draft_mse"] + out.quant_loss
        if c.draft_l1 > 0:
            logs["draft_l1"] = l1(out.draft, target, mask)
            draft_loss = draft_loss + c.draft_l1 * logs["draft_l1"]
        output = out.output
        if out.refined is not None:
            logs["refined_mse"] = mse(out.refined, target, mask)
        out_loss = c.refined_mse * logs.get("refined_mse", logs["draft_mse"])
        if c.refined_l1 > 0:
            logs["refined_l1"] = l1(output, target, mask)
            out_loss = out_loss + c.refined_l1 * logs["refined_l1"]
        if self.perceptual is not None:   # built only for a weight > 0
            logs["perceptual"] = self.perceptual(output.float(), target.float())
            out_loss = out_loss + c.perceptual * logs["perceptual"]
        return draft_loss, out_loss, logs

    def discriminator(self, pair, real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """pair: a RealFakeDiscriminator, possibly wrapped for DDP."""
        c = self.cfg
        raw = getattr(pair, "module", pair).disc
        d_real, d_fake = pair(real, fake.detach())
        loss = G.d_loss(d_real, d_fake, raw.head_weights, c.gan_loss)
        logs = {}
        if c.lecam > 0:
            logs["lecam"] = G.lecam(d_real, d_fake, list(raw.heads), raw.head_weights, c.lecam_decay)
            loss = loss + c.lecam * logs["lecam"]
        logs["d"] = loss
        return loss, logs

    def adversarial(self, disc, real: torch.Tensor, fake: torch.Tensor, recon_loss: torch.Tensor,
                    last_layer: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
        """disc: the bare discriminator (its weights are frozen here; no DDP wrapper needed)."""
        c = self.cfg
        raw = disc
        g_fake = disc(fake)
        logs = {"g_adv": G.g_loss(g_fake, raw.head_weights, c.gan_loss)}
        weight = torch.tensor(c.gan, device=fake.device)
        if c.adaptive_gan_weight and last_layer is not None and recon_loss.requires_grad:
            logs["gan_weight"] = G.adaptive_gan_weight(recon_loss, logs["g_adv"], last_layer) * c.gan
            weight = logs["gan_weight"]
        loss = weight * logs["g_adv"]
        if c.feature_matching > 0:
            with torch.no_grad():
                d_real = disc(real)
            logs["fm"] = G.feature_matching(d_real, g_fake, raw.head_weights)
            loss = loss + c.feature_matching * logs["fm"]
        return loss, logs
