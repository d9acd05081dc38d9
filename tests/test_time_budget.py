"""train.max_minutes: training stops at the first step past the wall-clock budget of the call, with
that step logged, evaluated and saved as a complete checkpoint that `--resume` continues exactly,
for tokenizers and token priors alike (one loop)."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY
from vqkit.config import load_config
from vqkit.config.prior_schema import PriorConfig
from vqkit.models.tokenizer import Tokenizer
from vqkit.training.checkpoint import latest_checkpoint
from vqkit.training.state_io import load_state
from vqkit.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("single_thread")
# the benchmark setting: a budget, and more steps than it allows (warm-up and cadences unchanged)
BUDGET = ["train.steps=1000000", "train.max_minutes=0.01", "train.log_every=1000", "train.eval_every=1000",
          "train.save_every=1000"]


def records(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_max_minutes_stops_with_a_resumable_checkpoint(tmp_path, synthetic_mels):
    # cpu: the bitwise comparison with an uninterrupted run needs deterministic kernels
    common = TINY + ["loss.gan_start_step=2", "train.log_every=1000", "train.eval_every=1000", "train.device=cpu"]
    logs: list[str] = []
    cut = Trainer(load_config("mqgan-refiner", overrides=common + BUDGET), tmp_path / "cut", synthetic_mels,
                  synthetic_mels[:2], log=logs.append, progress=False)
    cut.fit()
    n = cut.step
    assert cut.stopped_early and 1 <= n < 1000
    assert any(f"stopped at step {n} after 0.0" in m and "min (train.max_minutes=0.01)" in m for m in logs), logs
    ckpt = latest_checkpoint(tmp_path / "cut")
    assert ckpt.name == f"step_{n:08d}"
    assert load_state(ckpt, "train_state")["step"] == n
    Tokenizer.from_pretrained(ckpt)   # loadable for inference
    by_split = {r["split"]: r for r in records(tmp_path / "cut") if r["step"] == n}
    assert by_split.keys() == {"train", "heldout", "stop"}   # logged, evaluated, and the stop itself
    stop = by_split["stop"]
    assert stop["reason"] == "max_minutes" and stop["max_minutes"] == 0.01 and stop["steps"] == 1000000
    assert stop["minutes"] >= 0.01

    # --resume continues to train.steps, exactly as a run that was never stopped
    target = ["train.steps=" + str(n + 2)]
    resumed = Trainer(load_config("mqgan-refiner", overrides=common + target), tmp_path / "cut", synthetic_mels,
                      log=logs.append, progress=False)
    resumed.fit(resume=True)
    assert resumed.step == n + 2 and not resumed.stopped_early
    whole = Trainer(load_config("mqgan-refiner", overrides=common + target), tmp_path / "whole", synthetic_mels,
                    log=logs.append, progress=False)
    whole.fit()
    for name in ("model.safetensors", "discriminator.safetensors"):
        a = load_file(str(latest_checkpoint(tmp_path / "whole") / name))
        b = load_file(str(latest_checkpoint(tmp_path / "cut") / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    after = records(tmp_path / "cut")
    assert [r["split"] for r in after if r["step"] > n] == ["train"]   # the final step's log
    assert [r["step"] for r in after if r["split"] == "stop"] == [n]     # the stop stays in the history


def test_max_minutes_stops_a_token_prior(tmp_path, synthetic_mels):
    from vqkit.priors.token_data import TokenCorpus
    from vqkit.tokens_io import save_tokens
    from vqkit.training.prior_trainer import PriorTrainer

    tok = Tokenizer(load_config("mqgan-refiner", overrides=TINY)).eval()
    tok.save_pretrained(tmp_path / "tok")
    with torch.no_grad():
        for i, mel in enumerate(synthetic_mels):
            save_tokens(tmp_path / "tokens" / f"{i}.npy", tok.encode(mel).numpy(), tok)
    corpus = TokenCorpus.from_folder(tmp_path / "tokens", log=lambda m: None)
    cfg = load_config("prior-gpt", schema=PriorConfig, overrides=[
        "model.dim=32", "model.depth=2", "model.heads=2", "train.batch_size=4", "data.crop=[16]", *BUDGET])
    logs: list[str] = []
    t = PriorTrainer(cfg, tmp_path / "prior", corpus, corpus, log=logs.append, progress=False)
    t.fit()
    assert t.stopped_early and 1 <= t.step < 1000
    assert any(f"stopped at step {t.step} after" in m for m in logs)
    assert load_state(latest_checkpoint(tmp_path / "prior"), "train_state")["step"] == t.step
    assert {r["split"] for r in records(tmp_path / "prior") if r["step"] == t.step} == {"train", "heldout", "stop"}
