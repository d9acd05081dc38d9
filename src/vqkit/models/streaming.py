"""Tokenizing and decoding signals of any length, piece by piece, equal to whole-clip results.

Every stream has the same two calls: `push(x)` returns what the input so far determines, `flush()`
ends the input and returns the rest. Memory stays bounded whatever the total length.

- Causal models (`model.causal: true`) stream for real: EncoderStream emits token j as soon as its
  last mel frame has arrived, DecoderStream emits a token's frames as soon as the token has arrived
  (every layer keeps the past it needs, nn/streaming.py).
- Other models run window by window (nn/streaming.py's WindowedRunner): each window gets the
  context its outputs depend on (the receptive field measured by models/time_context.py), so the
  output does not depend on the window size. Their latency is a window plus the future context.
"""
from __future__ import annotations

import copy
import math
import threading
import weakref
from fractions import Fraction

import torch
from torch.nn.utils import parametrize

from ..nn.streaming import StreamStates, WindowedRunner


def inference_copy(tokenizer):
    """The model streams run: a copy (so later training does not change a running stream), in eval
    mode, with weight norm folded into plain weights once instead of recomputed for every chunk (the
    same arithmetic, the same values) and the refiner's UNet in channels-last memory (other conv
    kernels: values within float rounding). Made once per tokenizer, thread and state of its weights, then
    shared: a deep copy cost ~40 ms, which was most of the time of encoding a 5 s file. Streams that
    share it keep their own states (StreamStates); each thread gets its own copy (freed with the thread)."""
    key = _weights_key(tokenizer)
    cache = _copies()
    hit = cache.get(tokenizer)
    if hit is not None and hit[0] == key:
        return hit[1]
    model = copy.deepcopy(tokenizer).eval().requires_grad_(False)
    for m in list(model.modules()):
        if parametrize.is_parametrized(m):
            # not parametrize.remove_parametrizations: it deletes the property from the generated
            # class, which the copy shares with the original model (and would break it)
            values = {name: getattr(m, name).detach().clone() for name in m.parametrizations}
            del m._modules["parametrizations"]
            m.__class__ = m.__class__.__bases__[0]
            for name, value in values.items():
                m.register_parameter(name, torch.nn.Parameter(value, requires_grad=False))
    # 2-D convolutions run faster channels-last on CPU: the refiner's 3x3 ones over 8-24 channels
    # 1.5-3x per item (and no slower per item in a batch), an image model's ~10%
    if model.spatial_dims == 2:
        model.to(memory_format=torch.channels_last)
    elif model.refiner is not None:
        model.refiner.unet.to(memory_format=torch.channels_last)
    cache[tokenizer] = (key, model)
    return model


# per thread: tokenizer -> (weights key, folded copy); entries go with their tokenizer or their thread
_THREAD = threading.local()


def _copies() -> "weakref.WeakKeyDictionary":
    if not hasattr(_THREAD, "copies"):
        _THREAD.copies = weakref.WeakKeyDictionary()
    return _THREAD.copies


def forget_inference_copies() -> None:
    """Drop this thread's copies (the next call copies again; benchmarks time the old cost)."""
    _copies().clear()


def _weights_key(tokenizer) -> tuple:
    """Changes whenever a weight or buffer does: in-place updates (an optimiser step, load_state_dict)
    bump a tensor's version, a move to another device or dtype changes its storage."""
    # the modules' own dicts, not .parameters(): its de-duplicating walk took ~2 ms a call
    return tuple((t.data_ptr(), t._version, t.dtype, t.device) for m in tokenizer.modules()
                 for d in (m._parameters, m._buffers) for t in d.values() if t is not None)


