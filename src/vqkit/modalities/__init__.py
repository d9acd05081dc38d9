"""Modalities: mel (audio) and image. `modality_of(x)` gives the one a config, a model config, a
tokenizer or a name stands for; the rest of the code asks it (modalities/base.py)."""
from __future__ import annotations

from .base import Modality
from .image import ImageModality
from .mel import MelModality

MODALITIES: dict[str, Modality] = {"mel": MelModality(), "image": ImageModality()}


def modality_of(x) -> Modality:
    """x: a Config, a model config, a Tokenizer, or a modality's name."""
    name = x if isinstance(x, str) else getattr(getattr(x, "model", x), "modality", None)
    if name not in MODALITIES:
        raise ValueError(f"unknown modality {name!r}; available: {', '.join(MODALITIES)}")
    return MODALITIES[name]


__all__ = ["MODALITIES", "Modality", "modality_of"]
