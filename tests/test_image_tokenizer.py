"""Image tokenizers through the shared Tokenizer and Trainer: every preset trains, MoVQ tokens,
the entropy regulariser, SeQ-GAN phase 2 and the refiner on images."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from vqkit.config import available_presets, load_config
from vqkit.models.tokenizer import Tokenizer
from vqkit.training.trainer import Trainer

quiet = lambda m: None  # noqa: E731
IMAGE_PRESETS = [p for p in available_presets() if load_config(p).model.modality == "image" and p != "seqgan-phase2"]
TINY = ["data.image_size=32", "train.batch_size=4", "train.eval_clips=2", "optim.warmup_steps=2",
        "train.log_every=1", "train.eval_every=1000", "train.save_every=1000"]


pytestmark = pytest.mark.usefixtures("single_thread")   # see conftest.py


@pytest.fixture(scope="module")
def photos():
    skdata = pytest.importorskip("skimage.data")
    import torch.nn.functional as F

    out = []
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        img = torch.from_numpy(getattr(skdata, name)()).permute(2, 0, 1).float() / 127.5 - 1
        out.append(F.interpolate(img[None], size=(96, 128), mode="area")[0])
    return out


def tiny(preset, *extra):
    cfg = load_config(preset, overrides=TINY + list(extra))
    b = cfg.model.backbone
    b.channels = [16, 32] if b.kind != "vit" else [32]
    b.blocks_per_stage = 1 if b.kind != "vit" else 2
    b.spatial_norm_blocks = min(b.spatial_norm_blocks, len(b.channels))
    cfg.discriminator.patch_channels = [16, 16]
    return cfg.validate()


def losses(run_dir):
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["split"] == "train"]


@pytest.mark.parametrize("preset", IMAGE_PRESETS)
def test_each_image_preset_trains_and_lowers_its_loss(tmp_path, photos, preset):
    cfg = tiny(preset, "train.steps=80", "loss.gan_start_step=70", "optim.lr=1e-3")
    Trainer(cfg, tmp_path, photos, log=quiet, progress=False).fit()
    rec = [r["draft_l1"] if "draft_l1" in r else r["draft_mse"] for r in losses(tmp_path)]
    assert sum(rec[-5:]) / 5 < 0.7 * sum(rec[:5]) / 5, (preset, rec[:5], rec[-5:])
    tok = Tokenizer.from_pretrained(tmp_path)
    grid = tok.token_grid(96, 128)
    tokens = tok.encode(photos[0])
    assert tuple(tokens.shape) == grid
    assert tok.decode(tokens).shape == (3, 96, 128)


def test_movq_multichannel_tokens_decode(tmp_path, photos):
    from vqkit.tokens_io import load_tokens, save_tokens

    cfg = tiny("movq", "train.steps=2")
    tok = Tokenizer(cfg).eval()
    assert tok.tokens_per_position == 4
    tokens = tok.encode(photos[0])
    assert tokens.shape == (24, 32, 4)                       # f4 grid, 4 indices per position
    assert (tokens[..., 0] != tokens[..., 1]).any()          # channels are separate codes
    tokens[..., 2] = (tokens[..., 2] + 1) % tok.codebook_size   # decoding uses every channel
    assert not torch.equal(tok.decode(tokens), tok.decode(tok.encode(photos[0])))
    path = save_tokens(tmp_path / "t.npy", tokens.numpy(), tok)
    arr, meta = load_tokens(path, tok)
    assert meta["channels_per_position"] == 4 and torch.equal(torch.from_numpy(arr).long(), tokens)
    with pytest.raises(ValueError, match="per position"):
        tok.decode(tokens[..., :3])


def test_entropy_regulariser_raises_codebook_usage(tmp_path, photos):
    usage = {}
    for gamma in (0.0, 0.01):   # the paper's gamma, at the default temperature
        cfg = tiny("seqgan", "train.steps=60", "loss.gan=0", f"model.quantizer.entropy_weight={gamma}",
                   "model.quantizer.codebook_size=256", "optim.lr=1e-3")
        t = Trainer(cfg, tmp_path / str(gamma), photos, log=quiet, progress=False)
        t.fit()
        tok = t.raw_model.eval()
        tokens = torch.cat([tok.encode(p).reshape(-1) for p in photos])
        usage[gamma] = torch.unique(tokens).numel()
    assert usage[0.01] > 2 * usage[0.0], usage


def test_phase_two_keeps_tokens_and_frozen_weights(tmp_path, photos):
    cfg1 = tiny("seqgan", "train.steps=6", "loss.gan_start_step=3", "model.quantizer.restart_dead_codes=true")
    Trainer(cfg1, tmp_path / "p1", photos, log=quiet, progress=False).fit()
    before = Tokenizer.from_pretrained(tmp_path / "p1")
    cfg2 = tiny("seqgan-phase2", "train.steps=6", "loss.gan_start_step=0", f"train.init_from={tmp_path / 'p1'}",
                "model.quantizer.restart_dead_codes=true", "model.backbone.dropout=0.1")
    Trainer(cfg2, tmp_path / "p2", photos, log=quiet, progress=False).fit()
    after = Tokenizer.from_pretrained(tmp_path / "p2")
    assert len(after.decoder.extra_attention) == 2
    for p in photos:
        assert torch.equal(before.encode(p), after.encode(p))
    sa, sb = before.state_dict(), after.state_dict()
    for k in sa:
        if k.startswith(("encoder.", "quantizer.")):
            assert torch.equal(sa[k], sb[k]), k
    changed = [k for k in sa if k.startswith("decoder.") and not torch.equal(sa[k], sb[k])]
    assert changed, "phase 2 did not train the decoder"
    disc = load_file(str(tmp_path / "p2" / "checkpoints" / "latest").replace("latest", "")
                     + (tmp_path / "p2" / "checkpoints" / "latest").read_text().strip() + "/discriminator.safetensors")
    assert disc


def test_phase_two_needs_a_start_and_a_fitting_one(tmp_path, photos):
    from vqkit.config import ConfigError

    with pytest.raises(ConfigError, match="init_from"):
        Trainer(tiny("seqgan-phase2"), tmp_path / "x", photos, log=quiet, progress=False)
    Trainer(tiny("vqgan", "train.steps=1", "loss.gan=0"), tmp_path / "v", photos, log=quiet, progress=False).fit()
    with pytest.raises(ValueError, match="do not fit"):
        Trainer(tiny("seqgan-phase2", f"train.init_from={tmp_path / 'v'}", "model.quantizer.codebook_size=512"),
                tmp_path / "y", photos, log=quiet, progress=False)


@pytest.mark.parametrize("mode", ["isolated", "shared"])
def test_refiner_on_images_isolates_the_base_model(photos, mode):
    cfg = tiny("vqgan", f"model.refiner.mode={mode}", "model.refiner.base_channels=4",
               "model.refiner.channel_mults=[1,2]")
    tok = Tokenizer(cfg)
    out = tok(torch.stack([p[:, :32, :32] for p in photos]))
    ((out.refined - out.target) ** 2).mean().backward()
    base = [p.grad for m in (tok.encoder, tok.decoder) for p in m.parameters()]
    reached = any(g is not None and g.abs().sum() > 0 for g in base)
    assert reached == (mode == "shared")
    assert tok.refiner.hidden_proj.weight.grad.abs().sum() > 0


def test_movq_preset_modulates_the_first_three_decoder_stages_as_the_paper():
    from vqkit.nn.spatial_norm import SpatialNorm

    dec = Tokenizer(load_config("movq")).decoder
    conditioned = [any(isinstance(m, SpatialNorm) for m in stage.modules()) for stage in dec.stages]
    plain = [all(not isinstance(m, SpatialNorm) for m in stage.modules()) for stage in dec.stages]
    assert conditioned == [True, True, True, False] and plain == [False, False, False, True]
    assert any(isinstance(m, SpatialNorm) for m in dec.mid.modules())   # the mid block is part of stage 0
    assert not isinstance(dec.norm_out, SpatialNorm)                     # the finest output stays plain
