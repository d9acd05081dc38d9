"""What a training run is built from, chosen by the config: batches, discriminator, perceptual loss,
and the start from a trained tokenizer (train.init_from: fine-tuning, or SeQ-GAN phase 2, which
also freezes encoder and codebook)."""
from __future__ import annotations

import torch
from torch import nn

from ..config import Config, ConfigError, TrainConfig
from ..io.weights import CONFIG_NAME, WEIGHTS_NAME, load_matching, read_weights, resolve_checkpoint_dir, upgraded
from ..modalities import modality_of
from ..models.tokenizer import Tokenizer

FROZEN_IN_PHASE_2 = ("encoder", "quantizer")
NEW_IN_PHASE_2 = "decoder.extra_attention."   # the enhanced decoder's blocks, absent from phase 1


def make_batches(cfg: Config, model: Tokenizer, items: list[torch.Tensor], batch_size: int):
    """Step-indexed global batches of `batch_size` rows (all processes' micro-batches together)."""
    return modality_of(cfg).batches(cfg, model, items, batch_size)


def make_discriminator(cfg: Config) -> nn.Module | None:
    lc = cfg.loss
    if lc.gan == 0 and lc.feature_matching == 0:
        return None
    return modality_of(cfg).discriminator(cfg)


def make_perceptual(cfg: Config) -> nn.Module | None:
    if getattr(cfg.loss, "perceptual", 0) == 0:   # mel losses have none
        return None
    from ..losses.perceptual import build_perceptual

    return build_perceptual(cfg.loss)


def start_from(model: Tokenizer, train: TrainConfig, log) -> list[str]:
    """train.init_from: load a trained tokenizer's weights into `model`: weights only (optimisers,
    discriminators and the step start fresh; mels keep the checkpoint's normalisation, which its
    weights expect). Phase 2 (SeQ-GAN) then freezes encoder and quantiser, and only its enhanced
    decoder's new attention blocks may be missing from the checkpoint. Returns the frozen modules."""
    if train.phase == 2 and not train.init_from:
        raise ConfigError("train.init_from: phase 2 starts from a phase-1 checkpoint or run directory "
                          "(e.g. train.init_from=runs/seqgan)")
    if not train.init_from:
        return []
    try:
        src = resolve_checkpoint_dir(train.init_from)
    except FileNotFoundError as e:
        raise ConfigError(f"train.init_from: {e}") from None
    state = upgraded(model, read_weights(src / WEIGHTS_NAME))   # refuses (and names) pickles: nothing is unpickled
    own = model.state_dict()
    new = [k for k in own if k.startswith(NEW_IN_PHASE_2) and k not in state] if train.phase == 2 else []
    try:
        load_matching(model, {**{k: own[k] for k in new}, **state}, f"train.init_from={src}")
    except ValueError as e:
        raise ValueError(f"{e} (train.init_from loads weights only: this run's model.* settings must build "
                         f"the model described by {src / CONFIG_NAME})") from None
    if train.phase == 1:
        log(f"initialised from {src}: weights only (fresh optimisers and discriminators, step 0)")
        return []
    for name in FROZEN_IN_PHASE_2:
        getattr(model, name).requires_grad_(False)
    log(f"phase 2: started from {src}; encoder and quantizer frozen, {len(new)} new decoder tensors")
    return list(FROZEN_IN_PHASE_2)
