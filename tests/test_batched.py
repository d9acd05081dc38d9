"""Batched inference (models/batched.py, `vqkit encode/reconstruct --batch-frames`): every item's
tokens equal encoding it alone, every decoded signal equals decoding it alone within 1e-5, for
clips shorter than, about as long as and much longer than the receptive field, batches cut small
enough that clips of several lengths share one; and the CLI writes the same files as one at a time."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from cli_helpers import SR, cli, tone
from test_streaming import mel, tokenizer
from vqkit.models.batched import Field, decode_batch, plan_batches, run_batched

pytestmark = pytest.mark.usefixtures("single_thread")

# frames: a few tokens, around the receptive field (tens of frames at this size), several fields
LENGTHS = [3, 17, 40, 41, 64, 90, 91, 133, 260, 261, 600]


def check_same(tok, lengths=LENGTHS, budget=400, stages=None):
    mels = [mel(n, seed=n) for n in lengths]
    alone = [tok.encode(x) for x in mels]
    batched = tok.encode_batch(mels, batch_frames=budget)
    for n, a, b in zip(lengths, alone, batched):
        assert a.shape == b.shape and torch.equal(a, b), f"tokens of a {n}-frame clip differ in a batch"
    ref = {refined: [tok.decode(t, refined, stages) for t in alone] for refined in (True, False)}
    for refined in (True, False):
        out = tok.decode_batch(alone, refined, stages, batch_frames=budget)
        for n, a, b in zip(lengths, ref[refined], out):
            assert a.shape == b.shape, (n, a.shape, b.shape)
            assert (a - b).abs().max() < 1e-5, f"decoded {n}-frame clip differs in a batch (refined={refined})"
    # the output and the draft from one decoder pass (what eval scores)
    pairs = decode_batch(tok, alone, True, stages, batch_frames=budget, with_draft=True)
    for n, a, d, (b, e) in zip(lengths, ref[True], ref[False], pairs):
        assert (a - b).abs().max() < 1e-5 and (d - e).abs().max() < 1e-5, f"{n}-frame clip: output / draft pair"


@pytest.mark.parametrize("downsample", [1, 4])
def test_batches_equal_one_at_a_time(downsample):
    check_same(tokenizer(model__backbone__downsample=downsample, model__quantizer__levels=[8, 8, 8, 5, 5, 5]))


def test_batches_equal_one_at_a_time_causal():
    check_same(tokenizer(model__causal=True, model__backbone__downsample=4))


def test_batches_equal_one_at_a_time_residual_stages():
    tok = tokenizer(model__backbone__downsample=2, model__quantizer={"kind": "rfsq", "levels": [5, 5, 5], "stages": 3})
    check_same(tok, stages=2)


def test_padding_really_reaches_the_end_of_a_clip():
    """Why the ends are computed again: padded together with a longer clip, the end of a short clip
    comes out otherwise than alone (encoder latents, decoded frames), so the test above would fail
    without the end windows; its start is untouched."""
    tok = tokenizer(model__quantizer__levels=[8, 8, 8, 5, 5, 5])
    short, long = mel(120, seed=1), mel(400, seed=2)
    padded = torch.nn.functional.pad(short, (0, 280), value=tok.frontend.silence_level)
    latents = lambda x: tok.encoder(tok.normalize(x))  # noqa: E731
    with torch.no_grad():
        together, alone = latents(torch.stack([padded, long]))[0, :, :120], latents(short[None])[0]
    assert torch.allclose(together[:, :60], alone[:, :60], atol=1e-6)
    assert (together[:, -1] - alone[:, -1]).abs().max() > 1e-3
    tokens = tok.encode(short)
    padded_tokens = torch.cat([tokens, torch.zeros(280, dtype=torch.long)])
    frames = tok.decode(torch.stack([padded_tokens, tok.encode(long)]))[0, :, :120]
    assert (frames[:, -1] - tok.decode(tokens)[:, -1]).abs().max() > 1e-3
    assert torch.equal(tok.encode_batch([short, long])[0], tokens)


def test_plan_batches_respects_the_budget_and_keeps_every_item():
    sizes = [5, 300, 7, 100, 100, 900, 60]
    batches = plan_batches(sizes, 300)
    assert sorted(i for b in batches for i in b) == list(range(len(sizes)))
    for b in batches:
        assert len(b) == 1 or max(sizes[i] for i in b) * len(b) <= 300
    assert [5] in batches   # 900 frames exceed the budget: alone


def test_run_batched_on_a_known_function():
    """A moving sum (past 2, future 3) is a function whose ends padding would change: equal per item."""
    kernel = torch.ones(1, 1, 6)

    def fn(x):   # (B, 1, n) -> (B, 1, n), output t = sum of x[t-2 .. t+3] (zero padded)
        return torch.nn.functional.conv1d(torch.nn.functional.pad(x, (2, 3)), kernel)

    items = [torch.arange(1.0, n + 1).view(1, n) for n in (1, 4, 5, 6, 9, 20)]
    out = run_batched(fn, items, Field(unit=1, ratio=1, past=2, future=3, align=1), pad_value=100.0, budget=25)
    for x, y in zip(items, out):
        assert torch.equal(y, fn(x[None])[0])


def test_bad_batches_say_what_is_wrong():
    tok = tokenizer()
    with pytest.raises(TypeError, match="list of signals"):
        tok.encode_batch(mel(50, batch=(2,)))
    with pytest.raises(ValueError, match="item 1: .*NaN"):
        tok.encode_batch([mel(50), torch.full((20, 50), float("nan"))])
    with pytest.raises(ValueError, match="item 0: expected one signal"):
        tok.encode_batch([mel(50, batch=(2,))])
    with pytest.raises(ValueError, match=r"item 0: tokens of shape \(3, 2\) do not fit this tokenizer"):
        tok.decode_batch([torch.zeros(3, 2, dtype=torch.long)])
    with pytest.raises(ValueError, match="item 1: no tokens"):
        tok.decode_batch([tok.encode(mel(40)), torch.zeros(0, dtype=torch.long)])
    assert tok.encode_batch([]) == []


def test_image_batches_equal_one_at_a_time():
    from test_image_tokenizer import tiny
    from vqkit.models.tokenizer import Tokenizer

    torch.manual_seed(0)
    tok = Tokenizer(tiny("vqgan")).eval()
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, h, w, generator=g) * 2 - 1 for h, w in [(32, 32), (16, 24), (32, 32), (32, 32), (16, 24)]]
    tokens = tok.encode_batch(images, batch_images=2)
    for x, t in zip(images, tokens):
        assert torch.equal(t, tok.encode(x))
    for t, y in zip(tokens, tok.decode_batch(tokens, batch_images=2)):
        assert (y - tok.decode(t)).abs().max() < 1e-5
    for t, (y, draft) in zip(tokens, decode_batch(tok, tokens, batch_images=2, with_draft=True)):
        assert (y - tok.decode(t)).abs().max() < 1e-5 and (draft - tok.decode(t, refined=False)).abs().max() < 1e-5


def test_cli_batched_encode_writes_the_files_of_one_at_a_time(ckpt_21, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for i, sec in enumerate([0.4, 1.3, 2.2, 0.9]):
        sf.write(src / f"c{i}.wav", tone(sec, 200 + 90 * i), SR)
    (src / "broken.wav").write_bytes(b"RIFF not audio")
    outs = {}
    for flag in ("0", "300"):
        code, out, err = cli(capsys, "encode", ckpt_21, src, "-o", tmp_path / f"out{flag}", "--batch-frames", flag)
        assert code == 0
        assert "4 of 5 files done, 1 skipped" in out + err and "broken.wav" in out + err
        outs[flag] = {p.name: np.load(p) for p in sorted((tmp_path / f"out{flag}").glob("*.npy"))}
    assert list(outs["0"]) == ["c0.npy", "c1.npy", "c2.npy", "c3.npy"]
    for name, a in outs["0"].items():
        assert np.array_equal(a, outs["300"][name]), name


def test_cli_refuses_the_other_modalitys_batch_option(ckpt_21, tmp_path, capsys):
    sf.write(tmp_path / "a.wav", tone(0.5), SR)
    code, out, err = cli(capsys, "encode", ckpt_21, tmp_path / "a.wav", "-o", tmp_path / "a.npy", "--batch-images", "4")
    assert code != 0 and "--batch-images applies to image tokenizers" in err and "--batch-frames" in err
    code, out, err = cli(capsys, "reconstruct", ckpt_21, tmp_path / "a.wav", "-o", tmp_path / "b.wav",
                         "--batch-frames", "-3")
    assert code != 0 and "--batch-frames -3: must be >= 0" in err


@pytest.fixture(scope="module")
def ckpt_21(tmp_path_factory):
    tok = tokenizer(3, model__backbone__downsample=4, model__mel__n_mels=80)
    return tok.save_pretrained(tmp_path_factory.mktemp("ckpt") / "mel21")


@pytest.mark.parametrize("preset", ["vqgan", "movq", "vit-vq", "convnext-vq", "seqgan-phase2"])
def test_every_image_preset_batches_like_one_at_a_time(preset):
    """The batch path's copy runs channels-last: every image backbone gives the same tokens and,
    within float rounding, the same images as Tokenizer.encode / decode."""
    from test_image_tokenizer import tiny
    from vqkit.models.tokenizer import Tokenizer

    torch.manual_seed(0)
    tok = Tokenizer(tiny(preset)).eval()
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 32, 48, generator=g) * 2 - 1 for _ in range(3)]
    tokens = tok.encode_batch(images, batch_images=2)
    assert all(torch.equal(t, tok.encode(x)) for x, t in zip(images, tokens))
    for t, y in zip(tokens, tok.decode_batch(tokens, batch_images=3)):
        assert (y - tok.decode(t)).abs().max() < 1e-4
