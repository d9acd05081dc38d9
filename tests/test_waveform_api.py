"""Tokenizer.encode_audio / decode_audio (models/waveforms.py) and vqkit.load: waveforms give the
tokens of `vqkit encode` on the same audio in a WAV, a batch gives each item its tokens alone, decode
mirrors encode through the vocoder, bad input is refused naming the problem."""
from __future__ import annotations

import re

import numpy as np
import pytest
import soundfile as sf
import torch

import vqkit
from conftest import TINY
from vqkit.cli import main
from vqkit.config import MelConfig, load_config
from vqkit.models.tokenizer import Tokenizer
from vqkit.models.waveforms import PAD_TOKEN
from vqkit.vocoders import GriffinLimVocoder, vocoder_for

pytestmark = pytest.mark.usefixtures("single_thread")
SR = 22050


def tiny(preset: str, *extra: str) -> Tokenizer:
    torch.manual_seed(0)
    return Tokenizer(load_config(preset=preset, overrides=[*TINY, *extra])).eval()


@pytest.fixture(scope="module")
def toks(tmp_path_factory):
    """A plain FSQ tokenizer (downsample 2) and a residual one (downsample 4, two stages), saved."""
    root = tmp_path_factory.mktemp("waveapi")
    out = {}
    for name, tok in {"plain": tiny("mqgan-refiner", "model.backbone.downsample=2"),
                      "rfsq": tiny("mqgan-refiner-21-rfsq")}.items():
        path = tok.save_pretrained(root / name)
        out[name] = (Tokenizer.from_pretrained(path), path)
    return out


