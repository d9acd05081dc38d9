from ..config import QuantizerConfig
from .base import Quantizer, QuantizerOutput, usage_stats
from .fsq import FSQ
from .vq import VectorQuantizer


def build_quantizer(cfg: QuantizerConfig) -> Quantizer:
    if cfg.kind == "fsq":
        return FSQ(cfg.levels)
    if cfg.kind == "vq":
        return VectorQuantizer(cfg)
    raise ValueError(f"unknown quantizer kind {cfg.kind!r}")


__all__ = ["FSQ", "Quantizer", "QuantizerOutput", "VectorQuantizer", "build_quantizer", "usage_stats"]
