"""Chunk-by-chunk execution of models over time, with ONE forward for whole clips and streams.

Layers that look into the past get it through two small primitives:
- `Past(span, stride)`: what a window of `span` frames moving by `stride` needs before the current
  input. For a whole clip that is zeros (left padding); while streaming it is the frames kept
  from earlier calls, and the input is trimmed to whole windows (the rest waits for the next call).
- `Held(lag)`: emits exactly the number of frames asked for from [held frames ; input], starting
  with `lag` zero frames; what is not emitted is held for the next call (a delayed upsampler).

Zeros at the start of a stream are exactly the zero padding of a whole clip, so a causal model run
chunk by chunk computes the same numbers as on the whole clip, for any chunking.

`StreamStates(model)` is one stream's state: inside `with states.active():` every primitive of the
model reads and writes its own entry; outside, the model computes whole clips. Several streams can
share one model, each with its own StreamStates.

`WindowedRunner` streams any function with a finite receptive field (non-causal models, vocoders)
window by window, each window with the context its outputs need.
"""
from __future__ import annotations

import contextlib
import math
from fractions import Fraction
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class Streamable(nn.Module):
    """A module with state along time while streaming: `self.stream` is its state dict then."""

    def __init__(self):
        super().__init__()
        self.stream: dict | None = None


class Past(Streamable):
    def __init__(self, span: int, stride: int = 1):
        super().__init__()
        if span < stride or stride < 1:
            raise ValueError(f"a window of {span} frames cannot move by {stride}")
        self.span, self.stride = span, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = self.span - self.stride
        if self.stream is None:
            return F.pad(x, (lead, 0)) if lead else x
        kept = self.stream.get("kept")
        if kept is None:
            kept = x.new_zeros(*x.shape[:-1], lead)
        buf = torch.cat([kept, x], -1)
        n = max(0, (buf.shape[-1] - self.span) // self.stride + 1)
        self.stream["kept"] = buf[..., n * self.stride:]
        return buf[..., : (n - 1) * self.stride + self.span] if n else buf[..., :0]


class Held(Streamable):
    def __init__(self, lag: int):
        super().__init__()
        self.lag = lag

    def forward(self, x: torch.Tensor, size: int) -> torch.Tensor:
        held = self.stream.get("held") if self.stream is not None else None
        if held is None:
            held = x.new_zeros(*x.shape[:-1], self.lag)
        y = torch.cat([held, x], -1)
        if y.shape[-1] < size:
            raise RuntimeError(f"delayed upsampling has {y.shape[-1]} frames, {size} were asked for")
        if self.stream is not None:
            self.stream["held"] = y[..., size:]
        return y[..., :size]


def windows(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, span: int) -> torch.Tensor:
    """fn over x's time windows of `span` frames; no frames (a stream chunk too short to complete a
    window) gives an empty output of the right shape."""
    if x.shape[-1] >= span:
        return fn(x)
    return fn(x.new_zeros(*x.shape[:-1], span))[..., :0]


class StreamStates:
    """The state of one stream through `module` (every Streamable inside it)."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.states: dict[nn.Module, dict] = {}
        self.parts = [m for m in module.modules() if isinstance(m, Streamable)]   # walked once, not per chunk

    @contextlib.contextmanager
    def active(self):
        parts = self.parts
        for m in parts:
            if m.stream is not None:
                raise RuntimeError("this model is already running another stream in this thread")
        # `stream` is a plain attribute (never a tensor or module), so nn.Module.__setattr__'s
        # bookkeeping is skipped: it ran ~100 times per chunk
        for m in parts:
            object.__setattr__(m, "stream", self.states.setdefault(m, {}))
        try:
            yield self
        finally:
            for m in parts:
                object.__setattr__(m, "stream", None)


def _ceil_to(n: int, k: int) -> int:
    return -(-n // k) * k


class WindowedRunner:
    """fn over a long input (time = last axis) window by window, equal to fn on the whole input.

    fn maps n input frames to about n * ratio output frames; each output depends on at most `past`
    input frames before and `future` after its own; windows start at multiples of `align` frames
    (strides and pooling keep their phase). The last window ends where the input ends, so fn pads
    the end exactly as it would pad the whole input.
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], ratio: Fraction, past: int, future: int,
                 align: int, window: int):
        self.fn, self.ratio, self.align = fn, Fraction(ratio), align
        self.past, self.future = _ceil_to(past, align), _ceil_to(future, align)
        self.window = max(align, _ceil_to(window, align))
        self.buf: torch.Tensor | None = None
        self.offset = 0     # input frame index of buf[..., 0]
        self.next = 0       # first input frame whose output has not been returned
        self.total = 0
        self.done = False

    def push(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.done:
            raise RuntimeError("this stream was flushed; start a new one")
        self.buf = x if self.buf is None else torch.cat([self.buf, x], -1)
        self.total += x.shape[-1]
        outs = []
        while self.total - self.next >= self.window + self.future:
            outs.append(self._run(self.next, self.next + self.window, final=False))
            self.next += self.window
            keep = max(0, self.next - self.past)
            self.buf, self.offset = self.buf[..., keep - self.offset:], keep
        return outs

    def flush(self) -> list[torch.Tensor]:
        if self.done:
            raise RuntimeError("this stream was flushed already")
        self.done = True
        return [self._run(self.next, self.total, final=True)] if self.total > self.next else []

    def _run(self, a: int, b: int, final: bool) -> torch.Tensor:
        start = max(0, a - self.past)
        end = self.total if final else b + self.future
        y = self.fn(self.buf[..., start - self.offset: end - self.offset])
        lo = (a - start) * self.ratio
        hi = math.ceil((b - start) * self.ratio)
        return y[..., int(lo): hi]
