"""One training loop for every tokenizer (mel or image): generator and discriminator steps, GAN
warm-up, SeQ-GAN phase 2, held-out evaluation, samples, complete checkpoints and exact resume.

Per step: (1) the tokenizer runs on a batch; (2) once the GAN has started, the discriminator is
updated on real vs the detached output (+ LeCam); (3) the generator is updated on the Objective's
reconstruction, perceptual and adversarial losses. The discriminators stay in train mode throughout
(the reference flipped them to eval, freezing spectral norm).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from ..config import Config, save_config
from ..data.crops import normalization_stats
from ..losses.objective import Objective
from ..models.tokenizer import Tokenizer
from .checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .components import make_batches, make_discriminator, make_perceptual, start_phase_2
from .metrics_log import MetricsLog


class TrainingStopped(RuntimeError):
    """Training cannot go on (e.g. repeated non-finite losses); the last good checkpoint is intact."""


def _warmup(steps: int) -> Callable[[int], float]:
    return lambda s: min(1.0, (s + 1) / max(1, steps))


class Trainer:
    def __init__(self, cfg: Config, run_dir: str | Path, train_items: list[torch.Tensor],
                 valid_items: list[torch.Tensor] | None = None, log: Callable[[str], None] = print,
                 progress: bool = True):
        """train_items / valid_items: log-mels (n_mels, T) or images (C, H, W) in [-1, 1]."""
        from accelerate import Accelerator

        self.cfg, self.run_dir, self.log, self.progress = cfg, Path(run_dir), log, progress
        t = cfg.train
        cpu = t.device == "cpu" or (t.device == "auto" and not torch.cuda.is_available())
        if t.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but no CUDA device is available")
        self.acc = Accelerator(cpu=cpu, mixed_precision="bf16" if t.precision == "bf16" else "no")
        torch.manual_seed(t.seed)
        self.model = Tokenizer(cfg)
        self.image = cfg.model.modality == "image"
        if not self.image:
            self.model.set_normalization(*normalization_stats(train_items))
        self.frozen = start_phase_2(self.model, t.init_from, log) if t.phase == 2 else []
        self.objective = Objective(cfg.loss, make_perceptual(cfg))
        self.disc = make_discriminator(cfg)
        o = cfg.optim
        # Frozen parts stay out of the optimiser: weight decay must not move them either.
        self.opt_g = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=o.lr,
                                       betas=tuple(o.betas), weight_decay=o.weight_decay)
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, _warmup(o.warmup_steps))
        if self.disc is not None:
            self.opt_d = torch.optim.AdamW(self.disc.parameters(), lr=o.d_lr, betas=tuple(o.d_betas))
            self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, _warmup(o.warmup_steps))
            self.model, self.disc, self.opt_g, self.opt_d = self.acc.prepare(self.model, self.disc, self.opt_g, self.opt_d)
        else:
            self.opt_d = self.sched_d = None
            self.model, self.opt_g = self.acc.prepare(self.model, self.opt_g)
        if self.objective.perceptual is not None:
            self.objective.perceptual.to(self.acc.device)
        self.batches = make_batches(cfg, self.raw_model, train_items)
        self.valid_items = (valid_items or [])[: t.eval_clips]
        self.step = 0
        self.skipped_steps = 0
        self.best_heldout: float | None = None

    @property
    def raw_model(self) -> Tokenizer:
        return self.acc.unwrap_model(self.model)

    # ---- state --------------------------------------------------------------------------
    def train_state(self) -> dict:
        s = {"step": self.step, "skipped_steps": self.skipped_steps, "best_heldout": self.best_heldout,
             "opt_g": self.opt_g.state_dict(), "sched_g": self.sched_g.state_dict(), "rng": rng_state()}
        if self.disc is not None:
            s.update(opt_d=self.opt_d.state_dict(), sched_d=self.sched_d.state_dict())
        return s

    def save(self) -> Path:
        disc = self.acc.unwrap_model(self.disc) if self.disc is not None else None
        path = save_checkpoint(self.run_dir, self.step, self.raw_model, disc, self.train_state(),
                               self.cfg.train.keep_last)
        return path

    def resume(self) -> bool:
        ckpt = latest_checkpoint(self.run_dir)
        if ckpt is None:
            self.log(f"no checkpoint in {self.run_dir}/checkpoints: starting from scratch")
            return False
        disc = self.acc.unwrap_model(self.disc) if self.disc is not None else None
        s = load_checkpoint(ckpt, self.raw_model, disc)
        self.opt_g.load_state_dict(s["opt_g"])
        self.sched_g.load_state_dict(s["sched_g"])
        if self.disc is not None:
            self.opt_d.load_state_dict(s["opt_d"])
            self.sched_d.load_state_dict(s["sched_d"])
        self.step, self.skipped_steps, self.best_heldout = s["step"], s["skipped_steps"], s["best_heldout"]
        set_rng_state(s["rng"])
        self.log(f"resumed from {ckpt} at step {self.step}")
        return True

    # ---- one step -----------------------------------------------------------------------
    def _clip(self, params) -> torch.Tensor:
        clip = self.cfg.optim.grad_clip
        return self.acc.clip_grad_norm_(params, clip if clip > 0 else float("inf"))

    def train_step(self, x: torch.Tensor, mask: torch.Tensor | None) -> dict[str, float] | None:
        """One G (and D) update; returns the losses, or None when the step was skipped as non-finite."""
        gan_on = self.disc is not None and self.step >= self.cfg.loss.gan_start_step
        self.model.train()
        for name in self.frozen:   # phase 2: no dropout, no codebook restarts or usage updates
            getattr(self.raw_model, name).eval()
        with self.acc.autocast():
            out = self.model(x, mask)
        target, fake = out.target, out.output
        if mask is not None:   # mels: padded frames are identical in real and fake for the critic
            m = mask[:, None, :]
            fake = fake * m + target * (1 - m)
        logs: dict[str, torch.Tensor] = {}
        if gan_on:
            self.disc.requires_grad_(True)
            with self.acc.autocast():
                loss_d, d_logs = self.objective.discriminator(self.disc, target, fake)
            logs.update(d_logs)
            self.opt_d.zero_grad(set_to_none=True)
            if torch.isfinite(loss_d):
                self.acc.backward(loss_d)
                if torch.isfinite(self._clip(self.disc.parameters())):
                    self.opt_d.step()
                    self.sched_d.step()
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
        self.opt_g.zero_grad(set_to_none=True)
        finite = bool(torch.isfinite(loss_g))
        if finite:
            self.acc.backward(loss_g)
            logs["grad_norm"] = self._clip([p for p in self.model.parameters() if p.requires_grad])
            finite = bool(torch.isfinite(logs["grad_norm"]))
        if finite:
            self.opt_g.step()
            self.sched_g.step()
        self.step += 1
        values = {k: float(v.detach()) for k, v in logs.items()}
        values.update({k: float(v) for k, v in out.stats.items()})
        return values if finite else None

    # ---- loop ---------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict:
        cfg, t = self.cfg, self.cfg.train
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self.resume()
        save_config(cfg, self.run_dir / "config.yaml")
        metrics = MetricsLog(self.run_dir, enabled=self.acc.is_main_process)
        loader = torch.utils.data.DataLoader(
            self.batches, batch_size=None, sampler=range(self.step, t.steps), num_workers=cfg.data.num_workers,
            pin_memory=self.acc.device.type == "cuda",
            # Its own generator: creating the iterator must not draw from the global RNG (dropout),
            # or a resumed run would diverge from an uninterrupted one.
            generator=torch.Generator().manual_seed(t.seed))
        bar = tqdm(total=t.steps, initial=self.step, desc="train", dynamic_ncols=True,
                   disable=not (self.progress and self.acc.is_main_process))
        window: dict[str, list[float]] = {}
        consecutive_bad, t0, last, start = 0, time.time(), {}, self.step
        try:
            for x, mask in loader:
                x = x.to(self.acc.device)
                mask = None if self.image else mask.to(self.acc.device)
                values = self.train_step(x, mask)
                if values is None:
                    consecutive_bad += 1
                    self.skipped_steps += 1
                    if consecutive_bad >= t.max_nonfinite_steps:
                        raise TrainingStopped(
                            f"stopped at step {self.step}: {consecutive_bad} consecutive steps had non-finite "
                            f"losses or gradients; last good checkpoint: {latest_checkpoint(self.run_dir)}")
                    continue
                consecutive_bad = 0
                for k, v in values.items():
                    window.setdefault(k, []).append(v)
                bar.update(self.step - bar.n)
                if self.step % t.log_every == 0 or self.step == t.steps:
                    last = {k: sum(v) / len(v) for k, v in window.items()}
                    window = {}
                    last["lr"] = self.sched_g.get_last_lr()[0]
                    last["steps_per_s"] = (self.step - start) / max(1e-9, time.time() - t0)
                    metrics.write(self.step, "train", last)
                    bar.set_postfix({k: f"{last[k]:.3f}" for k in ("draft_mse", "refined_mse", "perceptual", "g_adv", "d")
                                     if k in last})
                if self.step % t.eval_every == 0 or self.step == t.steps:
                    self.evaluate(metrics)
                if self.step == t.steps:
                    self.save()   # the final checkpoint must exist: an error here ends the run
                elif self.step % t.save_every == 0:
                    try:
                        self.save()
                    except CheckpointError as e:   # e.g. disk full: keep training, try again later
                        self.log(f"warning: {e}")
        except KeyboardInterrupt:
            self.log(f"interrupted at step {self.step}: saving a checkpoint to resume from")
            self.save()
            raise
        finally:
            bar.close()
            metrics.close()
        if self.skipped_steps:
            self.log(f"{self.skipped_steps} step(s) were skipped for non-finite losses or gradients")
        return last

    @torch.no_grad()
    def evaluate(self, metrics: MetricsLog) -> dict | None:
        if not self.valid_items or not self.acc.is_main_process:
            return None
        model = self.raw_model
        model.eval()
        out_dir = self.run_dir / "samples" / f"step_{self.step:08d}"
        if self.image:
            from ..evaluation.image_eval import evaluate_images, write_image_samples

            results, examples = evaluate_images(model, self.valid_items, crop=2 * self.cfg.data.image_size)
            write_image_samples(out_dir, examples, metrics, self.step)
        else:
            from ..evaluation.mel_eval import evaluate_mels, write_samples

            results, examples = evaluate_mels(model, self.valid_items, max_frames=4 * self.cfg.data.segment_frames)
            write_samples(out_dir, examples[:2], model, metrics, self.step)
        metrics.write(self.step, "heldout", results)
        key = "refined_mse" if "refined_mse" in results else "draft_mse"
        if self.best_heldout is None or results[key] < self.best_heldout:
            self.best_heldout = results[key]
        return results
