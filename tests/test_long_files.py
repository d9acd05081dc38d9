"""Files of any length through the command line: encode / decode / reconstruct stream them
(tokens independent of the window size, outputs as long as the input), eval scores long files in
segments; `vqkit stream` and `vqkit info` report latency and speed; sidecars state the rates."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cli_helpers import cli
from conftest import save_tiny_tokenizer
from vqkit.models.tokenizer import Tokenizer

SR = 22050
pytestmark = pytest.mark.usefixtures("single_thread")


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise bursts under a slow envelope, like syllables: enough structure to move tokens."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) * np.sin(2 * np.pi * 0.37 * t)
    return (0.3 * env * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("long")
    (root / "in").mkdir()
    sf.write(root / "in" / "long.wav", speechlike(30.0), SR, subtype="PCM_16")
    return {"root": root, "wav": root / "in" / "long.wav",
            "ckpt": save_tiny_tokenizer(root / "ckpt", "model.backbone.downsample=2"),
            "causal": save_tiny_tokenizer(root / "causal", "model.backbone.downsample=4", "model.causal=true")}


def test_tokens_of_a_long_file_do_not_depend_on_the_window(files, capsys, monkeypatch):
    """Encoding window by window (two window sizes) and whole-clip encoding give the same tokens."""
    import vqkit.models.audio_files as af
    import vqkit.models.tokenizer as tm

    out = files["root"]
    results = []
    for window in (256, 700):
        monkeypatch.setattr(tm, "LONG_WINDOW", window)
        monkeypatch.setattr(af, "LONG_WINDOW", window)
        code, text, _ = cli(capsys, "encode", files["ckpt"], files["wav"], "-o", out / f"w{window}.npy")
        assert code == 0 and "tokens" in text
        results.append(np.load(out / f"w{window}.npy"))
    tok = Tokenizer.from_pretrained(files["ckpt"])
    from vqkit.frontends.audio_io import load_audio

    whole = tok._encode_clip(tok.frontend(torch.from_numpy(load_audio(files["wav"], SR)))[None])[0].numpy()
    assert np.array_equal(results[0], results[1]) and np.array_equal(results[0], whole)
    side = json.loads((out / "w256.json").read_text())
    assert side["tokens_per_second"] == pytest.approx(tok.tokens_per_second)
    assert side["bits_per_second"] == pytest.approx(tok.bits_per_second) and side["causal"] is False


def test_decode_and_reconstruct_stream_to_the_input_length(files, capsys):
    out = files["root"]
    assert cli(capsys, "encode", files["causal"], files["wav"], "-o", out / "c.npy")[0] == 0
    code, _, _ = cli(capsys, "reconstruct", files["causal"], files["wav"], "-o", out / "rec.wav",
                     "--vocoder", "griffin-lim", "--save-mel")
    assert code == 0
    rec, rate = sf.read(out / "rec.wav")
    frames = Tokenizer.from_pretrained(files["causal"]).frontend.num_frames(int(30.0 * SR))
    assert rate == SR and len(rec) == frames * 256 and np.load(out / "rec.mel.npy").shape == (80, frames)
    assert cli(capsys, "decode", files["causal"], out / "c.npy", "-o", out / "dec.wav", "--vocoder", "griffin-lim")[0] == 0
    tokens = np.load(out / "c.npy")
    assert len(sf.read(out / "dec.wav")[0]) == tokens.shape[0] * 4 * 256


def test_eval_scores_long_files_in_segments(files, capsys, monkeypatch):
    import vqkit.evaluation.mel_report as mr

    monkeypatch.setattr(mr, "LONG_SECONDS", 10.0)
    monkeypatch.setattr(mr, "SEGMENT_SECONDS", 8.0)
    report = files["root"] / "report"
    code, text, _ = cli(capsys, "eval", files["ckpt"], "--data", files["wav"].parent, "--out", report,
                        "--vocoder", "griffin-lim", "--max-vocoded", "1", "--no-progress")
    assert code == 0
    record = json.loads((report / "metrics.json").read_text())
    assert record["metrics"]["clips"] == 4 and record["data"]["files"] == 1     # 8 + 8 + 8 + 6 s
    assert record["metrics"]["seconds"] == pytest.approx(30.0, abs=0.05)
    for key in ("draft_gv_ratio", "refined_flux_ratio", "refined_ms_distance_db", "draft_vocoded_stoi"):
        assert key in record["metrics"], key
    assert "long.wav [0-8 s]" in (report / "index.html").read_text()


def test_stream_verb_reports_latency_and_speed_and_matches_encode(files, capsys):
    out = files["root"]
    code, text, _ = cli(capsys, "stream", files["causal"], files["wav"], "-o", out / "streamed.wav",
                        "--chunk-ms", "40", "--tokens", out / "streamed.npy", "--vocoder", "griffin-lim")
    assert code == 0
    assert "chunk by chunk" in text and "latency: 63.9 ms algorithmic" in text and "x real time" in text
    assert cli(capsys, "encode", files["causal"], files["wav"], "-o", out / "enc.npy")[0] == 0
    assert np.array_equal(np.load(out / "streamed.npy"), np.load(out / "enc.npy"))
    code, _, err = cli(capsys, "stream", files["causal"], files["wav"], "-o", files["wav"])
    assert code == 2 and "long.wav" in err


def test_info_states_rates_and_latency(files, capsys):
    code, text, _ = cli(capsys, "info", files["causal"])
    info = json.loads(text)
    assert code == 0 and info["causal"] is True and info["streaming"] == "chunk by chunk"
    assert info["latency_ms"] == pytest.approx(1000 * (640 + 3 * 256) / SR, abs=0.05)
    assert info["lookahead_frames"] == 3 and info["codebook_size"] == 1000
    assert info["tokens_per_second"] == pytest.approx(21.53, abs=0.01)
    legacy = Path(__file__).parent / "data" / "checkpoint-v0.1"
    code, text, _ = cli(capsys, "info", legacy)
    assert code == 0 and "looks at the whole clip" in json.loads(text)["streaming"]
