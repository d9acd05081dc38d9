"""Signals <-> what a tokenizer sees. A modality whose signal needs a frontend module (audio ->
log-mel) registers its builder in FRONTENDS; images arrive from their loader already in the model's
units and have none."""
from __future__ import annotations


def _mel(model_cfg):
    from .mel import MelFrontend

    return MelFrontend(model_cfg.mel)


FRONTENDS = {"mel": _mel}   # modality -> builder from the model config


def build_frontend(model_cfg):
    """The frontend of a model config's modality, or None when its signal needs none."""
    make = FRONTENDS.get(model_cfg.modality)
    return make(model_cfg) if make is not None else None
