"""The command line end to end on real speech: train, resume, info, encode, decode, reconstruct, eval."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from conftest import TINY
from vqkit.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_dir):
    run = tmp_path_factory.mktemp("run")
    args = ["train", "--preset", "mqgan-refiner", "--data", str(demo_dir / "train"), "--valid-data",
            str(demo_dir / "heldout"), "--out", str(run), "--no-progress", *TINY,
            "train.steps=6", "train.save_every=3", "train.eval_every=6", "loss.gan_start_step=3"]
    assert main(args) == 0
    return run, args


def test_train_writes_a_complete_run(trained):
    run, _ = trained
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_00000006"
    ckpt = run / "checkpoints" / "step_00000006"
    for name in ("config.yaml", "model.safetensors", "discriminator.safetensors", "train_state.json"):
        assert (ckpt / name).is_file(), name
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 6


def test_train_refuses_to_overwrite_and_resumes(trained, tmp_path, capsys):
    run, args = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    args = [a if a != str(run) else str(copy) for a in args]
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(args + ["--resume", "train.steps=8"]) == 0
    assert (copy / "checkpoints" / "latest").read_text().strip() == "step_00000008"


def test_info_encode_decode_reconstruct(trained, demo_dir, tmp_path, capsys):
    run, _ = trained
    assert main(["info", str(run)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["trained_steps"] == 6 and info["quantizer"].endswith("= 1000 codes")
    (data,) = info["training_data"]
    n_train, n_held = (len(list((demo_dir / s).glob("*.wav"))) for s in ("train", "heldout"))
    assert (data["from_step"], data["train"]["files"], data["heldout"]["files"]) == (0, n_train, n_held)
    assert data["train"]["licence"]["licence"] == json.loads((demo_dir / "manifest.json").read_text())["licence"]
    wav = sorted((demo_dir / "heldout").glob("*.wav"))[0]
    tokens = tmp_path / "t.npy"
    assert main(["encode", str(run), str(wav), "-o", str(tokens)]) == 0
    ids = np.load(tokens)
    meta = json.loads(tokens.with_suffix(".json").read_text())
    seconds = sf.info(str(wav)).duration
    assert abs(len(ids) - seconds * meta["tokens_per_second"]) <= 2
    assert meta["tokenizer_id"] == info["tokenizer_id"] and 0 <= ids.min() and ids.max() < 1000
    out = tmp_path / "t.wav"
    assert main(["decode", str(run), str(tokens), "-o", str(out)]) == 0
    audio, sr = sf.read(str(out))
    assert sr == 22050 and abs(len(audio) / sr - seconds) < 0.05 and np.isfinite(audio).all()
    # A folder with one broken file: the rest is done, the broken one skipped and counted.
    folder = tmp_path / "in"
    folder.mkdir()
    for w in sorted((demo_dir / "heldout").glob("*.wav"))[:2]:
        shutil.copy(w, folder / w.name)
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00not really a wav")
    assert main(["reconstruct", str(run), str(folder), "-o", str(tmp_path / "rec")]) == 0
    printed = capsys.readouterr().out
    assert "2 of 3 files done, 1 skipped" in printed and "broken.wav" in printed
    assert len(list((tmp_path / "rec").glob("*.wav"))) == 2


def test_decode_refuses_tokens_of_another_tokenizer(trained, demo_dir, tmp_path, capsys):
    run, args = trained
    other = tmp_path / "other"
    other_args = [a if a != str(run) else str(other) for a in args]
    other_args = [a for a in other_args if not a.startswith("train.steps=")] + ["train.steps=1", "train.seed=1"]
    assert main(other_args) == 0
    wav = sorted((demo_dir / "heldout").glob("*.wav"))[0]
    assert main(["encode", str(other), str(wav), "-o", str(tmp_path / "o.npy")]) == 0
    capsys.readouterr()
    assert main(["decode", str(run), str(tmp_path / "o.npy"), "-o", str(tmp_path / "o.wav")]) == 1
    assert "not by this one" in capsys.readouterr().out
    assert not (tmp_path / "o.wav").exists()


def test_eval_writes_report(trained, demo_dir, tmp_path, capsys):
    run, _ = trained
    report = tmp_path / "report"
    assert main(["eval", str(run), "--data", str(demo_dir / "heldout"), "--out", str(report), "--examples", "2",
                 "--max-vocoded", "2"]) == 0   # every clip is scored on mels; two vocoded (test_eval.py: more)
    record = json.loads((report / "metrics.json").read_text())
    m = record["metrics"]
    for key in ("draft_l1", "draft_mse", "refined_l1", "refined_mse", "codebook_usage", "perplexity"):
        assert np.isfinite(m[key]), key
    assert m["tokens_per_second"] == pytest.approx(22050 / 256)
    assert m["bits_per_second"] == pytest.approx(22050 / 256 * np.log2(1000))
    assert 1 <= m["perplexity"] <= m["codes_used"] <= 1000
    assert record["data"]["files"] == 16
    for name in ("clip00.png", "clip01_original.wav", "clip01_reconstruction.wav", "index.html"):
        assert (report / name).is_file(), name
    assert 'src="clip01_reconstruction.wav"' in (report / "index.html").read_text()


def test_clear_errors(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "--data", str(empty), "--out", str(tmp_path / "r")]) == 2
    assert "no usable audio" in capsys.readouterr().err
    assert main(["train", "--data", str(empty), "--out", str(tmp_path / "r"), "model.refiner.mdoe=x"]) == 2
    assert "mdoe" in capsys.readouterr().err
