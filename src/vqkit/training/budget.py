"""The memory a training config needs, estimated before any data is loaded, so that a size that
cannot fit (`model.quantizer.levels=[100000,100000,100000]`, `data.segment_frames=100000000`) is
refused at once, naming its key, instead of after minutes of loading with the allocator's text.

The estimate is a lower bound (what training cannot do without), so it never refuses a config that
fits: the parameters of the models built on the meta device (no memory), each with its gradient and
two Adam moments; the codebook usage histogram; one batch with one hidden layer at the widest
backbone width and its gradient.
"""
from __future__ import annotations

import torch

from ..io.memory import refuse_if_over
from ..modalities import modality_of

BYTES = 4   # float32


def _params(module) -> int:
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


def training_needs(cfg) -> list[tuple[str, float, str]]:
    """(config key, bytes, what) parts of the lower bound for training `cfg`."""
    from ..models.tokenizer import Tokenizer
    from .components import make_discriminator

    with torch.device("meta"):
        model = Tokenizer(cfg)
        disc = make_discriminator(cfg)
    m, t = cfg.model, cfg.train
    per_param = BYTES * (4 + (t.ema_decay > 0))   # weights, gradient, 2 Adam moments (+ EMA copy)
    # the key that sets the codebook's size: FSQ-style levels, a codebook size, or LFQ's bits
    q_key = "model.quantizer." + next(k for k in ("levels", "codebook_size", "dim") if hasattr(m.quantizer, k))
    parts = [("model.backbone.channels", (_params(model.encoder) + _params(model.decoder)) * per_param,
              "encoder and decoder training state"),
             ("model.refiner", _params(model.refiner) * per_param, "refiner training state"),
             ("discriminator", _params(disc) * per_param, "discriminator training state"),
             (q_key, _params(model.quantizer) * per_param + model.codebook_size * 8,
              f"codebook and its usage histogram ({model.codebook_size:.3g} codes)")]
    key, value, positions = modality_of(cfg).batch_size_key(cfg)
    in_channels = m.input_channels
    width = max(m.backbone.channels)
    parts.append((key, t.batch_size * positions * (in_channels + 2 * width) * BYTES,
                  f"one batch, train.batch_size={t.batch_size} x {key}={value:,}"))
    return parts


def check_training_memory(cfg) -> None:
    """Refuse (MemoryBudgetError naming the key) a config whose training cannot fit this machine."""
    refuse_if_over(training_needs(cfg), "training this config")
