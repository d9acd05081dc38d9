"""Residual FSQ tokens everywhere tokens go: the tokenizer's (T', stages) tokens, decoding from the
first k stages (whole clips, streams, windows), the sidecar's rates, the priors over stages, and
the command line end to end (train, info, encode, train-prior, sample, visualize-prior, decode and
reconstruct --stages)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import TINY
from vqkit.cli import main
from vqkit.config import load_config
from vqkit.config.prior_schema import PriorConfig
from vqkit.models.tokenizer import Tokenizer
from vqkit.priors import build_prior
from vqkit.priors.token_data import TokenCorpus
from vqkit.tokens_io import load_tokens, save_tokens

pytestmark = pytest.mark.usefixtures("single_thread")
N_MELS = 16
SMALL = ["model.mel.n_mels=16", "model.backbone.channels=[16]", "model.backbone.kernel_size=3",
         "model.refiner.base_channels=4", "model.refiner.channel_mults=[1, 2]"]
RFSQ = ["model.quantizer={kind: rfsq, levels: [5, 5, 3], stages: 3}"]   # 75 codes per stage
PRIOR = ["model.dim=32", "model.depth=2", "model.heads=2", "train.batch_size=4", "optim.warmup_steps=2",
         "train.log_every=1"]


def make_tokenizer(*extra: str, seed: int = 0) -> Tokenizer:
    torch.manual_seed(seed)
    return Tokenizer(load_config(overrides=[*SMALL, *RFSQ, *extra])).eval()


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def log_mel(*shape: int, seed: int = 0) -> torch.Tensor:
    return -5.0 + 2.0 * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---- the tokenizer -------------------------------------------------------------------------------

def test_tokens_hold_one_index_per_stage_and_decode_from_the_first_k(tok):
    mel = log_mel(N_MELS, 60)
    tokens = tok.encode(mel)
    assert tokens.shape == (60, 3) and tok.token_dims == 2 and tok.tokens_per_position == tok.stages == 3
    assert torch.equal(tok.encode(mel[None])[0], tokens)
    other = tokens.clone()
    other[:, 1:] = torch.randint(0, tok.codebook_size, other[:, 1:].shape, generator=torch.Generator().manual_seed(1))
    outputs = {}
    for k in (1, 2, 3):
        # independently: the decoder and refiner on the sum of the first k stage codes
        codes = tok.quantizer.stage_codes(tokens[None])
        draft, hidden = tok.decoder(sum(codes[1:k], codes[0]))
        expected = tok.denormalize(tok.refiner(draft, hidden))[0]
        outputs[k] = tok.decode(tokens, stages=k)
        torch.testing.assert_close(outputs[k], expected, rtol=0, atol=1e-5)
        assert torch.equal(tok.decode(tokens[None], stages=k)[0], outputs[k])
        assert torch.equal(tok.decode(tokens, refined=False, stages=k), tok.denormalize(draft)[0])
        torch.testing.assert_close(tok.reconstruct(mel, stages=k), outputs[k], rtol=0, atol=1e-5)
    assert torch.equal(tok.decode(other, stages=1), outputs[1])       # later stages do not count
    assert torch.equal(tok.decode(tokens), outputs[3])
    assert not torch.equal(outputs[1], outputs[3])


def test_streams_decode_from_the_first_k_stages_as_whole_clips(tok):
    tokens = tok.encode(log_mel(N_MELS, 90, seed=2))
    for model in (tok, make_tokenizer("model.causal=true", seed=1)):
        t = model.encode(log_mel(N_MELS, 90, seed=2)) if model is not tok else tokens
        for k in (1, 2):
            dec = model.stream_decoder(stages=k, window_tokens=16)
            pieces = [dec.push(t[i:i + 7]) for i in range(0, t.shape[0], 7)] + [dec.flush()]
            torch.testing.assert_close(torch.cat(pieces, -1), model.decode(t, stages=k), rtol=0, atol=1e-5)


def test_bad_stages_are_refused_naming_them(tok):
    tokens = tok.encode(log_mel(N_MELS, 8))
    for bad in (0, 4, -2, 2.0):
        with pytest.raises(ValueError, match=r"stages=.*must be an integer in \[1, 3\]"):
            tok.decode(tokens, stages=bad)
    with pytest.raises(ValueError, match=r"\[1, 3\]"):
        tok.stream_decoder(stages=4)
    fsq = Tokenizer(load_config(overrides=SMALL)).eval()
    assert fsq.stages is None and fsq.bits_per_second_by_stages() is None
    with pytest.raises(ValueError, match=r"stages=1: .*needs a residual quantiser .*'fsq'"):
        fsq.decode(fsq.encode(log_mel(N_MELS, 8)), stages=1)
    fsq.check_stages(None)


def test_rates_and_the_sidecar_record_the_stages(tok, tmp_path):
    bits = math.log2(75)
    per_second = tok.config.model.mel.frames_per_second          # downsample 1: one position per frame
    assert tok.bits_per_position == pytest.approx(3 * bits)
    assert tok.bits_per_second == pytest.approx(per_second * 3 * bits)
    rates = tok.bits_per_second_by_stages()
    assert rates.keys() == {"1", "2", "3"}
    assert [rates[k] for k in "123"] == pytest.approx([per_second * k * bits for k in (1, 2, 3)])
    tokens = tok.encode(log_mel(N_MELS, 20)).numpy()
    path = save_tokens(tmp_path / "t.npy", tokens, tok)
    arr, meta = load_tokens(path, tok)
    assert arr.shape == (20, 3) and np.array_equal(arr, tokens)
    assert meta["residual"] is True and meta["stages"] == 3 and meta["channels_per_position"] == 3
    assert meta["bits_per_position"] == pytest.approx(3 * bits)
    assert meta["bits_per_second_by_stages"] == pytest.approx(rates)
    corpus = TokenCorpus.from_folder(tmp_path, log=lambda m: None)
    assert corpus.channels == 3 and corpus.arrays[0].shape == (20, 3)


def test_image_tokens_hold_the_stages_last():
    from vqkit.modalities import modality_of

    torch.manual_seed(0)
    cfg = load_config("vqgan", overrides=["model.backbone.channels=[16, 32]",
                                          "model.quantizer={kind: rfsq, levels: [4, 4, 4], stages: 2}"])
    img = Tokenizer(cfg).eval()
    x = torch.rand(3, 32, 24) * 2 - 1
    tokens = img.encode(x)
    assert tokens.shape == (8, 6, 2) and img.token_grid(32, 24) == (8, 6, 2)
    assert not torch.equal(img.decode(tokens, stages=1), img.decode(tokens))
    assert img.reconstruct(x, stages=1).shape == x.shape
    facts = modality_of(img).facts(img)
    assert facts["token_grid_256px"] == [64, 64, 2] and facts["bits_per_256px_image"] == 64 * 64 * 2 * 6
    assert facts["bits_per_256px_image_by_stages"] == {"1": 64 * 64 * 6, "2": 64 * 64 * 12}


# ---- the priors ----------------------------------------------------------------------------------

def prior_net(kind: str, channels: int = 3, length: int = 10):
    cfg = load_config(f"prior-{kind}", schema=PriorConfig, overrides=PRIOR).model
    torch.manual_seed(0)
    return build_prior(cfg, 75, channels, length).eval()


def test_the_gpt_predicts_every_stage_of_a_position_from_the_earlier_positions():
    """The existing channel mechanism (as for MoVQ's chunks): the input of a position is the sum of
    its stages' embeddings, and one head gives every stage's logits of the next position, each
    from the earlier positions only (not from the same position's coarser stages)."""
    net = prior_net("gpt")
    tokens = torch.randint(0, 75, (2, 10, 3), generator=torch.Generator().manual_seed(3))
    logits = net(tokens)
    assert logits.shape == (2, 10, 3, 75)
    changed = tokens.clone()
    changed[:, 4] = (changed[:, 4] + 1) % 75                         # every stage of position 4
    after = net(changed)
    assert torch.equal(after[:, :5], logits[:, :5])                  # positions <= 4 never see position 4
    assert not torch.allclose(after[:, 5], logits[:, 5])
    loss, logs = net.loss(tokens)
    assert loss.item() == pytest.approx(math.log(75), rel=0.2)
    sampled = net.generate(2, 10, generator=torch.Generator().manual_seed(0))
    assert sampled.shape == (2, 10, 3) and int(sampled.max()) < 75
    assert net.forward_passes == 10                                   # one pass per position, all stages


def test_maskgit_masks_stages_one_by_one():
    """MaskGIT's masks are drawn over (position, stage) entries: a position can have its coarse
    stage visible and a finer one masked, and only masked entries are trained and sampled."""
    net = prior_net("maskgit")
    mask = net.random_mask(64, 10 * 3, torch.device("cpu"), torch.Generator().manual_seed(4)).view(64, 10, 3)
    per_position = mask.sum(-1)
    assert ((per_position > 0) & (per_position < 3)).any()          # partly masked positions exist
    assert mask[..., 0].any() and mask[..., 2].any()
    tokens = torch.randint(0, 75, (4, 10, 3), generator=torch.Generator().manual_seed(5))
    loss, logs = net.loss(tokens, generator=torch.Generator().manual_seed(6))
    assert torch.isfinite(loss) and 0 < logs["mask_ratio"] <= 1
    sampled = net.generate(2, 10, steps=4, generator=torch.Generator().manual_seed(0))
    assert sampled.shape == (2, 10, 3) and 0 <= int(sampled.min()) and int(sampled.max()) < 75
    assert net.forward_passes == 4 and net.masked_per_step[-1] == 0


# ---- the command line, end to end --------------------------------------------------------------

@pytest.mark.slow
def run_tokenizer_hop_seconds(run) -> float:
    """Seconds of audio per token position of the tokenizer in `run`."""
    m = Tokenizer.from_pretrained(run).config.model
    return m.backbone.downsample * m.mel.hop_length / m.mel.sample_rate


def test_rfsq_end_to_end_through_the_command_line(demo_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--preset", "mqgan-refiner", "--data", str(demo_dir / "train"), "--valid-data",
                 str(demo_dir / "heldout"), "--out", str(run), "--no-progress", *TINY, *RFSQ,
                 "model.quantizer.stage_dropout=0.5", "train.steps=4", "train.save_every=4", "train.eval_every=4",
                 "loss.gan_start_step=2"]) == 0
    logged = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("usage_stage3" in r for r in logged)                 # per-stage usage reaches the training log
    capsys.readouterr()
    assert main(["info", str(run)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["quantizer"] == "rfsq levels [5, 5, 3] x 3 stages = 75 codes per stage" and info["stages"] == 3
    by_stages = info["bits_per_second_by_stages"]
    assert list(by_stages) == ["1", "2", "3"] and by_stages["3"] == pytest.approx(info["bits_per_second"], abs=0.1)
    assert by_stages["1"] == pytest.approx(info["bits_per_second"] / 3, abs=0.1)

    for split in ("train", "heldout"):
        assert main(["encode", str(run), str(demo_dir / split), "-o", str(tmp_path / split), "-q"]) == 0
    one = sorted((tmp_path / "heldout").glob("*.npy"))[0]
    assert np.load(one).shape[1] == 3 and json.loads(one.with_suffix(".json").read_text())["stages"] == 3
    capsys.readouterr()
    source = next((demo_dir / "heldout").rglob(json.loads(one.with_suffix(".json").read_text())["source"]))
    assert main(["encode", str(run), str(source), "-o", str(tmp_path / "one.npy")]) == 0
    positions = np.load(one).shape[0]   # the line counts every stage's tokens, and the clip's real length
    seconds = positions * run_tokenizer_hop_seconds(run)
    assert f"({3 * positions} tokens, {seconds:.2f} s)" in capsys.readouterr().out

    priors = {"gpt": tmp_path / "gpt", "maskgit": tmp_path / "maskgit"}
    for kind, out in priors.items():
        assert main(["train-prior", "--preset", f"prior-{kind}", "--tokenizer", str(run), "--tokens",
                     str(tmp_path / "train"), "--valid-tokens", str(tmp_path / "heldout"), "--out", str(out),
                     "--no-progress", *PRIOR, "data.crop=[16]", "train.steps=3", "train.save_every=3",
                     "train.eval_every=3"]) == 0
        assert main(["sample", str(out), "-n", "2", "-o", str(tmp_path / f"s-{kind}"), "--vocoder", "griffin-lim"]) == 0
        sample = tmp_path / f"s-{kind}" / "sample_001.npy"
        assert np.load(sample).shape == (16, 3) and (tmp_path / f"s-{kind}" / "sample_001_sample.wav").is_file()
    assert main(["visualize-prior", str(priors["gpt"]), "--tokens", str(tmp_path / "heldout"), "-o",
                 str(tmp_path / "v"), "--examples", "1", "--vocoder", "griffin-lim"]) == 0
    m = json.loads((tmp_path / "v" / "metrics.json").read_text())["metrics"]
    assert m["tokens"] == 16 * 3 * m["windows"]                        # every stage of every position scored

    capsys.readouterr()
    sample = tmp_path / "s-gpt" / "sample_001.npy"
    for k in ("1", "3"):
        out = tmp_path / f"stages{k}.wav"
        assert main(["decode", str(run), str(sample), "-o", str(out), "--stages", k, "--vocoder", "griffin-lim"]) == 0
        audio, sr = sf.read(str(out))
        assert len(audio) == 16 * 256 and np.isfinite(audio).all()
    wav = sorted((demo_dir / "heldout").glob("*.wav"))[0]
    assert main(["reconstruct", str(run), str(wav), "-o", str(tmp_path / "rec.wav"), "--stages", "1",
                 "--vocoder", "griffin-lim"]) == 0
    assert abs(sf.info(str(tmp_path / "rec.wav")).duration - sf.info(str(wav)).duration) < 0.05
    capsys.readouterr()
    assert main(["decode", str(run), str(sample), "-o", str(tmp_path / "x.wav"), "--stages", "4"]) == 2
    assert "--stages=4: must be an integer in [1, 3]" in capsys.readouterr().err
    fsq = tmp_path / "fsq"
    Tokenizer(load_config("mqgan-refiner", overrides=TINY)).save_pretrained(fsq)
    assert main(["reconstruct", str(fsq), str(wav), "-o", str(tmp_path / "y.wav"), "--stages", "1"]) == 2
    assert "needs a residual quantiser" in capsys.readouterr().err


def test_eval_scores_the_output_of_the_first_k_stages(tok):
    """`vqkit eval` (MelAccumulator) reports the error of the output decoded from the first k stages,
    each equal to decoding the tokens with stages=k, and their bit rates; the last k is refined_*."""
    from vqkit.evaluation.mel_eval import evaluate_mels

    g = torch.Generator().manual_seed(0)
    mels = [-5 + 2 * torch.randn(N_MELS, n, generator=g) for n in (40, 97)]
    metrics, examples = evaluate_mels(tok, mels)
    for k in (1, 2):
        errors = [(tok.decode(tok.encode(m), stages=k)[:, : m.shape[-1]] - m).abs().mean(0).sum() for m in mels]
        assert metrics[f"stages_{k}_l1"] == pytest.approx(float(sum(errors)) / 137, rel=1e-5)
        assert metrics[f"stages_{k}_bits_per_second"] == pytest.approx(tok.bits_per_second * k / 3)
    assert "stages_3_l1" not in metrics and metrics["stages_3_bits_per_second"] == pytest.approx(tok.bits_per_second)
    assert metrics["stages_1_l1"] != metrics["stages_2_l1"] != metrics["refined_l1"]
    assert set(examples[0]) == {"original", "draft", "refined"}   # pictures and audio stay those of every stage
