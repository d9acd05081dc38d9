"""Token priors: generative models over tokenizer indices (GPT-style autoregressive and MaskGIT),
and the token datasets they train on."""
from __future__ import annotations

import torch.nn as nn

from ..config.prior_schema import PriorModelConfig
from .gpt import GPTPrior
from .maskgit import MaskGITPrior, masked_counts


def build_prior(cfg: PriorModelConfig, codebook_size: int, channels: int, max_len: int) -> nn.Module:
    """The prior `cfg.kind` names, for sequences of up to max_len positions of `channels` indices in
    [0, codebook_size)."""
    cfg.validate()
    kinds = {"gpt": GPTPrior, "maskgit": MaskGITPrior}
    return kinds[cfg.kind](cfg, codebook_size, channels, max_len)


__all__ = ["GPTPrior", "MaskGITPrior", "PriorModelConfig", "build_prior", "masked_counts"]
