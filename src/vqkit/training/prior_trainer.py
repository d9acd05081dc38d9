"""Training a token prior (GPT or MaskGIT) on `vqkit encode` output. Everything but the step and the
held-out numbers is the shared loop (training/loop.py): processes, accumulation, bf16, EMA,
checkpoints, exact resume, skipped non-finite steps."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch

from ..config import save_config
from ..config.prior_schema import PriorConfig
from ..priors.prior import TokenPrior, tokens_meta
from ..priors.token_data import TokenBatches, TokenCorpus
from ..io.metrics_log import MetricsLog
from .loop import TrainLoop, warmup

EVAL_SEED = 1234   # held-out crops and MaskGIT masks: the same at every evaluation


class PriorTrainer(TrainLoop):
    progress_keys = ("nll", "acc")

    def __init__(self, cfg: PriorConfig, run_dir: str | Path, train: TokenCorpus, valid: TokenCorpus | None = None,
                 tokenizer_path: str | None = None, log: Callable[[str], None] = print, progress: bool = True):
        super().__init__(cfg.train, cfg.optim, run_dir, log, progress)
        self.cfg, t = cfg, cfg.train
        grid = self._grid(cfg, train)
        model = TokenPrior(cfg, tokens_meta(train, grid, tokenizer_path))
        o = cfg.optim
        # no weight decay on norms, biases and embeddings (the usual GPT recipe)
        decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
        rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                                      {"params": rest, "weight_decay": 0.0}], lr=o.lr, betas=tuple(o.betas))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, warmup(o.warmup_steps))
        self.start_ema(model)
        self.model, self.opt = self.acc.prepare(model, self.opt)
        if self.ema is not None:
            self.ema.to(self.acc.device)
        self.run_model = self.compiled(self.model)
        self.num_workers = cfg.data.num_workers
        crop = grid[0] if len(grid) == 1 else grid
        self.batches = self.local_batches(TokenBatches(train, crop, self.global_batch, t.seed))
        self.valid = None
        if valid is not None and len(valid):
            if valid.tokenizer_id != train.tokenizer_id:
                raise ValueError(f"{valid.root}: held-out tokens come from tokenizer {valid.tokenizer_id}, "
                                 f"the training tokens from {train.tokenizer_id}")
            self.valid = TokenBatches(valid, crop, t.batch_size, EVAL_SEED)

    @staticmethod
    def _grid(cfg: PriorConfig, corpus: TokenCorpus) -> tuple[int, ...]:
        crop = tuple(cfg.data.crop)
        want = corpus.spatial_axes
        if len(crop) != want:
            raise ValueError(f"data.crop={list(crop)}: {corpus.modality} tokens need "
                             f"{'[positions]' if want == 1 else '[h, w]'}")
        return crop

    @property
    def raw_model(self) -> TokenPrior:
        return self.acc.unwrap_model(self.model)

    def optimizers(self) -> dict:
        return {"prior": self.opt}

    def schedulers(self) -> dict:
        return {"prior": self.sched}

    def save_config(self) -> None:
        save_config(self.cfg, self.run_dir / "config.yaml")

    def train_step(self, tokens: torch.Tensor, labels: torch.Tensor) -> dict[str, float] | None:
        self.model.train()
        micro = self.micro_batches(tokens, labels)

        def micro_step(tb: torch.Tensor, lb: torch.Tensor) -> dict:
            with self.acc.autocast():
                # through the (DDP / compiled) wrapper's forward: TokenPrior.forward is its loss
                nll, stats = self.run_model(tb, lb)
            self.acc.backward(nll / len(micro))
            return stats

        sums = self.accumulate(micro, micro_step, self.model)
        # a non-finite nll gives a non-finite gradient, which skips the update
        sums["grad_norm"] = self.apply(self.opt, self.sched, {"prior": self.model.parameters()})["prior"]
        return self.end_step(sums)

    @torch.no_grad()
    def evaluate(self, metrics: MetricsLog) -> dict | None:
        if self.valid is None or not self.acc.is_main_process:
            return None
        model = self.export_model().eval()
        device = next(model.parameters()).device
        g = torch.Generator(device=device).manual_seed(EVAL_SEED)
        n_batches = max(1, math.ceil(self.cfg.train.eval_clips / self.cfg.train.batch_size))
        totals = {"nll": 0.0, "acc": 0.0}
        for b in range(n_batches):
            tokens, labels = (x.to(device) for x in self.valid[b])
            _, stats = model.loss(tokens, labels, generator=g)
            for k in totals:
                totals[k] += stats[k] / n_batches
        results = {**totals, "perplexity": math.exp(totals["nll"]),
                   "uniform_nll": math.log(model.codebook_size)}
        metrics.write(self.step, "heldout", results)
        return results

    def best_of(self, results: dict) -> float | None:
        return results["nll"]
