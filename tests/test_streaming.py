"""Streaming: for ANY chunking, streamed tokens equal whole-clip tokens exactly and streamed mels
equal whole-clip decoding within 1e-5 (causal models chunk by chunk, other models window by window);
the audio frontend streams too; streams are independent of each other."""
from __future__ import annotations

import json
import random

import pytest
import torch

from vqkit.config import load_config
from vqkit.frontends.mel import MelFrontend
from vqkit.models.time_context import UnboundedContext
from vqkit.models.tokenizer import Tokenizer
from vqkit.nn.streaming import StreamStates

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = {"model.mel.n_mels": 20, "model.backbone.channels": [12, 16], "model.backbone.kernel_size": 3,
        "model.backbone.attention_frames": 7, "model.refiner.base_channels": 4,
        "model.refiner.channel_mults": [1, 2, 2], "discriminator.bands": 2}


def tokenizer(seed: int = 0, **changes) -> Tokenizer:
    values = {**TINY, **{k.replace("__", "."): v for k, v in changes.items()}}
    torch.manual_seed(seed)
    return Tokenizer(load_config(overrides=[f"{k}={json.dumps(v)}" for k, v in values.items()])).eval()


def mel(frames: int, seed: int = 0, batch: tuple[int, ...] = ()) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return -5 + 2 * torch.randn(*batch, 20, frames, generator=g)


def chunked(push, flush, x: torch.Tensor, sizes) -> torch.Tensor:
    """Feed x (time = last axis) through a stream in chunks of the given sizes (cycled)."""
    out, t, sizes = [], 0, list(sizes)
    while t < x.shape[-1]:
        n = sizes[len(out) % len(sizes)]
        out.append(push(x[..., t:t + n]))
        t += n
    out.append(flush())
    return torch.cat(out, -1)


def random_sizes(seed: int, high: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(1, high) for _ in range(64)]


CHUNKINGS = [[1], [3], [7, 1, 12], random_sizes(1, 9), random_sizes(2, 40)]


