"""What every vqkit training run shares (tokenizers and token priors): devices and processes through
HF accelerate, step-indexed data, gradient accumulation, per-group gradient clipping and skipped
non-finite updates, EMA weights, optional torch.compile, logging, periodic evaluation, complete
checkpoints (latest k + best), exact resume and a wall-clock budget (train.max_minutes).

Data: `batches[step]` is a pure function of (seed, step) and holds the GLOBAL batch of
batch_size x grad_accum_steps x processes rows; each process takes its own rows and splits them into
micro-batches. So one process with batch 8 and two processes with batch 4 train on the same samples,
and a resumed run sees exactly the batches an uninterrupted one would.

A subclass builds its model and optimisers, then implements `train_step(*local_batch)` (updating
through `apply` and returning `end_step(the step's numbers)`: None when nothing was updated),
`evaluate(metrics)` and `best_of`.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm

from ..config import OptimConfig, TrainConfig
from ..distributed import all_reduce_mean_, broadcast_, same_everywhere
from ..io.weights import state_hash
from ..io.metrics_log import MetricsLog
from ..io.run_records import record_training_data
from .checkpoint import (CheckpointError, latest_checkpoint, load_checkpoint, rng_state, save_best,
                         save_checkpoint, set_rng_state)


class TrainingStopped(RuntimeError):
    """Training cannot go on (e.g. repeated non-finite losses); the last good checkpoint is intact."""


def warmup(steps: int) -> Callable[[int], float]:
    return lambda s: min(1.0, (s + 1) / max(1, steps))


class LocalRows(Dataset):
    """This process's rows of the global batch `batches[step]` (every tensor sliced alike)."""

    def __init__(self, batches: Dataset, rank: int, rows: int):
        self.batches, self.start, self.rows = batches, rank * rows, rows

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, step: int):
        return tuple(t[self.start: self.start + self.rows] for t in self.batches[step])


