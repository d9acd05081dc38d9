"""Quantisers: one module each, built from their own config by kind (config.schema's tagged union)."""
from ..config import FSQConfig, QuantizerConfig, VQConfig
from .base import Quantizer, QuantizerOutput, usage_stats
from .fsq import FSQ
from .simvq import SimVQ
from .vq import VectorQuantizer

# kind -> builder from that kind's own config
REGISTRY = {
    "fsq": lambda cfg: FSQ(cfg.levels),
    "vq": VectorQuantizer,
    "simvq": SimVQ,
}


def build_quantizer(cfg: QuantizerConfig) -> Quantizer:
    if cfg.kind not in REGISTRY:
        raise ValueError(f"unknown quantizer kind {cfg.kind!r}; available: {', '.join(REGISTRY)}")
    return REGISTRY[cfg.kind](cfg)


__all__ = ["FSQ", "FSQConfig", "Quantizer", "QuantizerOutput", "REGISTRY", "SimVQ", "VQConfig", "VectorQuantizer",
           "build_quantizer", "usage_stats"]
