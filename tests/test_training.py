"""Training: a tiny run learns, resume is exact, checkpoints are complete and atomic, bad steps are skipped."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY
from vqkit.config import load_config
from vqkit.training import checkpoint as ckpt_mod
from vqkit.training.checkpoint import CheckpointError, latest_checkpoint
from vqkit.training.state_io import load_state
from vqkit.training.trainer import Trainer, TrainingStopped

quiet = lambda m: None  # noqa: E731


def make_cfg(*extra):
    return load_config("mqgan-refiner", overrides=TINY + list(extra))


def run(cfg, run_dir, mels, valid=None, resume=False):
    t = Trainer(cfg, run_dir, mels, valid, log=quiet, progress=False)
    t.fit(resume=resume)
    return t


def records(run_dir, split="train"):
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["split"] == split]


def test_tiny_training_lowers_heldout_mel_loss(tmp_path, speech_mels):
    train, held = speech_mels
    cfg = make_cfg("train.steps=120", "train.eval_every=60", "train.save_every=120", "loss.gan_start_step=80",
                   "train.batch_size=8", "data.segment_frames=64", "optim.lr=3e-3")
    t = Trainer(cfg, tmp_path, train, held, log=quiet, progress=False)
    from vqkit.evaluation.mel_eval import evaluate_mels

    before, _ = evaluate_mels(t.raw_model.eval(), held)
    t.fit()
    after = records(tmp_path, "heldout")[-1]
    assert after["step"] == 120
    # Natural log-mel units; an untrained model is far off, a trained one much closer.
    assert after["draft_mse"] < 0.6 * before["draft_mse"], (before["draft_mse"], after["draft_mse"])
    assert after["refined_mse"] < 0.6 * before["refined_mse"]
    assert after["codebook_usage"] > 0.05           # no collapse onto a handful of codes
    assert (tmp_path / "samples" / "step_00000120" / "clip00.png").is_file()
    assert (tmp_path / "tb").is_dir()


def test_resume_restores_everything_and_continues_identically(tmp_path, synthetic_mels):
    extra = ["train.log_every=1", "train.save_every=4", "train.eval_every=1000", "loss.gan_start_step=2",
             "loss.feature_matching=1.0", "model.backbone.dropout=0.2", "model.backbone.channels=[16]"]
    full, split = tmp_path / "full", tmp_path / "split"
    run(make_cfg("train.steps=8", *extra), full, synthetic_mels)
    run(make_cfg("train.steps=4", *extra), split, synthetic_mels)
    resumed = run(make_cfg("train.steps=8", *extra), split, synthetic_mels, resume=True)
    assert resumed.step == 8
    a, b = records(full)[4:], records(split)[4:]
    assert [r["step"] for r in b] == [5, 6, 7, 8]
    for ra, rb in zip(a, b):
        for key in ("g", "d", "draft_mse", "refined_mse", "g_adv", "fm", "lecam"):
            assert ra[key] == rb[key], (ra["step"], key, ra[key], rb[key])
    ca, cb = latest_checkpoint(full), latest_checkpoint(split)
    for name in ("model.safetensors", "discriminator.safetensors", "train_state.safetensors"):
        sa, sb = load_file(str(ca / name)), load_file(str(cb / name))
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), name


def test_checkpoint_holds_complete_training_state(tmp_path, synthetic_mels):
    t = run(make_cfg("train.steps=6", "train.save_every=6", "loss.gan_start_step=2"), tmp_path, synthetic_mels)
    c = latest_checkpoint(tmp_path)
    disc = load_file(str(c / "discriminator.safetensors"))
    # Every discriminator head, with its spectral-norm vectors and its LeCam EMA state.
    n_heads = 1 + t.cfg.discriminator.bands
    assert sum(k.endswith("lecam_real") for k in disc) == n_heads
    assert any(float(disc[k]) != 0 for k in disc if k.endswith("lecam_real"))
    assert any("_u" in k for k in disc)
    fresh = Trainer(t.cfg, tmp_path, synthetic_mels, log=quiet, progress=False)
    assert fresh.resume()
    assert fresh.step == 6
    assert fresh.sched_g.last_epoch == t.sched_g.last_epoch and fresh.sched_d.last_epoch == t.sched_d.last_epoch
    sd_a, sd_b = fresh.opt_d.state_dict()["state"], t.opt_d.state_dict()["state"]
    assert sd_a.keys() == sd_b.keys() and len(sd_a) > 0
    assert all(torch.equal(sd_a[k]["exp_avg"], sd_b[k]["exp_avg"]) for k in sd_a)
    for head_a, head_b in zip(fresh.disc.heads, t.disc.heads):
        assert torch.equal(head_a.lecam_fake, head_b.lecam_fake)


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), PermissionError(13, "Permission denied")],
                         ids=["disk-full", "unwritable"])
def test_failed_save_keeps_previous_checkpoint(tmp_path, synthetic_mels, monkeypatch, error):
    t = run(make_cfg("train.steps=2", "train.save_every=2"), tmp_path, synthetic_mels)
    before = latest_checkpoint(tmp_path)
    files_before = {p.name: p.read_bytes() for p in before.iterdir()}

    def refuse(*a, **k):
        raise error

    monkeypatch.setattr(ckpt_mod, "save_state", refuse)
    t.step = 3
    with pytest.raises(CheckpointError, match=f"step_00000003 .*{error.strerror}.*previous checkpoint kept: .*step_00000002"):
        t.save()
    assert latest_checkpoint(tmp_path) == before
    assert {p.name: p.read_bytes() for p in before.iterdir()} == files_before
    assert not any(p.name.startswith(".") for p in (tmp_path / "checkpoints").iterdir() if p.is_dir())


def test_non_finite_steps_are_skipped_then_training_stops(tmp_path, synthetic_mels):
    cfg = make_cfg("train.steps=50", "train.save_every=2", "train.max_nonfinite_steps=3", "loss.gan_start_step=100")
    t = Trainer(cfg, tmp_path, synthetic_mels, log=quiet, progress=False)
    good = t.batches
    t.fit_steps = None

    class Poisoned:
        """Healthy batches for the first 4 steps, NaN afterwards."""

        def __len__(self):
            return len(good)

        def __getitem__(self, step):
            mel, mask = good[step]
            return (mel * float("nan"), mask) if step >= 4 else (mel, mask)

    t.batches = Poisoned()
    with pytest.raises(TrainingStopped, match=r"stopped at step 7: 3 consecutive steps .*\(skipped: base, refiner; last: .*g=nan.*\); "
                                              r"last good checkpoint: .*step_00000004"):
        t.fit()
    assert t.skipped_steps == 3
    last = latest_checkpoint(tmp_path)
    assert last.name == "step_00000004"
    weights = load_file(str(last / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_init_from_starts_a_phase_one_run_from_trained_weights(tmp_path, synthetic_mels):
    """Fine-tuning: train.init_from loads the weights (and mel normalisation) only; optimisers,
    discriminators and the step start fresh."""
    logs = []
    first = run(make_cfg("train.steps=3", "train.save_every=3", "loss.gan_start_step=1"), tmp_path / "a",
                synthetic_mels)
    source = load_file(str(latest_checkpoint(tmp_path / "a") / "model.safetensors"))
    other_data = [m + 1.0 for m in synthetic_mels]   # other normalisation stats: the checkpoint's win
    t = Trainer(make_cfg("train.steps=2", "train.save_every=2", f"train.init_from={tmp_path / 'a'}"), tmp_path / "b",
                other_data, log=logs.append, progress=False)
    assert t.step == 0 and not t.opt_g.state_dict()["state"]
    assert all(torch.equal(v, source[k]) for k, v in t.raw_model.state_dict().items())
    fresh_disc = Trainer(make_cfg(), tmp_path / "c", other_data, log=quiet, progress=False).disc.state_dict()
    assert all(torch.equal(v, fresh_disc[k]) for k, v in t.disc.state_dict().items())
    assert any("initialised from" in m and "weights only" in m for m in logs)
    t.fit()
    assert [r["step"] for r in records(tmp_path / "b")] == [2]
    assert load_state(latest_checkpoint(tmp_path / "b"), "train_state")["step"] == 2 == first.step - 1


def test_init_from_refuses_weights_that_do_not_fit(tmp_path, synthetic_mels):
    run(make_cfg("train.steps=1", "train.save_every=1"), tmp_path / "a", synthetic_mels)
    with pytest.raises(ValueError) as e:
        Trainer(make_cfg("model.backbone.channels=[32]", f"train.init_from={tmp_path / 'a'}"), tmp_path / "b",
                synthetic_mels, log=quiet, progress=False)
    msg = str(e.value)   # names the option, the checkpoint, the tensor and both shapes
    assert f"train.init_from={tmp_path / 'a'}" in msg and "config.yaml" in msg
    assert "torch.Size([24" in msg and "torch.Size([32" in msg and "encoder." in msg
    with pytest.raises(ValueError, match=r"train.init_from: .*nowhere: no such checkpoint"):
        Trainer(make_cfg(f"train.init_from={tmp_path / 'nowhere'}"), tmp_path / "c", synthetic_mels, log=quiet,
                progress=False)
    pickled = tmp_path / "pickled"   # a downloaded "checkpoint" whose weights are a pickle
    pickled.mkdir()
    (pickled / "config.yaml").write_text((latest_checkpoint(tmp_path / "a") / "config.yaml").read_text())
    torch.save({"x": torch.zeros(1)}, pickled / "model.safetensors")
    with pytest.raises(ValueError, match=r"pickled/model.safetensors: .*never unpickles"):
        Trainer(make_cfg(f"train.init_from={pickled}"), tmp_path / "d", synthetic_mels, log=quiet, progress=False)


def test_a_run_records_its_training_data_and_a_resume_on_other_files(tmp_path, synthetic_mels):
    """training_data.json: one entry per start on other files, from the step it started at; a restart
    from an earlier checkpoint drops the later entries; a checkpoint's view leaves out later ones."""
    from vqkit.io.run_records import folder_record, training_data

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.wav").write_bytes(b"")
    first = {"train": folder_record(tmp_path / "a", ["x.wav", "y.wav"], {"too short": 1}), "heldout": None}
    other = {"train": folder_record(tmp_path / "a", ["x.wav"]), "heldout": None}
    assert first["train"]["file_list_sha256"] != other["train"]["file_list_sha256"]
    assert first["train"] | {"file_list_sha256": "", "root": ""} == {
        "root": "", "files": 2, "skipped": {"too short": 1}, "file_list_sha256": "", "licence": None}
    extra = ["train.save_every=2", "train.keep_last=4", "train.eval_every=1000", "model.backbone.channels=[16]"]
    run_dir = tmp_path / "run"
    Trainer(make_cfg("train.steps=2", *extra), run_dir, synthetic_mels, log=quiet, progress=False).fit(data=first)
    again = Trainer(make_cfg("train.steps=4", *extra), run_dir, synthetic_mels, log=quiet, progress=False)
    again.fit(resume=True, data=first)   # the same files: no new entry
    assert [e["from_step"] for e in training_data(run_dir)] == [0]
    Trainer(make_cfg("train.steps=6", *extra), run_dir, synthetic_mels, log=quiet, progress=False).fit(
        resume=True, data=other)
    entries = training_data(run_dir)
    assert [(e["from_step"], e["train"]["files"]) for e in entries] == [(0, 2), (4, 1)]
    assert training_data(run_dir / "checkpoints" / "step_00000002", at_most=2) == entries[:1]
    Trainer(make_cfg("train.steps=4", *extra), run_dir, synthetic_mels, log=quiet, progress=False).fit(
        resume=str(run_dir / "checkpoints" / "step_00000002"), data=first)
    assert training_data(run_dir) == entries[:1]
    assert training_data(tmp_path / "a") is None
