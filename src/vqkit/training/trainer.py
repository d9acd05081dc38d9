"""The tokenizer trainer (mel or image): generator and discriminator steps, GAN warm-up, SeQ-GAN
phase 2, held-out evaluation and samples. The loop itself (processes, accumulation, EMA, checkpoints,
resume) is training/loop.py, shared with the token priors.

Per step and micro-batch: (1) the tokenizer runs; (2) once the GAN has started, the discriminator's
loss on real vs the detached output (+ LeCam) is backpropagated; (3) the generator's reconstruction,
perceptual and adversarial losses are backpropagated through the discriminator as it was at the start
of the step. Then both optimisers step, so k micro-batches of b rows equal one batch of k*b rows.
The discriminators stay in train mode throughout (the reference flipped them to eval, freezing
spectral norm).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..config import Config, save_config
from ..losses.objective import Objective, RealFakeDiscriminator
from ..modalities import modality_of
from ..models.tokenizer import Tokenizer
from ..io.metrics_log import MetricsLog
from .components import make_batches, make_discriminator, make_perceptual, start_from
from .loop import TrainingStopped, TrainLoop, warmup

__all__ = ["Trainer", "TrainingStopped"]


class Trainer(TrainLoop):
    progress_keys = ("draft_mse", "refined_mse", "perceptual", "g_adv", "d")

    def __init__(self, cfg: Config, run_dir: str | Path, train_items: list[torch.Tensor],
                 valid_items: list[torch.Tensor] | None = None, log: Callable[[str], None] = print,
                 progress: bool = True):
        """train_items / valid_items: log-mels (n_mels, T) or images (C, H, W) in [-1, 1]."""
        super().__init__(cfg.train, cfg.optim, run_dir, log, progress)
        self.cfg, t = cfg, cfg.train
        model = Tokenizer(cfg)
        self.modality = modality_of(cfg)
        self.modality.prepare(model, train_items)   # mels: normalisation from the training data
        self.frozen = start_from(model, t, log)   # train.init_from (and phase 2's freezing)
        self.objective = Objective(cfg.loss, make_perceptual(cfg))
        disc = make_discriminator(cfg)
        o = cfg.optim
        # Frozen parts stay out of the optimiser: weight decay must not move them either.
        self.opt_g = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=o.lr,
                                       betas=tuple(o.betas), weight_decay=o.weight_decay)
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, warmup(o.warmup_steps))
        self.start_ema(model)
        if disc is not None:
            self.opt_d = torch.optim.AdamW(disc.parameters(), lr=o.d_lr, betas=tuple(o.d_betas))
            self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, warmup(o.warmup_steps))
            self.model, self.d_pair, self.opt_g, self.opt_d = self.acc.prepare(
                model, RealFakeDiscriminator(disc), self.opt_g, self.opt_d)
            self.disc = self.acc.unwrap_model(self.d_pair).disc
        else:
            self.disc = self.d_pair = self.opt_d = self.sched_d = None
            self.model, self.opt_g = self.acc.prepare(model, self.opt_g)
        if self.ema is not None:
            self.ema.to(self.acc.device)
        self.run_model = self.compiled(self.model)   # the same weights; compiled when train.compile
        if self.objective.perceptual is not None:
            self.objective.perceptual.to(self.acc.device)
        self.num_workers = cfg.data.num_workers
        self.batches = self.local_batches(make_batches(cfg, self.raw_model, train_items, self.global_batch))
        self.valid_items = (valid_items or [])[: t.eval_clips]

    @property
    def raw_model(self) -> Tokenizer:
        return self.acc.unwrap_model(self.model)

    def optimizers(self) -> dict:
        return {"g": self.opt_g, **({"d": self.opt_d} if self.disc is not None else {})}

    def schedulers(self) -> dict:
        return {"g": self.sched_g, **({"d": self.sched_d} if self.disc is not None else {})}

    def checkpoint_modules(self) -> dict:
        return {**super().checkpoint_modules(), **({"discriminator": self.disc} if self.disc is not None else {})}

    def save_config(self) -> None:
        save_config(self.cfg, self.run_dir / "config.yaml")

    # ---- one step -----------------------------------------------------------------------
    def train_step(self, x: torch.Tensor, mask: torch.Tensor | None) -> dict[str, float] | None:
        """One G (and D) update on this process's rows; returns the losses, or None when no parameter
        group could be updated (non-finite gradients; every process decides alike)."""
        gan_on = self.disc is not None and self.step >= self.cfg.loss.gan_start_step
        self.model.train()
        for name in self.frozen:   # phase 2: no dropout, no codebook restarts or usage updates
            getattr(self.raw_model, name).eval()
        if not self.modality.padded_crops:   # every position is real: no mask in the losses
            mask = None
        micro = self.micro_batches(x, mask)
        sums = self.accumulate(micro, lambda xb, mb: self._micro_step(xb, mb, gan_on, len(micro)),
                               *([self.model, self.d_pair] if gan_on else [self.model]))
        if gan_on:
            sums["grad_norm_d"] = self.apply(self.opt_d, self.sched_d, {"discriminator": self.disc.parameters()})[
                "discriminator"]
        norms = self.apply(self.opt_g, self.sched_g, self.generator_groups())
        sums["grad_norm"] = norms.get("base", norms.get("generator"))
        if "refiner" in norms:
            sums["grad_norm_refiner"] = norms["refiner"]
        return self.end_step(sums)

    def generator_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        """The generator's parameters in the groups `apply` clips and skips apart. An isolated
        refiner: the base model (encoder, quantiser, decoder) learns from the draft loss alone, so
        neither the size nor the finiteness of the refiner's (GAN) gradient may touch its update:
        two groups. Shared mode or no refiner: one objective trains every weight, and it is clipped
        as one (as the reference clips the whole generator)."""
        raw = self.raw_model
        trainable = [p for p in raw.parameters() if p.requires_grad]   # phase 2: frozen parts stay out
        if raw.refiner is None or self.cfg.model.refiner.mode != "isolated":
            return {"generator": trainable}
        refiner = {id(p) for p in raw.refiner.parameters()}
        return {"base": [p for p in trainable if id(p) not in refiner],
                "refiner": [p for p in trainable if id(p) in refiner]}

    def _micro_step(self, x: torch.Tensor, mask: torch.Tensor | None, gan_on: bool, n_micro: int) -> dict:
        with self.acc.autocast():
            out = self.run_model(x, mask)
        target, fake = out.target, out.output
        if mask is not None:   # mels: padded frames are identical in real and fake for the critic
            m = mask[:, None, :]
            fake = fake * m + target * (1 - m)
        logs: dict[str, torch.Tensor] = {}
        if gan_on:
            self.disc.requires_grad_(True)
            with self.acc.autocast():
                loss_d, d_logs = self.objective.discriminator(self.d_pair, target, fake)
            logs.update(d_logs)
            self.acc.backward(loss_d / n_micro)
            self.disc.requires_grad_(False)

        draft_loss, out_loss, r_logs = self.objective.reconstruction(out, mask)
        logs.update(r_logs)
        loss_g = draft_loss + out_loss
        if gan_on:
            raw = self.raw_model
            last = raw.refiner.last_layer if raw.refiner is not None else raw.decoder.last_layer
            # The adaptive weight balances against the output's reconstruction loss: without a
            # refiner the draft is the output, so its loss counts too.
            recon = out_loss if raw.refiner is not None else out_loss + draft_loss
            with self.acc.autocast():
                adv, a_logs = self.objective.adversarial(self.disc, target, fake, recon, last)
            logs.update(a_logs)
            loss_g = loss_g + adv
        logs["g"] = loss_g
        # Backward even when a loss is not finite: every DDP process must take part in the gradient
        # all-reduce; the non-finite gradient then makes every process skip the update together.
        self.acc.backward(loss_g / n_micro)
        values = {k: v.detach() for k, v in logs.items()}
        values.update(out.stats)
        return values

    @torch.no_grad()
    def evaluate(self, metrics: MetricsLog) -> dict | None:
        if not self.valid_items or not self.acc.is_main_process:
            return None
        model = self.export_model()   # the EMA weights when enabled: what a checkpoint exports
        model.eval()
        out_dir = self.run_dir / "samples" / f"step_{self.step:08d}"
        results = self.modality.evaluate_heldout(self.cfg, model, self.valid_items, out_dir, metrics, self.step)
        metrics.write(self.step, "heldout", results)
        return results

    def best_of(self, results: dict) -> float | None:
        return results.get("refined_mse", results.get("draft_mse"))
