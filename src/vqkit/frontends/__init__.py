"""Signals <-> what a tokenizer sees. A modality with a frontend module (audio -> log-mel) names it
here; images arrive from their loader already in the model's units and need none."""
from __future__ import annotations


def build_frontend(model_cfg):
    """The frontend of a model config's modality, or None when its signal needs none."""
    if hasattr(model_cfg, "mel"):   # a mel model: audio <-> log-mel with its settings
        from .mel import MelFrontend

        return MelFrontend(model_cfg.mel)
    return None