@pytest.mark.parametrize("downsample", [1, 2, 4, 8])
@pytest.mark.parametrize("sizes", CHUNKINGS, ids=["1", "3", "7-1-12", "random9", "random40"])
def test_causal_stream_equals_whole_clip(downsample, sizes):
    tok = tokenizer(model__causal=True, model__backbone__downsample=downsample,
                    model__quantizer__levels=[8, 8, 8, 5, 5, 5])
    x = mel(301)
    tokens = tok.encode(x)
    enc = tok.stream_encoder()
    streamed = chunked(enc.push, enc.flush, x, sizes)
    assert torch.equal(streamed, tokens)
    for refined in (True, False):
        whole = tok.decode(tokens, refined=refined)
        dec = tok.stream_decoder(refined=refined)
        frames = chunked(dec.push, dec.flush, tokens, [max(1, s // downsample) for s in sizes])
        assert frames.shape == whole.shape
        assert (frames - whole).abs().max() < 1e-5


def test_causal_stream_batched_and_independent():
    """Two streams on one model at once (each with its own state), batched input."""
    tok = tokenizer(model__causal=True, model__backbone__downsample=4)
    a, b = mel(200, seed=1, batch=(2,)), mel(150, seed=2)
    ea, eb = tok.stream_encoder(), tok.stream_encoder()
    ta, tb = [], []
    for t in range(0, 200, 5):   # interleaved pushes
        ta.append(ea.push(a[..., t:t + 5]))
        if t < 150:
            tb.append(eb.push(b[..., t:t + 5]))
    ta, tb = torch.cat(ta + [ea.flush()], -1), torch.cat(tb + [eb.flush()], -1)
    assert torch.equal(ta, tok.encode(a)) and torch.equal(tb, tok.encode(b))
    with pytest.raises(RuntimeError, match="flushed"):
        ea.push(a[..., :4])


def test_a_stream_runs_its_own_copy_with_weight_norm_folded():
    """Streams fold weight norm into plain weights on their own copy: same tokens, the same frames
    within float rounding (the copy's refiner runs channels-last), the original model untouched
    (removing a parametrization in place would break the shared generated class), and training the
    original later does not change a running stream. Streams share the copy until a weight changes."""
    from vqkit.models.streaming import inference_copy

    tok = tokenizer(model__causal=True, model__backbone__downsample=2)
    x = mel(60, seed=3)
    tokens, frames = tok.encode(x), tok.decode(tok.encode(x))
    copied = inference_copy(tok)
    folded = [m for m in copied.modules() if hasattr(m, "parametrizations")]
    assert not folded and any(hasattr(m, "parametrizations") for m in tok.modules())
    assert torch.equal(copied.encode(x), tokens) and (copied.decode(tokens) - frames).abs().max() < 1e-5
    assert torch.equal(tok.encode(x), tokens) and torch.equal(tok.decode(tokens), frames)   # original intact
    assert inference_copy(tok) is copied   # made once, then shared
    enc = tok.stream_encoder()
    first = enc.push(x[..., :30])
    with torch.no_grad():
        for p in tok.encoder.parameters():
            p.add_(1.0)
    assert torch.equal(torch.cat([first, enc.push(x[..., 30:]), enc.flush()], -1), tokens)
    fresh = inference_copy(tok)   # the weights changed in place: a new copy, with the new weights
    assert fresh is not copied and not torch.equal(fresh.encode(x), tokens)
    assert torch.equal(fresh.encode(x), tok.encode(x))


def test_one_stream_at_a_time_per_state():
    tok = tokenizer(model__causal=True)
    s1, s2 = StreamStates(tok.encoder), StreamStates(tok.encoder)
    with s1.active(), pytest.raises(RuntimeError, match="already running another stream"):
        with s2.active():
            pass


@pytest.mark.parametrize("center", [False, True])
def test_mel_frontend_stream_equals_whole_signal(center):
    fe = MelFrontend(load_config(overrides=[f"model.mel.center={str(center).lower()}"]).model.mel)
    audio = torch.randn(22050 + 777, generator=torch.Generator().manual_seed(0)) * 0.1
    whole = fe(audio)
    for sizes in ([1000], [1, 255, 4096], random_sizes(3, 900)):
        st = fe.stream()
        frames = chunked(st.push, st.flush, audio, sizes)
        assert frames.shape == whole.shape
        assert (frames - whole).abs().max() < 1e-5


def test_mel_frontend_stream_too_short_names_the_problem():
    st = MelFrontend().stream()
    st.push(torch.zeros(100))
    with pytest.raises(ValueError, match="100 samples is too short for n_fft=1024"):
        st.flush()


def test_audio_chunks_give_whole_file_tokens():
    """Audio samples in any chunking -> frontend stream -> encoder stream = encode(frontend(audio))."""
    tok = tokenizer(model__causal=True, model__backbone__downsample=4, model__mel__n_mels=20)
    audio = torch.randn(22050, generator=torch.Generator().manual_seed(4)) * 0.1
    tokens = tok.encode(tok.frontend(audio))
    for sizes in ([256], [1, 100, 1000], random_sizes(5, 2000)):
        fe, enc = tok.frontend.stream(), tok.stream_encoder()
        got = chunked(lambda a: enc.push(fe.push(a)), lambda: torch.cat([enc.push(fe.flush()), enc.flush()], -1),
                      audio, sizes)
        assert torch.equal(got, tokens)


@pytest.mark.parametrize("downsample", [1, 4])
def test_windowed_stream_of_a_non_causal_model_equals_whole_clip(downsample):
    """Window size does not change tokens: each window gets the context its tokens depend on."""
    tok = tokenizer(model__backbone__downsample=downsample)
    x = mel(1500, seed=6)
    tokens = tok.encode(x)
    for window in (64, 200):
        enc = tok.stream_encoder(window_frames=window)
        assert torch.equal(chunked(enc.push, enc.flush, x, random_sizes(window, 300)), tokens)
    whole = tok.decode(tokens)
    for window in (16, 50):
        dec = tok.stream_decoder(window_tokens=window)
        frames = chunked(dec.push, dec.flush, tokens, random_sizes(window, 80))
        assert frames.shape == whole.shape and (frames - whole).abs().max() < 1e-5


def test_whole_clip_statistics_cannot_stream():
    """A model saved before the attention window (channel attention over the whole clip) has no
    finite receptive field: streaming it is refused, saying why."""
    tok = tokenizer(model__backbone__attention_frames=None)
    with pytest.raises(UnboundedContext, match="depends on the whole clip"):
        tok.stream_encoder()
    with pytest.raises(ValueError, match="needs a window"):
        tokenizer(model__causal=True, model__backbone__attention_frames=None)


def test_long_mels_are_processed_window_by_window_with_the_same_result(monkeypatch):
    """encode/decode of a mel longer than LONG_FRAMES go through the windowed streams (bounded
    memory), batched too, and give what whole-clip processing gives."""
    import vqkit.models.tokenizer as tokenizer_module

    tok = tokenizer(model__backbone__downsample=2)
    x = mel(900, seed=8, batch=(2,))
    tokens, frames = tok.encode(x), tok.decode(tok.encode(x))
    calls = []
    real = tok._encode_clip
    monkeypatch.setattr(tok, "_encode_clip", lambda xb: calls.append(xb.shape[-1]) or real(xb))
    monkeypatch.setattr(tokenizer_module, "LONG_FRAMES", 300)
    monkeypatch.setattr(tokenizer_module, "LONG_WINDOW", 128)
    assert torch.equal(tok.encode(x), tokens)
    assert len(calls) > 3 and max(calls) < 900          # window by window, never the whole clip
    windowed = tok.decode(tokens)
    assert windowed.shape == frames.shape and (windowed - frames).abs().max() < 1e-5
