"""Tokenizer and MQGAN refiner on tiny CPU configs.

The core acceptance test is the refiner's gradient isolation: with model.refiner.mode="isolated",
losses on the refined output (reconstruction and adversarial) must not reach the encoder,
quantiser or decoder, while the refiner (hidden projection included) learns from them; with
mode="shared" they do reach the base model.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from vqkit.config import Config, load_config, save_config
from vqkit.losses.gan import g_loss_lsgan
from vqkit.losses.reconstruction import mse
from vqkit.models.discriminators import MelDiscriminators
from vqkit.io.weights import CONFIG_NAME, WEIGHTS_NAME
from vqkit.models.tokenizer import Tokenizer

N_MELS = 16


pytestmark = pytest.mark.usefixtures("single_thread")   # see conftest.py

TINY = {
    "model.mel.n_mels": N_MELS,
    "model.backbone.channels": [16],
    "model.backbone.kernel_size": 3,
    "model.refiner.base_channels": 4,
    "model.refiner.channel_mults": [1, 2],
    "discriminator.patch_channels": [4, 4],
    "discriminator.bands": 2,
    "discriminator.band_channels": [4],
}


def tiny_config(**changes) -> Config:
    """Tiny config through the real override path; keys use '__' for '.'."""
    changes = {k.replace("__", "."): v for k, v in changes.items()}
    values = {k: v for k, v in TINY.items() if not any(k.startswith(c + ".") for c in changes)}   # a block replaced whole
    values.update(changes)
    return load_config(overrides=[f"{k}={json.dumps(v)}" for k, v in values.items()])


def tiny_tokenizer(seed: int = 0, **changes) -> Tokenizer:
    torch.manual_seed(seed)
    return Tokenizer(tiny_config(**changes))


def random_log_mel(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return -5.0 + 2.0 * torch.randn(*shape, generator=g)


def base_params(model: Tokenizer):
    for prefix, module in (("encoder", model.encoder), ("quantizer", model.quantizer), ("decoder", model.decoder)):
        for name, p in module.named_parameters():
            yield f"{prefix}.{name}", p


def grad_is_zero(p: torch.nn.Parameter) -> bool:
    return p.grad is None or not p.grad.any()


# ---- refiner modes ---------------------------------------------------------------------------

def refined_losses(model: Tokenizer, disc: MelDiscriminators, x: torch.Tensor):
    out = model(x)
    loss = mse(out.refined, out.target) + g_loss_lsgan(disc(out.refined), disc.head_weights)
    return out, loss


@pytest.fixture
def disc():
    torch.manual_seed(123)
    return MelDiscriminators(N_MELS, tiny_config().discriminator)


def test_isolated_refined_losses_never_reach_base_model(disc):
    model = tiny_tokenizer(model__refiner__mode="isolated").train()
    _, loss = refined_losses(model, disc, random_log_mel(2, N_MELS, 16))
    loss.backward()
    base = list(base_params(model))
    assert len(base) > 10
    leaked = [n for n, p in base if not grad_is_zero(p)]
    assert leaked == [], f"refined/GAN losses reached the base model: {leaked[:5]}"
    refiner = list(model.refiner.named_parameters())
    no_grad = [n for n, p in refiner if grad_is_zero(p)]
    assert no_grad == [], f"refiner parameters without gradient: {no_grad}"
    assert model.refiner.hidden_proj.weight.grad.abs().sum() > 0
    # the discriminator is in the graph too (the adversarial term really was computed)
    assert any(not grad_is_zero(p) for p in disc.parameters())
    disc.zero_grad(set_to_none=True)


def test_shared_refined_losses_reach_base_model(disc):
    model = tiny_tokenizer(model__refiner__mode="shared").train()
    _, loss = refined_losses(model, disc, random_log_mel(2, N_MELS, 16))
    loss.backward()
    disc.zero_grad(set_to_none=True)
    for module in (model.encoder, model.decoder):
        params = list(module.named_parameters())
        assert len(params) > 10
        without = [n for n, p in params if grad_is_zero(p)]
        assert without == [], f"shared mode: no gradient for {without}"
    assert model.encoder.proj_in.weight.grad.abs().sum() > 0          # through FSQ's straight-through
    assert model.decoder.proj_out.weight.grad.abs().sum() > 0
    assert model.refiner.hidden_proj.weight.grad.abs().sum() > 0


def test_modes_differ_only_in_gradients(disc):
    """Same weights: identical forward values; in isolated mode the base model's gradient from
    draft + refined + GAN losses equals its gradient from the draft loss alone."""
    iso = tiny_tokenizer(model__refiner__mode="isolated").train()
    shared = tiny_tokenizer(model__refiner__mode="shared").train()
    shared.load_state_dict(iso.state_dict())
    x = random_log_mel(2, N_MELS, 12, seed=5)
    out_i, refined_loss = refined_losses(iso, disc, x)
    out_s = shared(x)
    assert torch.equal(out_i.refined, out_s.refined)
    assert torch.equal(out_i.draft, out_s.draft)
    assert not torch.equal(out_i.refined, out_i.draft)                 # the refiner does something

    (mse(out_i.draft, out_i.target) + refined_loss).backward()
    total = {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for n, p in base_params(iso)}
    iso.zero_grad(set_to_none=True)
    out = iso(x)
    mse(out.draft, out.target).backward()
    for n, p in base_params(iso):
        torch.testing.assert_close(total[n], p.grad, rtol=1e-5, atol=1e-7, msg=n)
    disc.zero_grad(set_to_none=True)


@pytest.mark.parametrize("mode", ["isolated", "shared"])
def test_draft_loss_alone_gives_refiner_no_gradient(mode):
    model = tiny_tokenizer(model__refiner__mode=mode).train()
    out = model(random_log_mel(2, N_MELS, 12))
    mse(out.draft, out.target).backward()
    assert all(grad_is_zero(p) for p in model.refiner.parameters())
    assert model.decoder.proj_out.weight.grad.abs().sum() > 0
    assert model.encoder.proj_in.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", ["isolated", "shared"])
def test_hidden_projection_is_trained(mode):
    model = tiny_tokenizer(model__refiner__mode=mode).train()
    out = model(random_log_mel(2, N_MELS, 12))
    mse(out.refined, out.target).backward()
    assert model.refiner.hidden_proj.weight.grad.abs().sum() > 0
    assert model.refiner.hidden_proj.bias.grad.abs().sum() > 0
    assert model.refiner.hidden_bins == N_MELS // 8


def test_refiner_disabled_outputs_draft():
    model = tiny_tokenizer(model__refiner=None).eval()
    assert model.refiner is None
    out = model(random_log_mel(1, N_MELS, 8))
    assert out.refined is None and out.output is out.draft
    tokens = model.encode(random_log_mel(N_MELS, 8))
    torch.testing.assert_close(model.decode(tokens, refined=True), model.decode(tokens, refined=False),
                               rtol=0, atol=0)


# ---- shapes and input validation -------------------------------------------------------------

@pytest.mark.parametrize("downsample", [1, 2, 4])
@pytest.mark.parametrize("frames", [13, 16])
def test_encode_decode_shapes(downsample, frames):
    model = tiny_tokenizer(model__backbone__downsample=downsample).eval()
    n_tok = math.ceil(frames / downsample)
    x = random_log_mel(2, N_MELS, frames)
    tokens = model.encode(x)
    assert tokens.shape == (2, n_tok)
    assert not tokens.dtype.is_floating_point
    assert tokens.min() >= 0 and tokens.max() < model.codebook_size
    for refined in (True, False):
        mel = model.decode(tokens, refined=refined)
        assert mel.shape == (2, N_MELS, n_tok * downsample)
        assert torch.isfinite(mel).all()
    # unbatched input gives the same as row 0 of the batch
    single = model.encode(x[0])
    assert single.shape == (n_tok,)
    assert torch.equal(single, tokens[0])
    mel_single = model.decode(single)
    assert mel_single.shape == (N_MELS, n_tok * downsample)
    torch.testing.assert_close(mel_single, model.decode(tokens)[0], rtol=1e-5, atol=1e-5)
    rec = model.reconstruct(x)
    assert rec.shape == x.shape


@pytest.mark.parametrize("downsample", [2, 4])
def test_encode_pads_with_silence(downsample):
    model = tiny_tokenizer(model__backbone__downsample=downsample).eval()
    frames = 4 * 3 + 1
    x = random_log_mel(1, N_MELS, frames)
    pad = (-frames) % downsample
    silence = math.log(model.config.model.mel.log_clamp)
    padded = torch.cat([x, torch.full((1, N_MELS, pad), silence)], dim=-1)
    assert torch.equal(model.encode(x), model.encode(padded))


@pytest.mark.parametrize("downsample", [1, 2, 4])
def test_forward_shapes(downsample):
    model = tiny_tokenizer(model__backbone__downsample=downsample).train()
    x = random_log_mel(2, N_MELS, 16)
    mask = torch.ones(2, 16)
    mask[1, 8:] = 0
    out = model(x, mask)
    assert out.target.shape == out.draft.shape == out.refined.shape == x.shape
    assert out.indices.shape == (2, 16 // downsample)
    torch.testing.assert_close(out.target, (x - model.norm_mean[:, None]) / model.norm_std[:, None])
    assert 0 < out.stats["usage"].item() <= 1


def test_encode_rejects_bad_input():
    model = tiny_tokenizer().eval()
    for shape in [(N_MELS - 1, 8), (2, N_MELS + 1, 8), (8,), (1, 1, N_MELS, 8)]:
        with pytest.raises(ValueError, match="n_mels"):
            model.encode(random_log_mel(*shape))
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = random_log_mel(2, N_MELS, 8)
        x[1, 3, 5] = bad
        with pytest.raises(ValueError, match="NaN or Inf"):
            model.encode(x)


def test_decode_rejects_out_of_range_tokens():
    model = tiny_tokenizer().eval()
    for bad, seen in (([0, model.codebook_size], f"0, {model.codebook_size}"), ([-1, 3], "-1, 3")):
        with pytest.raises(ValueError, match=rf"token ids must be in \[0, {model.codebook_size}\), got range \[{seen}\]"):
            model.decode(torch.tensor(bad))


def test_rates():
    model = tiny_tokenizer(model__backbone__downsample=2)
    mel = model.config.model.mel
    assert model.tokens_per_second == pytest.approx(mel.sample_rate / mel.hop_length / 2)
    assert model.bits_per_second == pytest.approx(model.tokens_per_second * math.log2(1000))


# ---- causality --------------------------------------------------------------------------------

@pytest.mark.parametrize("downsample", [1, 2, 4])
def test_causal_decoder_ignores_future_tokens(downsample):
    k, n = 5, 12
    changed_diff = {}
    for causal in (True, False):
        model = tiny_tokenizer(seed=3, model__backbone__downsample=downsample,
                               model__backbone__causal_decoder=causal).eval()
        g = torch.Generator().manual_seed(7)
        tokens = torch.randint(0, model.codebook_size, (1, n), generator=g)
        other = tokens.clone()
        other[:, k:] = (tokens[:, k:] + torch.randint(1, model.codebook_size, (1, n - k), generator=g)) \
            % model.codebook_size
        assert (other[:, k:] != tokens[:, k:]).all() and torch.equal(other[:, :k], tokens[:, :k])
        a = model.decode(tokens, refined=False)
        b = model.decode(other, refined=False)
        cut = k * downsample
        past = (a[..., :cut] - b[..., :cut]).abs().max().item()
        future = (a[..., cut:] - b[..., cut:]).abs().max().item()
        assert future > 1e-3                                   # the change matters downstream
        changed_diff[causal] = past
    assert changed_diff[True] <= 1e-6, changed_diff         # in practice exactly 0
    assert changed_diff[False] > 1e-3, changed_diff


# ---- save / load ------------------------------------------------------------------------------

@pytest.mark.parametrize("downsample", [1, 2])
def test_save_load_round_trip(tmp_path, downsample):
    model = tiny_tokenizer(seed=4, model__backbone__downsample=downsample).eval()
    g = torch.Generator().manual_seed(11)
    mean = torch.randn(N_MELS, generator=g) - 4
    std = torch.rand(N_MELS, generator=g) + 0.5
    model.set_normalization(mean, std)
    x = random_log_mel(2, N_MELS, 14, seed=9)
    tokens = model.encode(x)
    mel = model.decode(tokens)
    draft = model.decode(tokens, refined=False)

    before = model.tokenizer_id
    assert isinstance(before, str) and len(before) == 16
    d = model.save_pretrained(tmp_path / "ckpt")
    assert (d / CONFIG_NAME).is_file() and (d / WEIGHTS_NAME).is_file()
    assert model.tokenizer_id == before   # the id is the weights' identity, not the file's

    loaded = Tokenizer.from_pretrained(d)
    assert not loaded.training
    assert loaded.config == model.config
    assert loaded.tokenizer_id == model.tokenizer_id
    assert torch.equal(loaded.norm_mean, mean) and torch.equal(loaded.norm_std, std)
    assert torch.equal(loaded.encode(x), tokens)
    assert torch.equal(loaded.decode(tokens), mel)
    assert torch.equal(loaded.decode(tokens, refined=False), draft)
    # a fresh model with other weights does not reproduce them: the load really loaded
    fresh = tiny_tokenizer(seed=99, model__backbone__downsample=downsample).eval()
    assert not torch.equal(fresh.decode(tokens), mel)
    # saving again gives the same id (the id is a function of the weights)
    assert loaded.save_pretrained(tmp_path / "again").exists()
    assert loaded.tokenizer_id == model.tokenizer_id


def test_load_from_run_directory(tmp_path):
    model = tiny_tokenizer(seed=4).eval()
    model.save_pretrained(tmp_path / "run" / "checkpoints" / "step-10")
    (tmp_path / "run" / "checkpoints" / "latest").write_text("step-10\n")
    loaded = Tokenizer.from_pretrained(tmp_path / "run")
    assert loaded.tokenizer_id == model.tokenizer_id


def test_different_weights_different_id(tmp_path):
    a, b = tiny_tokenizer(seed=1), tiny_tokenizer(seed=2)
    a.save_pretrained(tmp_path / "a")
    b.save_pretrained(tmp_path / "b")
    assert a.tokenizer_id != b.tokenizer_id


def test_from_pretrained_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"^{tmp_path / 'nope'}: no such checkpoint or run directory"):
        Tokenizer.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=f"^{tmp_path / 'empty'}: not a vqkit checkpoint, no config.yaml or "
                       "model.safetensors"):
        Tokenizer.from_pretrained(tmp_path / "empty")


def test_from_pretrained_weights_of_another_model_structure(tmp_path):
    """Weights saved with a refiner, config without one: missing/unexpected keys."""
    d = tiny_tokenizer().save_pretrained(tmp_path / "ckpt")
    save_config(tiny_config(model__refiner=None), d / CONFIG_NAME)
    with pytest.raises(ValueError, match="do not fit") as err:
        Tokenizer.from_pretrained(d)
    assert "refiner" in str(err.value)
    # and the other way round: config with a refiner, weights without one
    d2 = tiny_tokenizer(model__refiner=None).save_pretrained(tmp_path / "ckpt2")
    save_config(tiny_config(), d2 / CONFIG_NAME)
    with pytest.raises(ValueError, match="do not fit"):
        Tokenizer.from_pretrained(d2)


@pytest.mark.parametrize("change", [{"model__backbone__channels": [24]},
                                    {"model__quantizer__levels": [5, 5, 5]}])
def test_from_pretrained_weights_of_another_width(tmp_path, change):
    d = tiny_tokenizer().save_pretrained(tmp_path / "ckpt")
    save_config(tiny_config(**change), d / CONFIG_NAME)
    with pytest.raises(ValueError, match="do not fit"):
        Tokenizer.from_pretrained(d)


def test_from_pretrained_corrupt_weights(tmp_path):
    d = tiny_tokenizer().save_pretrained(tmp_path / "ckpt")
    raw = (d / WEIGHTS_NAME).read_bytes()
    (d / WEIGHTS_NAME).write_bytes(raw[: len(raw) // 3])
    with pytest.raises(ValueError, match="cannot read weights"):
        Tokenizer.from_pretrained(d)
    (d / WEIGHTS_NAME).write_bytes(np.random.default_rng(0).bytes(200))
    with pytest.raises(ValueError, match=f"^{d / WEIGHTS_NAME}: cannot read weights, not a valid safetensors file"):
        Tokenizer.from_pretrained(d)