def speechlike(seconds: float, rate: int = SR, seed: int = 0) -> np.ndarray:
    """Noise bursts and a gliding tone in [-1, 1]: tokens vary along the clip."""
    g = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.4 * np.sin(2 * np.pi * (150 + 400 * t) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (tone + 0.1 * g.standard_normal(t.size) * (np.sin(2 * np.pi * 1.3 * t) > 0)).astype(np.float32)


def cli_tokens(tmp_path, ckpt, audio: np.ndarray, rate: int, name: str = "a") -> np.ndarray:
    wav = tmp_path / f"{name}.wav"
    sf.write(wav, audio, rate, subtype="FLOAT")   # float WAV: the file holds exactly these samples
    out = tmp_path / f"{name}.npy"
    assert main(["encode", str(ckpt), str(wav), "-o", str(out)]) == 0
    return np.load(out)


# ---- the tokens of the command line ------------------------------------------------------------

@pytest.mark.parametrize("kind, seconds", [("plain", 2.3), ("rfsq", 2.3), ("plain", 25.0)])
def test_tokens_of_a_waveform_are_those_of_vqkit_encode_on_its_wav(toks, tmp_path, kind, seconds):
    """25 s: the command line reads 20 s blocks and encodes windows of 2048 frames (23.8 s); one
    waveform is one mel and one encode: the same tokens."""
    tok, ckpt = toks[kind]
    audio = speechlike(seconds)
    expected = cli_tokens(tmp_path, ckpt, audio, SR)
    tokens = tok.encode_audio(audio, SR)
    assert tokens.dtype == torch.int64 and tokens.shape == expected.shape
    assert expected.shape[0] == -(-tok.frontend.num_frames(audio.size) // tok.downsample)
    assert np.array_equal(tokens.numpy(), expected)
    assert torch.equal(tok.encode_audio(torch.from_numpy(audio), SR), tokens)   # torch input: the same
    assert torch.equal(tok.encode_audio(audio.astype(np.float64), SR), tokens)  # float64: the same
    assert len(np.unique(expected)) > 5   # a clip with content, not one repeated code


def test_a_waveform_at_another_rate_is_resampled_as_vqkit_encode_resamples_its_wav(toks, tmp_path):
    tok, ckpt = toks["plain"]
    for rate in (16000, 44100):
        audio = speechlike(1.7, rate, seed=rate)
        expected = cli_tokens(tmp_path, ckpt, audio, rate, f"r{rate}")
        assert np.array_equal(tok.encode_audio(audio, rate).numpy(), expected), rate


def test_samples_beyond_full_scale_are_clipped_as_vqkit_encode_clips_them(toks, tmp_path):
    tok, ckpt = toks["plain"]
    audio = speechlike(1.0) * 3.0
    assert np.abs(audio).max() > 1.0
    expected = cli_tokens(tmp_path, ckpt, audio, SR)
    assert np.array_equal(tok.encode_audio(audio, SR).numpy(), expected)
    assert torch.equal(tok.encode_audio(np.clip(audio, -1, 1), SR), tok.encode_audio(audio, SR))


# ---- batches -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["plain", "rfsq"])
def test_each_item_of_a_batch_gets_the_tokens_it_gets_alone(toks, kind):
    tok, _ = toks[kind]
    clips = [speechlike(s, seed=i) for i, s in enumerate((1.3, 0.4, 2.1))]
    alone = [tok.encode_audio(c, SR) for c in clips]
    assert len({a.shape[0] for a in alone}) == 3

    listed = tok.encode_audio(clips, SR)
    assert isinstance(listed, list) and all(torch.equal(a, b) for a, b in zip(listed, alone))
    assert all(torch.equal(a, b) for a, b in zip(tok.encode_audio([torch.from_numpy(c) for c in clips], SR), alone))

    padded = np.full((3, max(c.size for c in clips)), np.nan, np.float32)   # padding is never read
    for i, c in enumerate(clips):
        padded[i, : c.size] = c
    lengths = [c.size for c in clips]
    for batch, n in ((padded, lengths), (torch.from_numpy(padded), torch.tensor(lengths))):
        tokens, token_lengths = tok.encode_audio(batch, SR, lengths=n)
        assert token_lengths.dtype == torch.int64 and token_lengths.tolist() == [a.shape[0] for a in alone]
        assert tokens.shape == (3, max(token_lengths), *alone[0].shape[1:]) and tokens.dtype == torch.int64
        for i, a in enumerate(alone):
            assert torch.equal(tokens[i, : a.shape[0]], a)
            assert (tokens[i, a.shape[0]:] == PAD_TOKEN).all()


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to the float rounding of another convolution kernel (log-mels within ~1e-6,
    Griffin-Lim audio within ~4e-5 here)."""
    return a.shape == b.shape and float((a - b).abs().max()) < 1e-3   # refined vs draft: ~1e-2


@pytest.mark.parametrize("kind", ["plain", "rfsq"])
def test_decode_audio_mirrors_encode_audio_and_is_the_vocoder_on_decode(toks, kind):
    tok, _ = toks[kind]
    tokens = tok.encode_audio([speechlike(0.5, seed=1), speechlike(0.9, seed=2)], SR)
    voc = vocoder_for(tok.config.model.mel, prefer="griffin-lim")
    hop = tok.config.model.mel.hop_length
    one, sr = tok.decode_audio(tokens[0], vocoder="griffin-lim")
    assert sr == SR and one.dtype == torch.float32 and one.shape == (tokens[0].shape[0] * tok.downsample * hop,)
    assert close(one, voc(tok.decode(tokens[0])))   # decode_audio's batches run channels-last: float rounding

    listed, sr = tok.decode_audio(tokens, vocoder=voc)
    assert sr == SR and torch.equal(listed[0], one)
    padded_tokens, token_lengths = tok.encode_audio(
        np.stack([np.pad(speechlike(0.5, seed=1), (0, 8820)), speechlike(0.9, seed=2)]), SR, lengths=[11025, 19845])
    audio, lengths, sr = tok.decode_audio(padded_tokens, token_lengths, vocoder="griffin-lim")
    assert sr == SR and lengths.tolist() == [a.shape[0] for a in listed]
    assert audio.shape == (2, max(lengths)) and audio.dtype == torch.float32
    for i, a in enumerate(listed):
        assert torch.equal(audio[i, : a.shape[0]], a) and not audio[i, a.shape[0]:].any()
    # numpy tokens, and the draft (refined=False) is the decoder's
    draft, _ = tok.decode_audio(tokens[1].numpy(), vocoder="griffin-lim", refined=False)
    assert close(draft, voc(tok.decode(tokens[1], refined=False)))


def test_stages_pass_through_to_decode(toks):
    tok, _ = toks["rfsq"]
    tokens = tok.encode_audio(speechlike(0.6), SR)
    voc = vocoder_for(tok.config.model.mel, prefer="griffin-lim")
    first, _ = tok.decode_audio(tokens, vocoder=voc, stages=1)
    assert close(first, voc(tok.decode(tokens, stages=1)))
    assert not torch.equal(first, tok.decode_audio(tokens, vocoder=voc)[0])
    with pytest.raises(ValueError, match=r"stages=3: .*2 stages"):
        tok.decode_audio(tokens, stages=3)
    plain, _ = toks["plain"]
    with pytest.raises(ValueError, match="stages=1: decoding from the first k stages needs a residual quantiser"):
        plain.decode_audio(plain.encode_audio(speechlike(0.3), SR), stages=1)


def test_the_vocoder_is_chosen_as_the_command_line_chooses_it(toks):
    tok, _ = toks["plain"]
    tokens = tok.encode_audio(speechlike(0.2), SR)
    try:
        hifigan = vocoder_for(tok.config.model.mel, prefer="hifigan")
    except FileNotFoundError:
        hifigan = None
    auto, sr = tok.decode_audio(tokens)
    expected = (hifigan or vocoder_for(tok.config.model.mel, prefer="griffin-lim"))(tok.decode(tokens))
    assert sr == SR and torch.allclose(auto, expected, atol=1e-6)
    other = tiny("mqgan-refiner", "model.mel.sample_rate=16000")   # not HiFi-GAN V1's mels
    t16 = other.encode_audio(speechlike(0.3), SR)
    with pytest.raises(ValueError, match=r"HiFi-GAN V1 cannot vocode these mels: sample_rate=16000"):
        other.decode_audio(t16, vocoder="hifigan")
    audio, sr = other.decode_audio(t16)   # auto: Griffin-Lim
    assert sr == 16000 and audio.shape == (t16.shape[0] * 256,)
    with pytest.raises(ValueError, match=r"vocoder 'griffin-lim' takes mels with sample_rate=16000, this "
                                         r"tokenizer's have sample_rate=22050"):
        tok.decode_audio(tokens, vocoder=GriffinLimVocoder(MelConfig(sample_rate=16000)))
    with pytest.raises(ValueError, match=r"vocoder must be one of 'auto', 'hifigan', 'griffin-lim' or a Vocoder, "
                                         r"got 'wavenet'"):
        tok.decode_audio(tokens, vocoder="wavenet")


# ---- bad input -----------------------------------------------------------------------------------

W = speechlike(0.5)
NAN = W.copy()
NAN[100] = np.nan

ENCODE_CASES = {
    "nan": ((NAN, SR), "waveform has 1 non-finite samples (NaN or Inf)"),
    "nan in a list": (([W, NAN], SR), "waveform[1] has 1 non-finite samples (NaN or Inf)"),
    "nan in a padded row": ((np.stack([W, NAN]), SR, [W.size, 200]),
                            "waveform[1] has 1 non-finite samples"),
    "empty": ((np.zeros(0, np.float32), SR), "waveform is empty (0 samples)"),
    "empty list": (([], SR), "no waveforms: the list is empty"),
    "too short": ((W[:300], SR), "waveform is too short for one STFT window: 300 samples at 22050 Hz; this "
                                 "tokenizer's mel frontend needs more than 384 samples at 22050 Hz (n_fft=1024)"),
    "too short after resampling": (([W, W[:100]], 8000), "waveform[1] is too short for one STFT window: 276 "
                                                         "samples at 22050 Hz (resampled from 100 at 8000 Hz)"),
    "2-D without lengths": ((np.stack([W, W]), SR), "a 2-D waveform (2, 11025) is read as a padded batch "
                                                    "(B, samples) and needs lengths="),
    "3-D": ((W.reshape(1, 1, -1), SR), "waveform: expected (samples,), a list of those, or a padded"),
    "lengths of a 1-D waveform": ((W, SR, [W.size]), "lengths goes with a padded (B, S) waveform; a 1-D"),
    "lengths of a list": (([W], SR, [W.size]), "a list of waveforms carries its own lengths"),
    "too few lengths": ((np.stack([W, W]), SR, [W.size]), "lengths: expected 2 lengths, one per row of the "
                                                          "waveform batch of shape (2, 11025, ...), got 1"),
    "a length too long": ((np.stack([W, W]), SR, [W.size, W.size + 1]),
                          "lengths[1]=11026 is outside 1..11025: the waveform batch has 11025 samples per row"),
    "a zero length": ((np.stack([W, W]), SR, torch.tensor([0, 5])), "lengths[0]=0 is outside 1..11025"),
    "an empty batch": ((np.zeros((0, 100), np.float32), SR, []), "no waveform: the batch has 0 rows"),
    "rate as np.float32": ((W[:300], np.float32(22050)), "300 samples at 22050 Hz"),   # accepted: too short
    "float lengths": ((np.stack([W, W]), SR, np.array([5.0, 6.0])), "lengths must be whole numbers of samples"),
    "integer pcm": (((W * 32767).astype(np.int16), SR), "waveform: samples must be floats in [-1, 1], got dtype "
                                                        "int16 (integer PCM: divide by its full scale"),
    "a list of numbers": (([0.1, 0.2], SR), "waveform[0]: expected a torch tensor or numpy array of samples, got "
                                            "float (a list holds one array per waveform"),
    "rate 0": ((W, 0), "sample_rate must be a positive whole number of Hz, got 0"),
    "fractional rate": ((W, 22050.5), "sample_rate must be a positive whole number of Hz, got 22050.5"),
    "rate as text": ((W, "22050"), "sample_rate must be a positive whole number of Hz, got '22050'"),
}


@pytest.mark.parametrize("case", ENCODE_CASES, ids=str)
def test_bad_waveforms_are_refused_naming_the_problem(toks, case):
    args, message = ENCODE_CASES[case]
    with pytest.raises(ValueError, match=re.escape(message)):
        toks["plain"][0].encode_audio(*args)


def test_bad_tokens_are_refused_naming_the_problem(toks):
    tok, _ = toks["plain"]
    rfsq, _ = toks["rfsq"]
    t = tok.encode_audio(W, SR)
    padded, n = tok.encode_audio(np.stack([W, W]), SR, lengths=[W.size, 5000])
    cases = [
        (tok, (t.float(),), {}, "tokens: token ids must be integers, got dtype torch.float32"),
        (tok, (torch.full((4,), 1000),), {}, "tokens holds ids outside [0, 1000) (min 1000, max 1000)"),
        (tok, (padded, n + torch.tensor([0, 1])), {}, "tokens[1] holds ids outside [0, 1000) (min -1, max"),
        (tok, (padded, n + torch.tensor([0, 1])), {}, "(padding past lengths is ignored: is a length too long?)"),
        (tok, (padded,), {}, "tokens of shape (2, 22) are read as a padded batch (B, T'max) and need lengths="),
        (tok, (padded, [22]), {}, "lengths: expected 2 lengths, one per row of the tokens batch"),
        (tok, (padded, [22, 23]), {}, "lengths[1]=23 is outside 1..22: the tokens batch has 22 positions per row"),
        (tok, (t, [t.shape[0]]), {}, "lengths goes with padded (B, T'max) tokens; tokens (T') are one clip"),
        (tok, ([t, t.float()],), {}, "tokens[1]: token ids must be integers"),
        (tok, ([t.unsqueeze(0)],), {}, "tokens[0]: each item of a list is (T'), got shape (1, 22)"),
        (tok, ([],), {}, "no tokens: the list is empty"),
        (tok, (torch.zeros(0, 4, dtype=torch.long), []), {}, "no tokens: the batch has 0 rows"),
        (tok, (torch.zeros(0, dtype=torch.long),), {}, "tokens is empty (0 positions)"),
        (tok, (t.tolist(),), {}, "tokens[0]: expected a torch tensor or numpy array of token ids, got int"),
        (rfsq, (torch.zeros(5, 3, dtype=torch.long),), {}, "tokens: this tokenizer has 2 tokens per position "
                                                           "(last axis), got shape (5, 3)"),
        (rfsq, (torch.zeros(5, dtype=torch.long),), {}, "tokens: expected (T', 2), a list of those, or padded "
                                                        "(B, T'max, 2) with lengths; got shape (5,)"),
    ]
    for model, args, kw, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            model.decode_audio(*args, vocoder="griffin-lim", **kw)


def test_an_image_tokenizer_has_no_audio_api():
    torch.manual_seed(0)
    tok = Tokenizer(load_config(preset="vqgan", overrides=["model.backbone.channels=[16, 32]"]))
    for call in (lambda: tok.encode_audio(W, SR), lambda: tok.decode_audio(torch.zeros(2, 2, dtype=torch.long))):
        with pytest.raises(ValueError, match=re.escape("needs a mel (audio) tokenizer; this is an image tokenizer, "
                                                       "which has no audio frontend (use encode / decode)")):
            call()


# ---- vqkit.load ----------------------------------------------------------------------------------

def test_vqkit_load_gives_the_tokenizer_or_the_prior_of_a_directory(toks, tmp_path):
    from pathlib import Path

    from vqkit.priors.prior import TokenPrior

    tok, ckpt = toks["rfsq"]
    loaded = vqkit.load(ckpt)
    assert isinstance(loaded, Tokenizer) and loaded.tokenizer_id == tok.tokenizer_id
    assert vqkit.load(str(ckpt)).tokenizer_id == tok.tokenizer_id
    prior_dir = Path(__file__).parent / "data" / "before-nn-transformer" / "gpt"
    prior = vqkit.load(prior_dir)
    assert isinstance(prior, TokenPrior) and prior.kind == "gpt"
    with pytest.raises(TypeError, match="vqkit.load of a token prior takes only map_location"):
        vqkit.load(prior_dir, revision="main")
    with pytest.raises(FileNotFoundError, match="no such checkpoint or run directory"):
        vqkit.load(tmp_path / "absent")
