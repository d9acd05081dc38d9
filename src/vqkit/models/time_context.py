"""How far along time a mel tokenizer looks, measured on the model itself.

The receptive field is probed, not typed in: the gradient of one output position with respect to
the input is nonzero exactly on the input frames that position depends on (LeakyReLU, sigmoid
gates and weight-normed convolutions have no exactly-zero slopes; the probe uses random inputs in
float32 and a random weighting of the output channels). So a new backbone gets its
windows and latency right without declaring anything, and a module that looks at the whole clip
(a clip-wide mean, GroupNorm over the clip) shows up as an unbounded field.

Units: the encoder maps mel frames to tokens (`downsample` frames per token), the decoder and the
refiner map tokens back to frames.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch

MAX_PROBE_FRAMES = 16384   # a field wider than half of this (~95 s at 86 frames/s) counts as unbounded


class UnboundedContext(ValueError):
    """The model looks at the whole clip (no finite receptive field)."""


@dataclass(frozen=True)
class TimeContext:
    downsample: int        # mel frames per token
    align: int             # window starts must be multiples of this many frames (strides, refiner pooling)
    encoder_past: int      # mel frames before a token's first frame that the token depends on
    encoder_future: int    # mel frames after a token's last frame that it depends on
    decoder_past: int      # tokens before an output frame's own token that the frame depends on
    decoder_future: int    # tokens after it

    @property
    def lookahead_frames(self) -> int:
        """Mel frames after frame t that reconstructed frame t depends on (0 for a frame-rate causal model)."""
        return self.downsample * self.decoder_future + self.downsample - 1 + self.encoder_future

    @property
    def causal(self) -> bool:
        return self.encoder_future == 0 and self.decoder_future == 0


def _dependency(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, outputs: slice) -> tuple[int, int]:
    """(first, last) input frame that fn(x)[..., outputs] depends on."""
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        y = fn(x)[..., outputs]
        w = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
        (grad,) = torch.autograd.grad((y * w).sum(), x)
    used = (grad.abs().sum(dim=tuple(range(grad.dim() - 1))) > 0).nonzero().flatten()
    return int(used.min()), int(used.max())


def _probe(run: Callable[[int], tuple[int, int, int, int]], units: int = 8) -> tuple[int, int, int, int]:
    """run(units) -> (first, last, input length, probed position): doubles the probe input until
    the dependency no longer reaches its ends. Returns (first, last, position, units)."""
    while units * 8 <= MAX_PROBE_FRAMES:
        lo, hi, n, pos = run(units)
        if lo > 0 and hi < n - 1:
            return lo, hi, pos, units
        units *= 2
    raise UnboundedContext("the model's output depends on the whole clip (receptive field wider than "
                           f"{MAX_PROBE_FRAMES // 2} frames): it cannot stream or work window by window")


def probe_time_context(tokenizer) -> TimeContext:
    """Measure a mel tokenizer's receptive field (on a float32 copy in eval mode: gradients at the
    field's edge are tiny but far from float32's underflow, and the probe of a causal 21.5 tokens/s
    model peaks ~300 MB lower than in double, which matters when a one-hour file is encoded)."""
    if tokenizer.frontend is None:
        raise ValueError("time context applies to tokenizers of a time signal (mels)")
    model = copy.deepcopy(tokenizer).float().eval()
    d = model.downsample
    pool = 2 ** (len(model.refiner.unet.down) - 1) if model.refiner is not None else 1
    align = d * pool // math.gcd(d, pool)
    g = torch.Generator().manual_seed(0)
    n_mels, qdim = model.norm_mean.numel(), model.quantizer.dim

    def encoder(units: int) -> tuple[int, int, int, int]:
        frames = units * align
        j = frames // d // 2
        x = torch.randn(1, n_mels, frames, generator=g, dtype=torch.float32)
        return (*_dependency(model.encoder, x, slice(j, j + 1)), frames, j)

    def decode(z: torch.Tensor) -> torch.Tensor:   # without the refiner's stop-gradient
        draft, hidden = model.decoder(z)
        return draft + model.refiner.residual(draft, hidden) if model.refiner is not None else draft

    def decoder(units: int, phase: int) -> tuple[int, int, int, int]:
        tokens = units * align
        t = tokens * d // 2 // align * align + phase     # an output frame at a given pooling phase
        z = torch.rand(1, qdim, tokens, generator=g, dtype=torch.float32) * 2 - 1
        return (*_dependency(decode, z, slice(t, t + 1)), tokens, t)

    lo, hi, j, _ = _probe(encoder)
    past = future = 0
    units = 8
    for phase in range(align):   # each pooling phase of the refiner sees a slightly different field
        a, b, t, units = _probe(lambda n: decoder(n, phase), units)
        past, future = max(past, t // d - a), max(future, b - t // d)
    return TimeContext(downsample=d, align=align, encoder_past=d * j - lo, encoder_future=hi - (d * j + d - 1),
                       decoder_past=past, decoder_future=future)


def time_facts(tok) -> dict:
    """Streaming and latency facts of a mel tokenizer, measured on the model (models/time_context.py)."""
    try:
        ctx = tok.time_context
    except UnboundedContext:
        return {"causal": False, "streaming": "none: the model looks at the whole clip (saved before vqkit 0.2); "
                                              "long files go in one pass"}
    hop_ms = 1000 * tok.config.model.mel.hop_length / tok.config.model.mel.sample_rate
    facts = {"causal": ctx.causal,
             "streaming": "chunk by chunk" if tok.config.model.causal else "window by window",
             "latency_ms": round(tok.latency_ms, 1), "lookahead_frames": ctx.lookahead_frames,
             "receptive_field_ms": {"encoder": [round(ctx.encoder_past * hop_ms), round(ctx.encoder_future * hop_ms)],
                                    "decoder": [round(ctx.decoder_past * ctx.downsample * hop_ms),
                                                round(ctx.decoder_future * ctx.downsample * hop_ms)]}}
    if not tok.config.model.causal:
        facts["latency_note"] = "algorithmic, with the future context; streaming window by window adds a window"
    return facts
