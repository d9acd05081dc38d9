"""Quantisers: one module each, built from their own config by kind (config.schema's tagged union)."""
from ..config import FSQConfig, QuantizerConfig, VQConfig
from .base import Quantizer, QuantizerOutput, usage_stats
from .fsq import FSQ
from .lfq import BSQ, LFQ
from .rfsq import ResidualFSQ
from .simvq import SimVQ
from .vq import VectorQuantizer

# kind -> builder from that kind's own config
REGISTRY = {
    "fsq": lambda cfg: FSQ(cfg.levels),
    "vq": VectorQuantizer,
    "lfq": LFQ,
    "bsq": BSQ,
    "rfsq": ResidualFSQ.from_config,
    "simvq": SimVQ,
}


def build_quantizer(cfg: QuantizerConfig) -> Quantizer:
    if cfg.kind not in REGISTRY:
        raise ValueError(f"unknown quantizer kind {cfg.kind!r}; available: {', '.join(REGISTRY)}")
    return REGISTRY[cfg.kind](cfg)


__all__ = ["BSQ", "FSQ", "FSQConfig", "LFQ", "Quantizer", "QuantizerOutput", "REGISTRY", "ResidualFSQ", "SimVQ",
           "VQConfig", "VectorQuantizer", "build_quantizer", "usage_stats"]