class EncoderStream:
    """Log-mel frames in (natural units, (n_mels, t) or (B, n_mels, t)), tokens out."""

    def __init__(self, tokenizer, window_frames: int = 1024):
        tokenizer = inference_copy(tokenizer)
        self.tok, self.frames, self.done = tokenizer, 0, False
        self.form = (True, 1)   # (unbatched, batch size) of the pushes: flush answers alike
        self.causal = tokenizer.config.model.causal
        if self.causal:
            self.states = StreamStates(tokenizer.encoder)
        else:
            ctx = tokenizer.time_context
            self.runner = WindowedRunner(lambda x: _time_last(tokenizer, tokenizer._encode_clip(x)),
                                         Fraction(1, ctx.downsample), ctx.encoder_past, ctx.encoder_future,
                                         ctx.align, window_frames)

    @torch.no_grad()
    def push(self, mel: torch.Tensor) -> torch.Tensor:
        _check_open(self)
        xb, single = self.tok._batched(mel, allow_empty=True)
        self.frames += xb.shape[-1]
        self.form = (single, xb.shape[0])
        tokens = self._encode_causal(xb) if self.causal else self._join(self.runner.push(xb), xb.shape[0])
        return tokens[0] if single else tokens

    def flush(self) -> torch.Tensor:
        """The remaining tokens; the last one is completed with silence, as whole-clip encoding does."""
        _check_open(self)
        single, batch = self.form
        if self.causal:
            pad = (-self.frames) % self.tok.downsample
            tokens = self._encode_causal(torch.full((batch, self.tok.norm_mean.numel(), pad),
                                                    self.tok.frontend.silence_level))
        else:
            tokens = self._join(self.runner.flush(), batch)
        self.done = True
        return tokens[0] if single else tokens

    def _encode_causal(self, xb: torch.Tensor) -> torch.Tensor:
        if xb.shape[-1] == 0:
            return self._join([], xb.shape[0])
        with self.states.active():
            z = self.tok.encoder(self.tok.normalize(xb.to(self.tok.norm_mean.device)))
        return self.tok.quantizer.indices(z)

    def _join(self, parts: list[torch.Tensor], batch: int) -> torch.Tensor:
        c = self.tok.tokens_per_position
        if not parts:
            return torch.zeros(batch, 0, *((c,) if c > 1 else ()), dtype=torch.long)
        tokens = torch.cat(parts, -1)
        return tokens.movedim(-2, -1) if c > 1 else tokens


class DecoderStream:
    """Tokens in ((t',) or (B, t'), with a trailing channel axis for multichannel tokens), log-mel
    frames out (natural units): refined, or the decoder draft with refined=False; from the first
    `stages` stages of a residual quantiser's tokens (None: all)."""

    def __init__(self, tokenizer, refined: bool = True, window_tokens: int = 256, stages: int | None = None):
        tokenizer.check_stages(stages)
        tokenizer = inference_copy(tokenizer)
        self.tok, self.done, self.stages = tokenizer, False, stages
        self.form = (True, 1)   # (unbatched, batch size) of the pushes: flush answers alike
        self.refined = refined and tokenizer.refiner is not None
        self.causal = tokenizer.config.model.causal
        if self.causal:
            self.states = StreamStates(tokenizer)
        else:
            ctx = tokenizer.time_context
            step = ctx.align // math.gcd(ctx.align, ctx.downsample)   # tokens per aligned frame block
            self.runner = WindowedRunner(lambda t: tokenizer._decode_clip(_time_back(tokenizer, t), self.refined,
                                                                          self.stages),
                                         Fraction(ctx.downsample), ctx.decoder_past, ctx.decoder_future,
                                         step, window_tokens)

    @torch.no_grad()
    def push(self, tokens: torch.Tensor) -> torch.Tensor:
        _check_open(self)
        tok = self.tok
        single = tokens.dim() == tok.token_dims
        t = (tokens.unsqueeze(0) if single else tokens).long()
        self.form = (single, t.shape[0])
        if self.causal:
            frames = self._decode_causal(t)
        else:
            frames = self._join(self.runner.push(_time_last(tok, t)), t.shape[0])
        return frames[0] if single else frames

    def flush(self) -> torch.Tensor:
        """The remaining frames (a causal decoder has none: every frame left with its token)."""
        _check_open(self)
        single, batch = self.form
        out = self._join([] if self.causal else self.runner.flush(), batch)
        out = out[0] if single else out
        self.done = True
        return out

    def _decode_causal(self, t: torch.Tensor) -> torch.Tensor:
        tok = self.tok
        if t.shape[1] == 0:
            return self._join([], t.shape[0])
        with self.states.active():
            return tok._decode_clip(t, self.refined, self.stages)

    def _join(self, parts: list[torch.Tensor], batch: int) -> torch.Tensor:
        return torch.cat(parts, -1) if parts else torch.zeros(batch, self.tok.norm_mean.numel(), 0)


def _check_open(stream) -> None:
    if stream.done:
        raise RuntimeError("this stream was flushed; start a new one")


def _time_last(tok, tokens: torch.Tensor) -> torch.Tensor:
    """Multichannel tokens (..., t, c) -> (..., c, t), so time is the last axis as windows expect."""
    return tokens.movedim(-1, -2) if tok.tokens_per_position > 1 else tokens


def _time_back(tok, tokens: torch.Tensor) -> torch.Tensor:
    return tokens.movedim(-2, -1) if tok.tokens_per_position > 1 else tokens
