"""Typed configuration of a token prior model (GPT or MaskGIT over tokenizer indices).

Same style as schema.py: a plain dataclass with working defaults, loaded strictly by
`vqkit.config.from_dict(PriorModelConfig, data)`, and `validate()` naming the offending key.
"""
from __future__ import annotations

from dataclasses import dataclass

from .schema import ConfigError

PRIOR_KINDS = ("gpt", "maskgit")


@dataclass
class PriorModelConfig:
    """gpt: causal transformer, one position per step (KV cache). maskgit: bidirectional transformer,
    parallel decoding in a fixed number of steps."""
    kind: str = "gpt"
    dim: int = 256
    depth: int = 6
    heads: int = 4
    mlp_hidden: int | None = None     # None: SwiGLU default, about 8/3 * dim (see priors.transformer)
    dropout: float = 0.0
    num_classes: int = 0              # > 0: class-conditional; label `num_classes` is the null class (CFG)
    rope_base: float = 10000.0
    maskgit_steps: int = 8            # forward passes per sample at generation
    maskgit_temperature: float = 4.5  # initial Gumbel temperature on confidences, annealed linearly to 0

    def validate(self) -> "PriorModelConfig":
        _check(self.kind in PRIOR_KINDS, "kind", f"unknown prior {self.kind!r}; available: {', '.join(PRIOR_KINDS)}")
        _check(self.dim >= 1, "dim", "must be >= 1")
        _check(self.heads >= 1, "heads", "must be >= 1")
        _check(self.dim % self.heads == 0, "dim", f"{self.dim} is not divisible by heads={self.heads}")
        _check((self.dim // self.heads) % 2 == 0, "heads",
               f"head width dim / heads = {self.dim // self.heads} must be even for rotary embeddings")
        _check(self.depth >= 1, "depth", "must be >= 1")
        _check(self.mlp_hidden is None or self.mlp_hidden >= 1, "mlp_hidden", "must be >= 1 or null")
        _check(0 <= self.dropout < 1, "dropout", "must be in [0, 1)")
        _check(self.num_classes >= 0, "num_classes", "must be >= 0 (0 = unconditional)")
        _check(self.rope_base > 1, "rope_base", "must be > 1")
        _check(self.maskgit_steps >= 1, "maskgit_steps", "must be >= 1")
        _check(self.maskgit_temperature >= 0, "maskgit_temperature", "must be >= 0")
        return self


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"prior.model.{key}: {message}")
