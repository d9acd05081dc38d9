"""Training that scales and survives: several processes (gloo on CPU), gradient accumulation, bf16,
torch.compile, EMA, keep-last + best checkpoints, `--resume auto`, and a SIGKILL in mid-run."""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY
from vqkit.config import load_config
from vqkit.training.checkpoint import best_checkpoint, latest_checkpoint
from vqkit.training.trainer import Trainer

quiet = lambda m: None  # noqa: E731
pytestmark = pytest.mark.usefixtures("single_thread")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def make_cfg(*extra, preset="mqgan-refiner"):
    return load_config(preset, overrides=TINY + list(extra))


def train_records(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["split"] == "train"]


def final_weights(run: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(str(latest_checkpoint(run) / name))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vqkit(*args: str, processes: int = 1, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m vqkit ...`, or the same under torchrun with several CPU processes (gloo)."""
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                 "--master_addr", "127.0.0.1", "--master_port", str(free_port())] if processes > 1 else [sys.executable])
    p = subprocess.run([*launcher, "-m", "vqkit", *args], env=ENV, capture_output=True, text=True, timeout=300)
    if check:
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return p


MEL_RUN = [*TINY, "train.steps=4", "train.save_every=4", "train.eval_every=100", "train.log_every=1",
           "loss.gan_start_step=1", "data.valid_fraction=0"]


@pytest.mark.slow
def test_two_processes_train_like_one_process_with_the_same_global_batch(demo_dir, tmp_path):
    data = str(demo_dir / "train")
    vqkit("train", "--preset", "mqgan-refiner", "--data", data, "--out", str(tmp_path / "one"), "--no-progress",
          *MEL_RUN, "train.batch_size=4")
    two = vqkit("train", "--preset", "mqgan-refiner", "--data", data, "--out", str(tmp_path / "two"), "--no-progress",
                *MEL_RUN, "train.batch_size=2", processes=2)
    assert two.stdout.count("training mqgan-refiner") == 1   # one process speaks
    one_log, two_log = train_records(tmp_path / "one"), train_records(tmp_path / "two")
    assert [r["step"] for r in two_log] == [1, 2, 3, 4]
    for a, b in zip(one_log, two_log):   # losses are means over the global batch in both runs
        for key in ("g", "draft_mse", "refined_mse", "d", "g_adv"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["step"], key)
    assert "d" in two_log[-1]   # the GAN (and the DDP-wrapped discriminator) ran
    for name in ("model.safetensors", "discriminator.safetensors"):
        wa, wb = final_weights(tmp_path / "one", name), final_weights(tmp_path / "two", name)
        assert wa.keys() == wb.keys()
        for k in wa:
            torch.testing.assert_close(wb[k], wa[k], rtol=1e-3, atol=5e-4, msg=f"{name}: {k}")


@pytest.mark.slow
def test_codebook_restarts_and_usage_stay_identical_across_processes(tmp_path):
    """VQ with dead-code restarts and the entropy regulariser, 2 processes: every checkpoint save
    compares the processes' weight hashes (Trainer.check_replicas) and would stop the run."""
    skdata = pytest.importorskip("skimage.data")
    from PIL import Image

    images = tmp_path / "images"   # --out may not lie inside --data
    images.mkdir()
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        Image.fromarray(getattr(skdata, name)()).resize((96, 64)).save(images / f"{name}.png")
    out = tmp_path / "run"
    vqkit("train", "--preset", "vqgan-l2", "--data", str(images), "--out", str(out), "--no-progress",
          "data.image_size=32", "model.backbone.channels=[16,32]", "train.batch_size=2", "train.steps=6",
          "train.save_every=2", "train.eval_every=100", "train.log_every=1", "data.valid_fraction=0",
          "loss.gan_start_step=2", "model.quantizer.codebook_size=64", "model.quantizer.restart_dead_codes=true",
          "model.quantizer.usage_decay=0.5", "model.quantizer.dead_code_threshold=1.0",
          "model.quantizer.entropy_weight=0.01", processes=2)
    log = train_records(out)
    assert sum(r["restarted"] for r in log) > 0      # codes were re-seeded during the run ...
    assert latest_checkpoint(out).name == "step_00000006"   # ... and three saves found equal replicas


def test_gradient_accumulation_equals_a_larger_batch(tmp_path, synthetic_mels):
    # LeCam's EMA would be updated once per micro-batch instead of once per step: off here.
    common = ["train.steps=3", "train.log_every=1", "loss.gan_start_step=1", "loss.lecam=0", "train.save_every=3"]
    big = Trainer(make_cfg(*common, "train.batch_size=4"), tmp_path / "big", synthetic_mels, log=quiet, progress=False)
    acc = Trainer(make_cfg(*common, "train.batch_size=2", "train.grad_accum_steps=2"), tmp_path / "acc",
                  synthetic_mels, log=quiet, progress=False)
    big.fit()
    acc.fit()
    assert big.global_batch == acc.global_batch == 4
    for a, b in zip(train_records(tmp_path / "big"), train_records(tmp_path / "acc")):
        assert b["g"] == pytest.approx(a["g"], rel=1e-5)
    wa, wb = big.raw_model.state_dict(), acc.raw_model.state_dict()
    for k in wa:
        # Adam divides by sqrt(v): float noise in near-zero gradients moves a weight by up to ~lr
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-3, atol=5e-4, msg=k)
    # and it is a real change of batch: one micro-batch of 2 trains differently
    small = Trainer(make_cfg(*common, "train.batch_size=2"), tmp_path / "small", synthetic_mels, log=quiet,
                    progress=False)
    small.fit()
    assert train_records(tmp_path / "small")[0]["g"] != pytest.approx(train_records(tmp_path / "big")[0]["g"], rel=1e-3)


def test_bf16_autocast_keeps_the_quantizer_in_float32(tmp_path, synthetic_mels):
    t = Trainer(make_cfg("train.precision=bf16", "train.steps=2", "loss.gan_start_step=1", "train.save_every=2"),
                tmp_path, synthetic_mels, log=quiet, progress=False)
    seen = {}

    def hook(module, inputs, output):
        seen["in"], seen["out"] = inputs[0].dtype, output.z_q.dtype

    t.raw_model.quantizer.register_forward_hook(hook)
    enc = {}
    t.raw_model.encoder.register_forward_hook(lambda m, i, o: enc.update(dtype=o.dtype))
    last = t.fit()
    assert enc["dtype"] == torch.bfloat16           # autocast is on for the network ...
    assert seen["out"] == torch.float32              # ... and the quantiser computes in float32
    assert all(torch.isfinite(torch.tensor(v)) for k, v in last.items() if isinstance(v, float))


def test_compile_trains_with_the_same_losses(tmp_path, synthetic_mels):
    common = ["train.steps=2", "train.log_every=1", "loss.gan_start_step=1", "train.save_every=2"]
    Trainer(make_cfg(*common), tmp_path / "eager", synthetic_mels, log=quiet, progress=False).fit()
    # aot_eager traces the whole graph like inductor, without its minutes of code generation on CPU
    c = Trainer(make_cfg(*common, "train.compile=true", "train.compile_backend=aot_eager"), tmp_path / "compiled",
                synthetic_mels, log=quiet, progress=False)
    assert c.run_model is not c.model and hasattr(c.run_model, "_orig_mod")
    c.fit()
    for a, b in zip(train_records(tmp_path / "eager"), train_records(tmp_path / "compiled")):
        assert b["g"] == pytest.approx(a["g"], rel=1e-5)
    assert "_orig_mod" not in "".join(final_weights(tmp_path / "compiled"))   # checkpoints keep plain names


def test_ema_weights_are_evaluated_exported_and_resumed(tmp_path, synthetic_mels):
    extra = ["train.ema_decay=0.8", "train.log_every=1", "train.save_every=3", "train.eval_every=6",
             "loss.gan_start_step=2"]
    full = Trainer(make_cfg("train.steps=6", *extra), tmp_path / "full", synthetic_mels, synthetic_mels[:2],
                   log=quiet, progress=False)
    full.fit()
    ckpt = latest_checkpoint(tmp_path / "full")
    exported, online = load_file(str(ckpt / "model.safetensors")), load_file(str(ckpt / "online_model.safetensors"))
    ema_state = full.ema.module.state_dict()
    raw_state = full.raw_model.state_dict()
    assert all(torch.equal(exported[k], ema_state[k]) for k in exported)
    assert all(torch.equal(online[k], raw_state[k]) for k in online)
    assert any(not torch.equal(exported[k], online[k]) for k in exported)   # EMA lags the online weights
    # held-out numbers are the EMA model's
    from vqkit.evaluation.mel_eval import evaluate_mels

    heldout = [r for r in map(json.loads, (tmp_path / "full" / "metrics.jsonl").read_text().splitlines())
               if r["split"] == "heldout"][-1]
    expected, _ = evaluate_mels(full.ema.module.eval(), synthetic_mels[:2], max_frames=4 * 32)
    assert heldout["draft_mse"] == pytest.approx(expected["draft_mse"], rel=1e-5)
    # resume restores online + EMA weights exactly
    Trainer(make_cfg("train.steps=3", *extra), tmp_path / "split", synthetic_mels, log=quiet, progress=False).fit()
    resumed = Trainer(make_cfg("train.steps=6", *extra), tmp_path / "split", synthetic_mels, log=quiet, progress=False)
    resumed.fit(resume="auto")
    again = latest_checkpoint(tmp_path / "split")
    for name in ("model.safetensors", "online_model.safetensors"):
        a, b = load_file(str(ckpt / name)), load_file(str(again / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_keeps_the_last_k_and_the_best_checkpoint(tmp_path, synthetic_mels):
    cfg = make_cfg("train.steps=8", "train.save_every=2", "train.eval_every=2", "train.keep_last=2",
                   "optim.lr=3e-2", "loss.gan_start_step=100")
    Trainer(cfg, tmp_path, synthetic_mels, synthetic_mels[:2], log=quiet, progress=False).fit()
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.glob("step_*")) == ["step_00000006", "step_00000008"]
    held = [r for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines()) if r["split"] == "heldout"]
    best = min(held, key=lambda r: r["refined_mse"])
    assert best_checkpoint(tmp_path).name == f"best_step_{best['step']:08d}"
    assert len(list(root.glob("best_step_*"))) == 1
    state = json.loads((best_checkpoint(tmp_path) / "train_state.json").read_text())
    assert ["str", "best_value"] in [k for k, _ in state["__dict__"]]
    assert not any(p.name.startswith(".") for p in root.iterdir())   # no temporary leftovers


def test_resume_auto_takes_the_newest_complete_checkpoint(tmp_path, synthetic_mels):
    cfg = make_cfg("train.steps=4", "train.save_every=2", "train.keep_last=3", "train.log_every=1")
    Trainer(cfg, tmp_path, synthetic_mels, log=quiet, progress=False).fit()
    root = tmp_path / "checkpoints"
    # what a crash can leave: a half-written temp dir and a newer step dir without its train state
    (root / ".step_00000006.tmp-999").mkdir()
    (root / ".step_00000006.tmp-999" / "model.safetensors").write_bytes(b"partial")
    partial = root / "step_00000005"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes((root / "step_00000004" / "model.safetensors").read_bytes())
    (root / "latest").write_text("step_00000002\n")   # a stale pointer must not win either
    assert latest_checkpoint(tmp_path) == root / "step_00000004"
    t = Trainer(make_cfg("train.steps=6", "train.save_every=2", "train.log_every=1"), tmp_path, synthetic_mels,
                log=quiet, progress=False)
    t.fit(resume="auto")
    assert t.step == 6 and latest_checkpoint(tmp_path).name == "step_00000006"
    assert [r["step"] for r in train_records(tmp_path)] == [1, 2, 3, 4, 5, 6]
    fresh = Trainer(cfg, tmp_path / "new", synthetic_mels, log=quiet, progress=False)
    fresh.fit(resume="auto")   # nothing to resume: a fresh start, so one command serves every restart
    assert fresh.step == 4


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_equals_an_uninterrupted_run(demo_dir, tmp_path):
    kill_at = random.Random().randint(4, 20)
    args = ["--preset", "mqgan-refiner", "--data", str(demo_dir / "train"), "--no-progress", *TINY,
            "train.steps=24", "train.save_every=3", "train.log_every=1", "train.eval_every=1000",
            "loss.gan_start_step=4", "data.valid_fraction=0"]
    vqkit("train", *args, "--out", str(tmp_path / "whole"))
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "vqkit", "train", *args, "--out", str(killed)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        log = killed / "metrics.jsonl"
        if log.exists() and any(json.loads(x)["step"] >= kill_at for x in log.read_text().splitlines() if x.endswith("}")):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    assert proc.wait(timeout=60) == -signal.SIGKILL, f"the run ended before step {kill_at}"
    vqkit("train", *args, "--out", str(killed), "--resume")
    whole, resumed = train_records(tmp_path / "whole"), train_records(killed)
    assert [r["step"] for r in resumed] == list(range(1, 25)), f"killed at step {kill_at}"
    for a, b in zip(whole, resumed):
        assert {k: v for k, v in a.items() if k not in ("time", "steps_per_s", "samples_per_s")} == \
               {k: v for k, v in b.items() if k not in ("time", "steps_per_s", "samples_per_s")}, f"killed at {kill_at}"
    for name in ("model.safetensors", "discriminator.safetensors"):
        wa, wb = final_weights(tmp_path / "whole", name), final_weights(killed, name)
        assert all(torch.equal(wa[k], wb[k]) for k in wa), f"{name}, killed at step {kill_at}"


def test_dataloader_workers_feed_the_same_batches(tmp_path, synthetic_mels):
    """Batches are a pure function of the step, so worker processes change nothing but speed."""
    common = ["train.steps=3", "train.log_every=1", "train.save_every=3"]
    Trainer(make_cfg(*common), tmp_path / "main", synthetic_mels, log=quiet, progress=False).fit()
    Trainer(make_cfg(*common, "data.num_workers=2"), tmp_path / "workers", synthetic_mels, log=quiet,
            progress=False).fit()
    a, b = train_records(tmp_path / "main"), train_records(tmp_path / "workers")
    assert [r["g"] for r in a] == [r["g"] for r in b]


@pytest.mark.slow
def test_two_processes_stop_together_at_the_time_budget(demo_dir, tmp_path):
    """train.max_minutes: process 0's clock decides, so both processes stop at the same step (one
    that stopped alone would leave the other waiting in a collective)."""
    out = tmp_path / "budget"
    p = vqkit("train", "--preset", "mqgan-refiner", "--data", str(demo_dir / "train"), "--out", str(out),
              "--no-progress", *MEL_RUN, "train.batch_size=2", "train.steps=1000000", "train.max_minutes=0.02",
              processes=2)
    stops = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["split"] == "stop"]
    assert len(stops) == 1 and p.stdout.count("stopped at step") == 1
    assert f"stopped at step {stops[0]['step']} after" in p.stdout
    assert latest_checkpoint(out).name == f"step_{stops[0]['step']:08d}"   # saved after equal-replica check
