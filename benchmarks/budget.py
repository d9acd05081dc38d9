"""Quality at a fixed compute budget (shared by bench_token_rate.py, bench_refiner.py and
bench_quantizer_usage.py; not a benchmark itself).

Each configuration is trained through the real command line for the same wall-clock budget
(`vqkit train ... train.max_minutes=M`), one at a time so that every run has the cores to itself,
then scored on the held-out clips with `vqkit eval`. Codebook usage is also counted over the
training corpus (`vqkit encode` of the training folder), because a held-out set of a minute holds
too few tokens to use a large codebook: usage there is bounded by tokens / codebook size, and the
table says that bound.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

VQKIT = [sys.executable, "-m", "vqkit"]


@dataclass
class BudgetRun:
    name: str
    preset: str
    overrides: list[str] = field(default_factory=list)


def _run(cmd: list[str], log: Path, threads: int | None) -> float:
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}; see {log}")
    return time.perf_counter() - t0


def _trained(run_dir: Path) -> dict:
    """Steps trained and the last logged training speed, from metrics.jsonl."""
    steps, speed = 0, None
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        steps = max(steps, int(rec.get("step", 0)))
        if rec.get("split") == "train" and "steps_per_s" in rec:
            speed = rec["steps_per_s"]
    return {"steps": steps, "steps_per_s": speed}


def _corpus_usage(token_dir: Path) -> dict:
    counts, tokens = None, 0
    for path in sorted(token_dir.rglob("*.npy")):
        t = np.load(path).reshape(-1)
        side = json.loads(path.with_suffix(".json").read_text())
        k = int(side["codebook_size"])
        counts = np.zeros(k, np.int64) if counts is None else counts
        counts += np.bincount(t.astype(np.int64), minlength=k)
        tokens += t.size
    p = counts[counts > 0] / tokens
    return {"train_tokens": tokens, "train_codes_used": int((counts > 0).sum()),
            "train_usage": float((counts > 0).mean()), "train_usage_bound": min(1.0, tokens / counts.size),
            "train_perplexity": float(np.exp(-(p * np.log(p)).sum()))}


def finished(run_dir: Path) -> bool:
    """A run trained, evaluated and encoded to the end (what `reuse` may collect without retraining)."""
    return (run_dir / "report" / "metrics.json").is_file() and (run_dir / "train-tokens").is_dir()


def train_and_score(run: BudgetRun, minutes: float, corpus: Path, out_root: Path, threads: int | None,
                    examples: int = 2, reuse: bool = False) -> dict:
    """Train `run` for `minutes` on corpus/train, evaluate on corpus/heldout; returns every number.
    With `reuse`, a run folder that already finished is scored again as it stands (wall times unknown)."""
    run_dir = out_root / run.name
    if reuse and finished(run_dir):
        return collect(run, run_dir, minutes, None, None)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    log = run_dir / "bench.log"
    train_s = _run([*VQKIT, "train", "--preset", run.preset, "--data", str(corpus / "train"),
                    "--valid-data", str(corpus / "heldout"), "--out", str(run_dir), "--no-progress",
                    f"train.max_minutes={minutes}", "train.steps=100000000", *run.overrides], log, threads)
    eval_s = _run([*VQKIT, "eval", str(run_dir), "--data", str(corpus / "heldout"), "--out",
                   str(run_dir / "report"), "--examples", str(examples), "--no-progress"], log, threads)
    _run([*VQKIT, "encode", str(run_dir), str(corpus / "train"), "-o", str(run_dir / "train-tokens"), "--quiet"],
         log, threads)
    return collect(run, run_dir, minutes, train_s, eval_s)


def collect(run: BudgetRun, run_dir: Path, minutes: float, train_s: float | None, eval_s: float | None) -> dict:
    record = json.loads((run_dir / "report" / "metrics.json").read_text())
    info = subprocess.run([*VQKIT, "info", str(run_dir)], capture_output=True, text=True, check=True).stdout
    m = record["metrics"]
    if "tokens_per_second" in m:   # mels: held-out seconds x rate
        heldout_tokens = m["seconds"] * m["tokens_per_second"]
    else:                          # images: each held-out file's token grid (the eval crop)
        heldout_tokens = record["data"]["files"] * int(np.prod(m["token_grid"]))
    return {"name": run.name, "preset": run.preset, "overrides": run.overrides, "minutes": minutes,
            "train_wall_s": train_s, "eval_wall_s": eval_s, **_trained(run_dir), "info": json.loads(info),
            **m, "heldout_usage_bound": min(1.0, heldout_tokens / m["codebook_size"]),
            **_corpus_usage(run_dir / "train-tokens")}
