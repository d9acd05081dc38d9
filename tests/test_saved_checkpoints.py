"""Checkpoints saved by earlier vqkit versions keep loading and keep meaning what they meant.

tests/data/checkpoint-v0.1 was written by vqkit 0.1 (commit 60b1430, before the finite receptive
field): a tiny mel tokenizer with a causal decoder, plus its tokens and decoded mel for a fixed
input. Its config.yaml has no attention_frames / refiner norm keys; they migrate to the old
behaviour (channel attention and refiner statistics over the whole clip), so the outputs match.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vqkit.config import load_config
from vqkit.models.tokenizer import Tokenizer

V01 = Path(__file__).parent / "data" / "checkpoint-v0.1"


def test_v0_1_checkpoint_loads_with_its_old_meaning():
    tok = Tokenizer.from_pretrained(V01)
    assert tok.config.model.backbone.attention_frames is None and tok.config.model.refiner.norm == "clip"
    ref = np.load(V01 / "reference.npz")
    tokens = tok.encode(torch.from_numpy(ref["mel"]))
    assert np.array_equal(tokens.numpy(), ref["tokens"])
    decoded = tok.decode(tokens).numpy()
    assert np.abs(decoded - ref["decoded"]).max() < 1e-5


def test_new_configs_get_the_new_defaults():
    """Only saved configs migrate: a preset or user config without the keys gets today's defaults."""
    cfg = load_config(preset="mqgan-refiner")
    assert cfg.model.backbone.attention_frames == 31 and cfg.model.refiner.norm is None
    resumed = load_config(path=V01 / "config.yaml", saved=True)
    assert resumed.model.backbone.attention_frames is None and resumed.model.refiner.norm == "clip"


def test_v0_1_checkpoint_encodes_a_file_through_the_cli(tmp_path):
    """The sidecar's streaming facts must not fail on a model without a finite receptive field: it
    says it does not stream (no latency) instead of refusing the file."""
    import json
    import soundfile as sf

    from vqkit.cli import main

    tok = Tokenizer.from_pretrained(V01)
    sr = tok.config.model.mel.sample_rate
    wav = tmp_path / "a.wav"
    sf.write(str(wav), (np.random.default_rng(0).standard_normal(sr) * 0.1).astype(np.float32), sr)
    assert main(["encode", str(V01), str(wav), "-o", str(tmp_path / "a.npy")]) == 0
    side = json.loads((tmp_path / "a.json").read_text())
    assert side["causal"] is False and side["latency_ms"] is None
    assert np.array_equal(np.load(tmp_path / "a.npy"), tok.encode(tok.frontend(torch.from_numpy(
        sf.read(str(wav), dtype="float32")[0]))).numpy())


def test_the_unbounded_answer_is_measured_once(monkeypatch):
    """Every file of a folder asks whether the model streams (windows, sidecar): the probe that
    says it cannot runs once per model, not once per question."""
    import vqkit.models.time_context as tc

    calls = []
    real = tc.probe_time_context
    monkeypatch.setattr(tc, "probe_time_context", lambda tok: calls.append(1) or real(tok))
    tok = Tokenizer.from_pretrained(V01)
    for _ in range(3):
        assert tok.bounded is False
        with pytest.raises(tc.UnboundedContext, match="depends on the whole clip"):
            tok.time_context
    assert len(calls) == 1
