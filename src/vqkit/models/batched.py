"""Many signals through a tokenizer in padded batches, each result equal to running it alone.

Mels (a model with a finite receptive field, models/time_context.py): clips sorted by length go
into batches of at most `batch_frames` padded frames. Inside a batch every clip starts at frame 0,
so all but its last outputs see exactly what they see alone; the outputs within the receptive field
of a clip's end would see the padding of the longer clips instead of the end, so they are computed
again from a short window that ends where the clip ends (the window by window rule of
nn/streaming.py's WindowedRunner). Those end windows have one length for every clip longer than
them, so they too run as batches; the longest clips of a batch (no padding) and clips shorter
than an end window need none. Images: batches of images of one size (no padding at all).

    tokens = encode_batch(tok, [mel_a, mel_b])            # list of (T'[, c]) tensors
    mels = decode_batch(tok, tokens, refined=True)        # list of (n_mels, T' * downsample)

The model runs in eval mode on a folded copy (models/streaming.py's inference_copy).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

DEFAULT_BATCH_FRAMES = 2048   # mel frames per batch: larger ran slower on CPU (bench_batch_inference.py)
DEFAULT_BATCH_IMAGES = {"cpu": 1, "cuda": 8}   # per device type: batches of images ran slower on CPU


def default_batch_images(tok) -> int:
    return DEFAULT_BATCH_IMAGES.get(tok.norm_mean.device.type, 8)


def plan_batches(sizes: Sequence[int], budget: int) -> list[list[int]]:
    """Indices grouped into batches: sorted by size, each batch at most `budget` once padded to its
    longest member (a member larger than the budget goes alone)."""
    order = sorted(range(len(sizes)), key=lambda i: (sizes[i], i))
    batches: list[list[int]] = []
    for i in order:
        if batches and sizes[i] * (len(batches[-1]) + 1) <= budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def _pad_stack(items: list[torch.Tensor], value: float) -> torch.Tensor:
    n = max(x.shape[-1] for x in items)
    return torch.stack([torch.nn.functional.pad(x, (0, n - x.shape[-1]), value=value) for x in items])


def _same_length(lengths: list[int], budget: int) -> list[list[int]]:
    """Positions grouped by equal length, each group split to stay within the budget."""
    groups: dict[int, list[int]] = {}
    for k, n in enumerate(lengths):
        groups.setdefault(n, []).append(k)
    out = []
    for n, ks in sorted(groups.items()):
        per = max(1, budget // max(1, n))
        out += [ks[j: j + per] for j in range(0, len(ks), per)]
    return out


@dataclass(frozen=True)
class Field:
    """How `fn` maps inputs (B, ..., time) to outputs along time: each input unit is `unit` steps of
    the time axis and gives `ratio` output steps; the outputs of unit u depend on units
    [u - past, u + future]; windows must start at multiples of `align` units."""
    unit: int
    ratio: int
    past: int
    future: int
    align: int


def run_batched(fn: Callable[[torch.Tensor], torch.Tensor], items: list[torch.Tensor], field: Field,
                pad_value: float, budget: int) -> list[torch.Tensor]:
    """fn of each item alone (time = last axis, a multiple of field.unit), computed in batches of at
    most `budget` padded time steps: the bodies padded together, then the ends from windows."""
    f = field
    out: list[list[torch.Tensor]] = [[] for _ in items]
    units = [x.shape[-1] // f.unit for x in items]
    plan = plan_batches([x.shape[-1] for x in items], budget)
    # the longest clips of a batch get no padding: all their outputs come from the batch
    longest = [max(units[i] for i in batch) for batch in plan]
    full = {i for batch, n in zip(plan, longest) for i in batch if units[i] == n}
    # the others' outputs before `body` are out of the padding's reach; the rest come from a window
    # from `start` (aligned, `past` units before the first output it gives) to the clip's end, where fn
    # pads exactly as it pads the whole clip. A clip whose window would start at 0 runs whole there.
    body = [n if i in full else max(0, n - f.future) for i, n in enumerate(units)]
    start = [max(0, (b - f.past) // f.align * f.align) for b in body]
    for i in range(len(items)):
        if i not in full and start[i] == 0:
            body[i] = 0
    for batch in plan:
        idx = [i for i in batch if body[i] > 0]
        y = fn(_pad_stack([items[i] for i in idx], pad_value))
        for row, i in enumerate(idx):
            out[i].append(y[row, ..., : body[i] * f.ratio])
    todo = [i for i in range(len(items)) if body[i] < units[i]]
    for batch in _same_length([units[i] - start[i] for i in todo], max(1, budget // f.unit)):
        idx = [todo[k] for k in batch]
        y = fn(torch.stack([items[i][..., start[i] * f.unit:] for i in idx]))
        for row, i in enumerate(idx):
            out[i].append(y[row, ..., (body[i] - start[i]) * f.ratio:])
    return [torch.cat(parts, -1) for parts in out]


def _check(tok, xs: Sequence[torch.Tensor], what: str) -> list[torch.Tensor]:
    if isinstance(xs, torch.Tensor):
        raise TypeError(f"expected a list of {what}, one per item (of different lengths); got one tensor "
                        f"{tuple(xs.shape)}: pass list(tensor) for a batch of equal ones")
    return list(xs)


@torch.no_grad()
def encode_batch(tok, signals: Sequence[torch.Tensor], batch_frames: int | None = None,
                 batch_images: int | None = None) -> list[torch.Tensor]:
    """Signals (mels (n_mels, T) or images (C, H, W), natural units) -> each one's tokens, equal to
    `tok.encode(signal)`, computed in batches of at most `batch_frames` padded frames (mels) or
    `batch_images` images of one size (None: DEFAULT_BATCH_FRAMES, default_batch_images)."""
    from .streaming import _time_back, _time_last, inference_copy

    signals = _check(tok, signals, "signals")
    checked = []
    for k, s in enumerate(signals):
        try:
            x, single = tok._batched(s)
        except ValueError as e:
            raise ValueError(f"item {k}: {e}") from None
        if not single:
            raise ValueError(f"item {k}: expected one signal {tok.config.model.input_shape_text()}, "
                             f"got {tuple(s.shape)}")
        checked.append(tok.pad_to_multiple(x)[0])
    if not checked:
        return []
    model = inference_copy(tok)
    if tok.spatial_dims == 2:
        return same_size(checked, batch_images or default_batch_images(tok), model._encode_clip)
    if not tok.bounded or any(tok._long(x.shape[-1]) for x in checked):
        return [tok.encode(x) for x in checked]   # whole-clip models and very long clips go alone
    ctx, d = tok.time_context, tok.downsample
    # token j reads frames [d*j - past, d*j + d - 1 + future]: ceil(past / d) tokens before, ceil(future / d) after
    field = Field(unit=d, ratio=1, past=-(-ctx.encoder_past // d), future=-(-ctx.encoder_future // d),
                  align=max(1, ctx.align // d))
    tokens = run_batched(lambda x: _time_last(model, model._encode_clip(x)), checked, field,
                         model.frontend.silence_level, batch_frames or DEFAULT_BATCH_FRAMES)
    return [_time_back(tok, t) for t in tokens]


@torch.no_grad()
def decode_batch(tok, tokens: Sequence[torch.Tensor], refined: bool = True, stages: int | None = None,
                 batch_frames: int | None = None, batch_images: int | None = None,
                 with_draft: bool = False) -> list:
    """Each one's tokens -> its signal, equal to `tok.decode(tokens, refined, stages)`, in batches of
    at most `batch_frames` output frames (mels) or `batch_images` token grids of one size.
    with_draft: each item is (signal, draft), both from one decoder pass (evaluation scores both)."""
    from .streaming import _time_back, _time_last, inference_copy

    tokens = _check(tok, tokens, "token arrays")
    tok.check_stages(stages)
    for k, t in enumerate(tokens):
        try:
            tok.check_token_shape(t, batched=False)
        except ValueError as e:
            raise ValueError(f"item {k}: {e}") from None
        if 0 in t.shape:
            raise ValueError(f"item {k}: no tokens (shape {tuple(t.shape)})")
    if not tokens:
        return []
    model = inference_copy(tok)
    use_refiner = refined and model.refiner is not None
    if tok.spatial_dims == 2:
        out = same_size([t.long() for t in tokens], batch_images or default_batch_images(tok),
                        lambda t: model._decode_clip(t, use_refiner, stages, with_draft))
    elif not tok.bounded or any(tok._long(t.shape[0] * tok.downsample) for t in tokens):
        out = [tok.decode(t, refined, stages) for t in tokens]   # whole-clip models and very long clips go alone
        if with_draft:
            out = [torch.stack([y, tok.decode(t, False, stages)]) for y, t in zip(out, tokens)]
    else:
        ctx, d = tok.time_context, tok.downsample
        field = Field(unit=1, ratio=d, past=ctx.decoder_past, future=ctx.decoder_future,
                      align=ctx.align // math.gcd(ctx.align, d))
        out = run_batched(lambda t: model._decode_clip(_time_back(tok, t), use_refiner, stages, with_draft),
                          [_time_last(tok, t.long()) for t in tokens], field, 0,
                          max(1, (batch_frames or DEFAULT_BATCH_FRAMES) // d))
    return [(y[0], y[1]) for y in out] if with_draft else out


def same_size(items: list[torch.Tensor], per: int, fn) -> list:
    """Items of one shape stacked, `per` at most in a batch (images, image token grids); each result
    is fn's output row for that item (fn may return a tuple of tensors, or of None)."""
    out: list = [None] * len(items)
    groups: dict[tuple, list[int]] = {}
    for i, x in enumerate(items):
        groups.setdefault(tuple(x.shape), []).append(i)
    for idx in groups.values():
        for j in range(0, len(idx), per):
            part = idx[j: j + per]
            y = fn(torch.stack([items[i] for i in part]))
            for row, i in enumerate(part):
                out[i] = (tuple(None if v is None else v[row] for v in y) if isinstance(y, tuple) else y[row])
    return out
