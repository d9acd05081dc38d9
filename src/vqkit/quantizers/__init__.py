from ..config import QuantizerConfig
from .base import Quantizer, QuantizerOutput, usage_stats
from .fsq import FSQ


def build_quantizer(cfg: QuantizerConfig) -> Quantizer:
    if cfg.kind == "fsq":
        return FSQ(cfg.levels)
    raise ValueError(f"unknown quantizer kind {cfg.kind!r}")


__all__ = ["FSQ", "Quantizer", "QuantizerOutput", "build_quantizer", "usage_stats"]
