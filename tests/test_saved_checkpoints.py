"""Checkpoints saved by earlier vqkit versions keep loading and keep meaning what they meant.

tests/data/checkpoint-v0.1 was written by vqkit 0.1 (commit 60b1430, before the finite receptive
field): a tiny mel tokenizer with a causal decoder, plus its tokens and decoded mel for a fixed
input. Its config.yaml has no attention_frames / refiner norm keys; they migrate to the old
behaviour (channel attention and refiner statistics over the whole clip), so the outputs match.

tests/data/before-nn-transformer was written by commit bb29660, before the one transformer of
nn/transformer.py: a tiny ViT tokenizer with a window attention block, a GPT and a MaskGIT prior,
every weight set to random values (so no zero-initialised tensor hides a misplaced one), plus their
outputs for fixed inputs. The ViT's tensors carry the old names, which loading renames.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vqkit.config import TrainConfig, from_dict, load_config
from vqkit.config.prior_schema import PriorConfig
from vqkit.io.weights import WEIGHTS_NAME, weight_shapes
from vqkit.models.tokenizer import Tokenizer
from vqkit.nn.transformer import swiglu_hidden
from vqkit.priors.prior import TokenPrior

V01 = Path(__file__).parent / "data" / "checkpoint-v0.1"
BEFORE_NN_TRANSFORMER = Path(__file__).parent / "data" / "before-nn-transformer"


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


def test_a_vit_tokenizer_saved_before_nn_transformer_loads_with_its_outputs():
    from vqkit.training.components import start_from

    d = BEFORE_NN_TRANSFORMER / "vit"
    old_names = weight_shapes(d / WEIGHTS_NAME)
    old_layout = {"encoder.blocks.0.w12.weight", "decoder.norm_mid.weight", "decoder.extra_attention.0.proj.weight"}
    assert old_layout <= set(old_names)
    ref = np.load(BEFORE_NN_TRANSFORMER / "reference.npz")
    tok = Tokenizer.from_pretrained(d)
    tokens = tok.encode(torch.from_numpy(ref["vit_image"]))
    assert np.array_equal(tokens.numpy(), ref["vit_tokens"])
    np.testing.assert_allclose(tok.decode(tokens).numpy(), ref["vit_decoded"], rtol=0, atol=1e-5)
    assert len(tok.state_dict()) == len(old_names)
    # train.init_from reads the same file into a new run's model.
    model = Tokenizer(tok.config)
    start_from(model, TrainConfig(init_from=str(d)), log=lambda _: None)
    assert all(torch.equal(v, tok.state_dict()[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("kind", ["gpt", "maskgit"])
def test_a_prior_saved_before_nn_transformer_loads_with_its_outputs(kind):
    ref = np.load(BEFORE_NN_TRANSFORMER / "reference.npz")
    prior = TokenPrior.from_pretrained(BEFORE_NN_TRANSFORMER / kind)
    labels = torch.tensor([0, 1]) if prior.class_names else None
    with torch.no_grad():
        logits = prior.net(torch.from_numpy(ref[f"{kind}_tokens"]), labels)
    np.testing.assert_allclose(logits.numpy(), ref[f"{kind}_logits"], rtol=0, atol=1e-5)
    sample = prior.generate(2, labels, generator=torch.Generator().manual_seed(3))
    assert np.array_equal(sample.numpy(), ref[f"{kind}_sample"])


def _tiny_prior(dim: int, mlp_hidden: int | None) -> TokenPrior:
    cfg = from_dict(PriorConfig, {"model": {"kind": "gpt", "dim": dim, "depth": 1, "heads": 4,
                                            "mlp_hidden": mlp_hidden}}).validate()
    meta = {"tokenizer_id": "t", "tokenizer_path": None, "modality": "mel", "codebook_size": 16, "channels": 1,
            "grid": [6], "class_names": []}
    return TokenPrior(cfg, meta).eval()


def test_a_prior_saved_with_the_old_default_width_keeps_it(tmp_path):
    """Until the one SwiGLU rule of nn/transformer.py, priors rounded their default MLP width to a
    multiple of 64 from dim 256 on: 704 at dim 256, where the rule now gives 688. A checkpoint saved
    then (model.mlp_hidden unset) loads, and resumes training, with its own width."""
    import yaml

    from vqkit.cli.train_prior import _resumed_width

    assert swiglu_hidden(256) == 688
    torch.manual_seed(0)
    old = _tiny_prior(256, 704)
    d = old.save_pretrained(tmp_path / "old")
    raw = yaml.safe_load((d / "config.yaml").read_text())
    raw["model"]["mlp_hidden"] = None   # what the old code saved
    (d / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    loaded = TokenPrior.from_pretrained(d)
    assert loaded.cfg.model.mlp_hidden == 704
    tokens = torch.randint(0, 16, (2, 6, 1), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded.net(tokens), old.net(tokens))
    resumed = from_dict(PriorConfig, raw).validate()
    assert _resumed_width(resumed, tmp_path, str(d)).model.mlp_hidden == 704
    # A checkpoint with the rule's width leaves the key unset.
    new = TokenPrior.from_pretrained(_tiny_prior(256, None).save_pretrained(tmp_path / "new"))
    assert new.cfg.model.mlp_hidden is None
