"""What a training run is built from, chosen by the config: batches, discriminator, perceptual loss,
and the SeQ-GAN phase-2 start (load a phase-1 tokenizer, freeze its encoder and codebook)."""
from __future__ import annotations

import torch
from safetensors.torch import load_file
from torch import nn

from ..config import Config, ConfigError
from ..io.weights import WEIGHTS_NAME, resolve_checkpoint_dir
from ..models.tokenizer import Tokenizer

FROZEN_IN_PHASE_2 = ("encoder", "quantizer")


def make_batches(cfg: Config, model: Tokenizer, items: list[torch.Tensor], batch_size: int):
    """Step-indexed global batches of `batch_size` rows (all processes' micro-batches together)."""
    t, d = cfg.train, cfg.data
    if cfg.model.modality == "image":
        from ..data.image_corpus import ImageCropBatches

        return ImageCropBatches(items, d.image_size, batch_size, t.seed, d.random_flip)
    from ..data.crops import MelCropBatches

    return MelCropBatches(items, d.segment_frames, batch_size, t.seed, model.frontend.silence_level)


def make_discriminator(cfg: Config) -> nn.Module | None:
    lc = cfg.loss
    if lc.gan == 0 and lc.feature_matching == 0:
        return None
    if cfg.discriminator.kind == "mel":
        from ..models.discriminators import MelDiscriminators

        return MelDiscriminators(cfg.model.mel.n_mels, cfg.discriminator)
    from ..models.image_discriminators import build_image_discriminator

    return build_image_discriminator(cfg.discriminator, cfg.model.image.channels)


def make_perceptual(cfg: Config) -> nn.Module | None:
    if cfg.loss.perceptual == 0:
        return None
    from ..losses.perceptual import build_perceptual

    return build_perceptual(cfg.loss)


def start_phase_2(model: Tokenizer, init_from: str | None, log) -> list[str]:
    """Load a phase-1 checkpoint into `model` and freeze encoder and quantiser. Every phase-1 weight
    must fit; only the enhanced decoder's new attention blocks may be missing from it."""
    if not init_from:
        raise ConfigError("train.init_from: phase 2 starts from a phase-1 checkpoint or run directory "
                          "(e.g. train.init_from=runs/seqgan)")
    src = resolve_checkpoint_dir(init_from)
    state = load_file(str(src / WEIGHTS_NAME))
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise ValueError(f"{src}: phase-1 weights do not fit this model: {str(e).splitlines()[-1]}") from None
    new = [k for k in missing if not k.startswith("decoder.extra_attention.")]
    if new or unexpected:
        raise ValueError(f"{src}: phase-1 weights do not fit this model (missing {new[:3]}, unexpected "
                         f"{unexpected[:3]}); phase 2 may only add decoder attention blocks")
    for name in FROZEN_IN_PHASE_2:
        getattr(model, name).requires_grad_(False)
    log(f"phase 2: started from {src}; encoder and quantizer frozen, {len(missing)} new decoder tensors")
    return list(FROZEN_IN_PHASE_2)
