"""Token priors end to end: `vqkit encode` output -> `train-prior` (the shared training loop: exact
resume, best checkpoint) -> `sample` (decoded audio / images, multichannel MoVQ tokens) ->
`visualize-prior` (teacher-forced top-1 accuracy and NLL)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import TINY
from vqkit.cli import main
from vqkit.config import load_config
from vqkit.config.prior_schema import PriorConfig
from vqkit.models.tokenizer import Tokenizer
from vqkit.io.run_records import training_data
from vqkit.priors.hub_card import prior_card
from vqkit.priors.prior import TokenPrior
from vqkit.priors.token_data import TokenCorpus
from vqkit.training.checkpoint import best_checkpoint, latest_checkpoint
from vqkit.training.prior_trainer import PriorTrainer

pytestmark = pytest.mark.usefixtures("single_thread")
PRIOR = ["model.dim=32", "model.depth=2", "model.heads=2", "train.batch_size=4", "optim.warmup_steps=2",
         "train.log_every=1"]


@pytest.fixture(scope="module")
def mel_tokens(tmp_path_factory, demo_dir):
    """A tiny (untrained) mel tokenizer and its tokens of the demo clips."""
    root = tmp_path_factory.mktemp("mel-prior")
    tok = Tokenizer(load_config("mqgan-refiner", overrides=TINY))
    tok.save_pretrained(root / "tok")
    for split in ("train", "heldout"):
        assert main(["encode", str(root / "tok"), str(demo_dir / split), "-o", str(root / split)]) == 0
    return root


def test_prior_training_learns_resumes_exactly_and_keeps_the_best(mel_tokens, tmp_path):
    train = TokenCorpus.from_folder(mel_tokens / "train", log=lambda m: None)
    valid = TokenCorpus.from_folder(mel_tokens / "heldout", log=lambda m: None)

    def trainer(run, steps):
        cfg = load_config("prior-gpt", schema=PriorConfig, overrides=PRIOR + [
            "data.crop=[16]", f"train.steps={steps}", "train.save_every=10", "train.eval_every=10", "optim.lr=3e-3"])
        return PriorTrainer(cfg, run, train, valid, log=lambda m: None, progress=False)

    whole = trainer(tmp_path / "whole", 40)
    whole.fit()
    log = [json.loads(x) for x in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    held = [r for r in log if r["split"] == "heldout"]
    assert held[-1]["nll"] < held[0]["nll"] < math.log(train.codebook_size)   # it learns real token statistics
    assert best_checkpoint(tmp_path / "whole").name == f"best_step_{min(held, key=lambda r: r['nll'])['step']:08d}"
    trainer(tmp_path / "split", 20).fit()
    trainer(tmp_path / "split", 40).fit(resume="auto")
    a = load_file(str(latest_checkpoint(tmp_path / "whole") / "model.safetensors"))
    b = load_file(str(latest_checkpoint(tmp_path / "split") / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_mel_prior_cli_samples_audio_and_visualises(mel_tokens, tmp_path, capsys):
    run = tmp_path / "prior"
    assert main(["train-prior", "--tokenizer", str(mel_tokens / "tok"), "--tokens", str(mel_tokens / "train"),
                 "--valid-tokens", str(mel_tokens / "heldout"), "--out", str(run), "--no-progress", *PRIOR,
                 "data.crop=[16]", "train.steps=6", "train.save_every=6", "train.eval_every=6"]) == 0
    prior = TokenPrior.from_pretrained(run)
    assert prior.meta["tokenizer_id"] == Tokenizer.from_pretrained(mel_tokens / "tok").tokenizer_id
    (entry,) = training_data(run)   # what the prior's model card quotes
    n_train, n_held = (len(list((mel_tokens / s).glob("*.npy"))) for s in ("train", "heldout"))
    assert (entry["train"]["files"], entry["heldout"]["files"]) == (n_train, n_held) and n_train > 2
    assert entry["tokenizer"] == str((mel_tokens / "tok").resolve())
    card = prior_card(prior, "org/prior", source=run)
    assert f"Trained on {n_train} files in `{(mel_tokens / 'train').resolve()}`" in card
    assert main(["sample", str(run), "-n", "3", "--batch-size", "2", "-o", str(tmp_path / "s"), "--top-k", "50",
                 "--vocoder", "griffin-lim"]) == 0
    tokens = np.load(tmp_path / "s" / "sample_002.npy")
    assert tokens.shape == (16,) and tokens.max() < prior.codebook_size
    assert (tmp_path / "s" / "sample_002_sample.wav").is_file() and (tmp_path / "s" / "index.html").is_file()
    record = json.loads((tmp_path / "s" / "samples.json").read_text())
    assert record["metrics"]["forward_passes_per_batch"] == 16   # GPT: one pass per position
    assert main(["visualize-prior", str(run), "--tokens", str(mel_tokens / "heldout"), "-o", str(tmp_path / "v"),
                 "--examples", "2", "--vocoder", "griffin-lim"]) == 0
    m = json.loads((tmp_path / "v" / "metrics.json").read_text())["metrics"]
    assert 0 <= m["top1_accuracy"] <= 1 and m["nll"] > 0 and m["tokens"] == 16 * m["windows"]
    assert (tmp_path / "v" / "window01_prior_top-1.wav").is_file()
    out = capsys.readouterr().out
    assert "top-1 accuracy" in out and "validation NLL" in out
    # a prior never decodes through another tokenizer
    other = tmp_path / "other"
    Tokenizer(load_config("mqgan-refiner", overrides=TINY)).save_pretrained(other)
    assert main(["sample", str(run), "-n", "1", "-o", str(tmp_path / "x"), "--tokenizer", str(other)]) == 2
    assert "not the one this prior models" in capsys.readouterr().err


@pytest.mark.slow
def test_multichannel_maskgit_prior_samples_decode_to_images(tmp_path):
    skdata = pytest.importorskip("skimage.data")
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        Image.fromarray(getattr(skdata, name)()).resize((64, 48)).save(tmp_path / f"{name}.png")
    cfg = load_config("movq", overrides=["model.backbone.channels=[16,32]", "model.backbone.spatial_norm_blocks=2",
                                         "model.quantizer.codebook_size=64"])
    tok = Tokenizer(cfg)
    tok.save_pretrained(tmp_path / "tok")
    c = tok.tokens_per_position
    assert c > 1
    assert main(["encode", str(tmp_path / "tok"), str(tmp_path), "-o", str(tmp_path / "tokens")]) == 0
    run = tmp_path / "prior"
    assert main(["train-prior", "--preset", "prior-maskgit", "--tokenizer", str(tmp_path / "tok"), "--tokens",
                 str(tmp_path / "tokens"), "--out", str(run), "--no-progress", *PRIOR, "data.crop=[4,4]",
                 "data.valid_fraction=0", "train.steps=3", "train.save_every=3", "model.maskgit_steps=5"]) == 0
    assert main(["sample", str(run), "-n", "2", "-o", str(tmp_path / "s"), "--steps", "3"]) == 0
    tokens = np.load(tmp_path / "s" / "sample_001.npy")
    assert tokens.shape == (4, 4, c)                      # MoVQ: c indices per position, channels last
    assert json.loads((tmp_path / "s" / "samples.json").read_text())["metrics"]["forward_passes_per_batch"] == 3
    f = tok.downsample
    assert Image.open(tmp_path / "s" / "sample_001.png").size == (4 * f, 4 * f)
    assert main(["visualize-prior", str(run), "--tokens", str(tmp_path / "tokens"), "-o", str(tmp_path / "v")]) == 2


def test_packed_token_store_is_the_same_corpus(mel_tokens, tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["pack-tokens", str(mel_tokens / "train"), "-o", str(store), "--shard-mb", "1"]) == 0
    folder = TokenCorpus.from_folder(mel_tokens / "train", log=lambda m: None)
    packed = TokenCorpus.from_folder(store, tokenizer_id=folder.tokenizer_id, log=lambda m: None)
    assert packed.paths == folder.paths and packed.meta == folder.meta
    assert all(np.array_equal(a, b) for a, b in zip(folder.arrays, packed.arrays))
    assert len(list(store.glob("shard-*"))) < len(folder)        # a few files, not one per token file
    from vqkit.priors.token_data import TokenBatches

    a, b = TokenBatches(folder, 16, 4, seed=3)[5], TokenBatches(packed, 16, 4, seed=3)[5]
    assert torch.equal(a[0], b[0])
    from vqkit.tokens_io import TokenFileError

    with pytest.raises(TokenFileError, match="made by tokenizer"):
        TokenCorpus.from_folder(store, tokenizer_id="someone-else", log=lambda m: None)


def test_prior_accumulation_equals_a_larger_batch(mel_tokens, tmp_path):
    train = TokenCorpus.from_folder(mel_tokens / "train", log=lambda m: None)

    def fit(run, *extra):
        cfg = load_config("prior-gpt", schema=PriorConfig, overrides=[*PRIOR, "data.crop=[16]", "train.steps=3",
                                                                       "model.dropout=0", *extra])
        t = PriorTrainer(cfg, run, train, log=lambda m: None, progress=False)
        t.fit()
        return t.raw_model.state_dict()

    a, b = fit(tmp_path / "big", "train.batch_size=4"), fit(tmp_path / "acc", "train.batch_size=2",
                                                            "train.grad_accum_steps=2")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=5e-4, msg=k)