class TrainLoop:
    def __init__(self, train: TrainConfig, optim: OptimConfig, run_dir: str | Path,
                 log: Callable[[str], None] = print, progress: bool = True):
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState

        self.t, self.optim, self.run_dir, self.log, self.progress = train, optim, Path(run_dir), log, progress
        cpu = train.device == "cpu" or (train.device == "auto" and not torch.cuda.is_available())
        if train.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but no CUDA device is available")
        # accelerate keeps one global state per process; a second trainer in the same process (a
        # prior after a tokenizer, tests) may want another precision. The process group is kept.
        AcceleratorState._reset_state()
        self.acc = Accelerator(cpu=cpu, mixed_precision="bf16" if train.precision == "bf16" else "no")
        torch.manual_seed(train.seed)
        self.step = 0
        self.skipped_steps = 0
        self.best_value: float | None = None
        self.ema = None
        self.last_losses: dict[str, float] = {}
        self.skipped_groups: list[str] = []   # the parameter groups the last step did not update
        self._skipped: list[str] = []
        self._updated = False
        self.stopped_early = False            # the last fit() ended at train.max_minutes, before train.steps

    # ---- set-up helpers for subclasses ---------------------------------------------------
    @property
    def global_batch(self) -> int:
        return self.t.batch_size * self.t.grad_accum_steps * self.acc.num_processes

    def local_batches(self, batches: Dataset) -> Dataset:
        return LocalRows(batches, self.acc.process_index, self.t.batch_size * self.t.grad_accum_steps)

    def start_ema(self, model: nn.Module) -> None:
        """Keep an exponential moving average of `model` (weights and buffers) when train.ema_decay > 0."""
        if self.t.ema_decay > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(self.t.ema_decay), use_buffers=True)

    def compiled(self, module: nn.Module) -> nn.Module:
        return torch.compile(module, backend=self.t.compile_backend) if self.t.compile else module

    def micro_batches(self, *tensors: torch.Tensor | None) -> list[tuple]:
        """Split this process's rows into train.grad_accum_steps equal micro-batches."""
        k = self.t.grad_accum_steps
        # None and empty tensors (e.g. no class labels) go to every micro-batch as they are
        parts = [t.chunk(k) if t is not None and t.numel() else [t] * k for t in tensors]
        return list(zip(*parts))

    def sync_unless_last(self, i: int, n: int, *modules: nn.Module):
        """No DDP gradient all-reduce until the last micro-batch of a step."""
        if i == n - 1:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        for m in modules:
            stack.enter_context(self.acc.no_sync(m))
        return stack

    def accumulate(self, micro: list[tuple], micro_step: Callable[..., dict], *modules: nn.Module) -> dict[str, float]:
        """The step skeleton every trainer shares: `micro_step(*micro_batch)` (forward and backward of
        one micro-batch, returning what it logs) on each micro-batch, with DDP's gradient all-reduce
        on the last one only; returns the mean of each logged value over the micro-batches."""
        sums: dict[str, float] = {}
        for i, batch in enumerate(micro):
            with self.sync_unless_last(i, len(micro), *modules):
                logs = micro_step(*batch)
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + float(v) / len(micro)
        return sums

    def apply(self, opt, sched, groups: dict[str, list[nn.Parameter]]) -> dict[str, float]:
        """Clip each parameter group's gradient to optim.grad_clip on its own, step the groups whose
        gradient is finite, skip the others, and clear every gradient. Returns each group's norm
        (before clipping). Apart, so one group's large or non-finite gradient (an isolated refiner's
        GAN gradient) can neither shrink nor block another's update. After DDP's all-reduce every
        process holds the same gradients, so all compute the same norms and make the same choices."""
        clip = self.optim.grad_clip
        norms, stepped = {}, False
        for name, params in groups.items():
            params = list(params)
            norm = self.acc.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
            norms[name] = float(norm)
            if torch.isfinite(norm):
                stepped = True
            else:
                self._skipped.append(name)
                for p in params:   # AdamW leaves a parameter without a gradient (and its moments) as it is
                    p.grad = None
        if stepped:
            opt.step()
            sched.step()
            self._updated = True
        opt.zero_grad(set_to_none=True)
        return norms

    def end_step(self, values: dict[str, float]) -> dict[str, float] | None:
        """The end of every train_step: count the step, note which parameter groups `apply` skipped
        (self.skipped_groups), update the EMA when anything was updated. Returns `values`, or None
        when the whole step was skipped."""
        self.step += 1
        self.skipped_groups, self._skipped = self._skipped, []
        updated, self._updated = self._updated, False
        if self.skipped_groups:
            self.last_losses = values
        if not updated:
            return None
        if self.ema is not None:
            self.ema.update_parameters(self.raw_model)
        return values

    # ---- state ---------------------------------------------------------------------------
    def export_model(self) -> nn.Module:
        """The model a checkpoint's model.safetensors holds: the EMA weights when enabled."""
        return self.ema.module if self.ema is not None else self.raw_model

    def checkpoint_modules(self) -> dict[str, nn.Module]:
        """Further weights a complete checkpoint needs (discriminators, the online weights under EMA)."""
        return {"online_model": self.raw_model} if self.ema is not None else {}

    def train_state(self) -> dict:
        s = {"step": self.step, "skipped_steps": self.skipped_steps, "best_value": self.best_value,
             "rng": rng_state(), "optimizers": {k: o.state_dict() for k, o in self.optimizers().items()},
             "schedulers": {k: s.state_dict() for k, s in self.schedulers().items()}}
        if self.ema is not None:
            s["ema_n_averaged"] = self.ema.n_averaged
        return s

    def save(self) -> Path | None:
        """Write a checkpoint (process 0 writes; the others wait). Raises CheckpointError, with the
        previous checkpoint intact, when the disk refuses."""
        self.check_replicas()
        path = None
        try:
            if self.acc.is_main_process:
                path = save_checkpoint(self.run_dir, self.step, self.export_model(), self.checkpoint_modules(),
                                       self.train_state(), self.t.keep_last)
        finally:   # also when the save failed: no process may be left waiting at a collective
            self.acc.wait_for_everyone()
        return path

    def check_replicas(self) -> None:
        """Every process must hold the same weights and buffers (codebooks, usage counters, LeCam
        EMAs): DDP only averages gradients, so state a module changes itself could drift."""
        if self.acc.num_processes == 1:
            return
        modules = {"model": self.raw_model, **self.checkpoint_modules()}
        digest = ",".join(state_hash(m.state_dict()) for m in modules.values())
        if not same_everywhere(digest):
            raise TrainingStopped(f"step {self.step}: the processes' copies of the model differ "
                                  f"(state hashes {digest} on process {self.acc.process_index})")

    def resume(self, checkpoint: str | Path | None = None) -> bool:
        ckpt = Path(checkpoint) if checkpoint else latest_checkpoint(self.run_dir)
        if ckpt is None:
            self.log(f"no checkpoint in {self.run_dir}/checkpoints: starting from scratch")
            return False
        s = load_checkpoint(ckpt, self.export_model(), self.checkpoint_modules())
        for k, o in self.optimizers().items():
            o.load_state_dict(s["optimizers"][k])
        for k, sc in self.schedulers().items():
            sc.load_state_dict(s["schedulers"][k])
        if self.ema is not None:
            self.ema.n_averaged.copy_(s["ema_n_averaged"])
        self.step, self.skipped_steps, self.best_value = s["step"], s["skipped_steps"], s["best_value"]
        set_rng_state(s["rng"])
        self.log(f"resumed from {ckpt} at step {self.step}")
        return True

    # ---- the loop ------------------------------------------------------------------------
    def fit(self, resume: bool | str = False, data: dict | None = None) -> dict:
        """resume: False, True / "auto" (the newest complete checkpoint, or a fresh start), or a path.
        data: what to record of the training data in the run (io/run_records.record_training_data).
        Trains to train.steps, or until train.max_minutes of this call have passed: the step that
        crosses the budget is then the last, logged, evaluated and saved like a final step, and
        `--resume` continues from its checkpoint (self.stopped_early tells which happened)."""
        t = self.t
        started = time.monotonic()   # the budget of this invocation, resumed runs included
        self.stopped_early = False
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self.resume(None if resume in (True, "auto") else resume)
        if self.acc.is_main_process:
            self.save_config()
            if data is not None:
                record_training_data(self.run_dir, self.step, data)
        metrics = MetricsLog(self.run_dir, enabled=self.acc.is_main_process, resume_step=self.step)
        loader = torch.utils.data.DataLoader(
            self.batches, batch_size=None, sampler=range(self.step, t.steps), num_workers=self.num_workers,
            pin_memory=self.acc.device.type == "cuda",
            # Its own generator: creating the iterator must not draw from the global RNG (dropout),
            # or a resumed run would diverge from an uninterrupted one.
            generator=torch.Generator().manual_seed(t.seed))
        bar = tqdm(total=t.steps, initial=self.step, dynamic_ncols=True,
                   desc="train" if t.max_minutes is None else f"train (budget {t.max_minutes:g} min)",
                   disable=not (self.progress and self.acc.is_main_process))
        window: dict[str, list[float]] = {}
        consecutive_bad, t0, last, start = 0, time.time(), {}, self.step
        try:
            for batch in loader:
                batch = tuple(x.to(self.acc.device, non_blocking=True) for x in batch)
                values = self.train_step(*batch)
                if self.skipped_groups:   # some (or every) parameter group kept its weights
                    consecutive_bad += 1
                    self.skipped_steps += 1
                    if consecutive_bad >= t.max_nonfinite_steps:
                        raise TrainingStopped(self._nonfinite_message(consecutive_bad))
                else:
                    consecutive_bad = 0
                    for k, v in values.items():
                        window.setdefault(k, []).append(v)
                out_of_time = self.step < t.steps and self._out_of_time(started)
                final = self.step == t.steps or out_of_time
                if values is None and not final:
                    continue   # nothing changed: nothing to log, evaluate or save
                bar.update(self.step - bar.n)
                if window and (self.step % t.log_every == 0 or final):
                    last = self._global_means(window)
                    window = {}
                    last["lr"] = next(iter(self.schedulers().values())).get_last_lr()[0]
                    last["steps_per_s"] = (self.step - start) / max(1e-9, time.time() - t0)
                    last["samples_per_s"] = last["steps_per_s"] * self.global_batch
                    metrics.write(self.step, "train", last)
                    bar.set_postfix({k: f"{last[k]:.3f}" for k in self.progress_keys if k in last})
                if self.step % t.eval_every == 0 or final:
                    self._evaluate_and_keep_best(metrics)
                if final:
                    path = self.save()   # the final checkpoint must exist: an error here ends the run
                    if out_of_time:
                        self._stopped_for_time(metrics, started, path)
                        break
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
            self.log(f"{self.skipped_steps} step(s) skipped an update for non-finite losses or gradients")
        return last

    def _nonfinite_message(self, consecutive: int) -> str:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in self.last_losses.items())
        return (f"stopped at step {self.step}: {consecutive} consecutive steps had non-finite losses or "
                f"gradients (skipped: {', '.join(self.skipped_groups)}; last: {shown}); last good checkpoint: "
                f"{latest_checkpoint(self.run_dir)}")

    def _out_of_time(self, started: float) -> bool:
        """train.max_minutes has passed since `started` (process 0's clock, so every process stops at
        the same step)."""
        if self.t.max_minutes is None:
            return False
        late = torch.tensor([float(time.monotonic() - started >= 60 * self.t.max_minutes)], device=self.acc.device)
        return bool(broadcast_(late, 0).item())

    def _stopped_for_time(self, metrics: MetricsLog, started: float, path: Path | None) -> None:
        self.stopped_early = True
        minutes = (time.monotonic() - started) / 60
        metrics.write(self.step, "stop", {"reason": "max_minutes", "minutes": minutes,
                                          "max_minutes": self.t.max_minutes, "steps": self.t.steps})
        self.log(f"stopped at step {self.step} after {minutes:.2f} min (train.max_minutes={self.t.max_minutes:g}); "
                 f"checkpoint {path or self.run_dir / 'checkpoints'}; --resume continues to step {self.t.steps}")

    def _global_means(self, window: dict[str, list[float]]) -> dict[str, float]:
        """Window means over every process's rows (each process saw its own part of the batch)."""
        keys = sorted(window)
        means = torch.tensor([sum(window[k]) / len(window[k]) for k in keys], dtype=torch.float64)
        return dict(zip(keys, all_reduce_mean_(means.to(self.acc.device)).tolist()))

    def _evaluate_and_keep_best(self, metrics: MetricsLog) -> None:
        results = self.evaluate(metrics) if self.acc.is_main_process else None
        value = self.best_of(results) if results else None
        improved = value is not None and (self.best_value is None or value < self.best_value)
        if improved:
            self.best_value = value
            if self.t.keep_best:
                try:
                    save_best(self.run_dir, self.step, self.export_model(), self.checkpoint_modules(),
                              self.train_state(), self.t.keep_last)
                except CheckpointError as e:
                    self.log(f"warning: {e}")
        self.acc.wait_for_everyone()

    # ---- provided by subclasses ----------------------------------------------------------
    progress_keys: tuple[str, ...] = ()
    num_workers: int = 0
    batches: Dataset

    @property
    def raw_model(self) -> nn.Module:
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def schedulers(self) -> dict:
        raise NotImplementedError

    def save_config(self) -> None:
        raise NotImplementedError

    def train_step(self, *batch: torch.Tensor) -> dict[str, float] | None:
        raise NotImplementedError

    def evaluate(self, metrics: MetricsLog) -> dict | None:
        return None

    def best_of(self, results: dict) -> float | None:
        """The held-out number (lower is better) that picks the best checkpoint."""
        return None
