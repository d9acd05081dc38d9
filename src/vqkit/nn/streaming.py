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
"""
from __future__ import annotations

import contextlib
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

    @contextlib.contextmanager
    def active(self):
        parts = [m for m in self.module.modules() if isinstance(m, Streamable)]
        for m in parts:
            if m.stream is not None:
                raise RuntimeError("this model is already running another stream in this thread")
            m.stream = self.states.setdefault(m, {})
        try:
            yield self
        finally:
            for m in parts:
                m.stream = None
