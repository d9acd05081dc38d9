"""Typed configuration of a token prior run: the model (GPT or MaskGIT over tokenizer indices), its
data crop, optimiser, sampling defaults, and the shared TrainConfig.

Same style as schema.py: plain dataclasses with working defaults, loaded strictly by
`vqkit.config.load_config(preset, path, overrides, schema=PriorConfig)` (presets in
presets/priors/), and `validate()` naming the offending key.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .checks import check
from .schema import TrainConfig

@dataclass
class _PriorModel:
    """What both priors share (not a kind itself)."""
    kind: str = ""
    dim: int = 256
    depth: int = 6
    heads: int = 4
    mlp_hidden: int | None = None     # None: SwiGLU default, about 8/3 * dim (nn.transformer.swiglu_hidden)
    dropout: float = 0.0
    num_classes: int = 0              # > 0: class-conditional; label `num_classes` is the null class (CFG)
    rope_base: float = 10000.0

    def validate(self):
        check(self.dim >= 1, "model.dim", "must be >= 1")
        check(self.heads >= 1, "model.heads", "must be >= 1")
        check(self.dim % self.heads == 0, "model.dim", f"{self.dim} is not divisible by heads={self.heads}")
        check((self.dim // self.heads) % 2 == 0, "model.heads",
              f"head width dim / heads = {self.dim // self.heads} must be even for rotary embeddings")
        check(self.depth >= 1, "model.depth", "must be >= 1")
        check(self.mlp_hidden is None or self.mlp_hidden >= 1, "model.mlp_hidden", "must be >= 1 or null")
        check(0 <= self.dropout < 1, "model.dropout", "must be in [0, 1)")
        check(self.num_classes >= 0, "model.num_classes", "must be >= 0 (0 = unconditional)")
        check(self.rope_base > 1, "model.rope_base", "must be > 1")
        return self


@dataclass
class GPTConfig(_PriorModel):
    """Causal transformer, one position per step (KV cache)."""
    kind: str = "gpt"


@dataclass
class MaskGITConfig(_PriorModel):
    """Bidirectional transformer, parallel decoding in a fixed number of steps."""
    kind: str = "maskgit"
    maskgit_steps: int = 8            # forward passes per sample at generation
    maskgit_temperature: float = 4.5  # initial Gumbel temperature on confidences, annealed linearly to 0

    def validate(self):
        super().validate()
        check(self.maskgit_steps >= 1, "model.maskgit_steps", "must be >= 1")
        check(self.maskgit_temperature >= 0, "model.maskgit_temperature", "must be >= 0")
        return self


# Tagged by kind (config/io.py): a GPT has no maskgit_* keys.
PriorModelConfig = GPTConfig | MaskGITConfig


@dataclass
class PriorDataConfig:
    crop: list[int] = field(default_factory=lambda: [128])  # mel: [positions]; image: [h, w] token grid
    class_folders: bool = False     # label = top-level sub-folder of each token file (class-conditional)
    valid_fraction: float = 0.05    # held out by file-name hash when no --valid-tokens is given
    num_workers: int = 0

    def validate(self) -> None:
        check(len(self.crop) in (1, 2) and all(c >= 1 for c in self.crop), "data.crop",
               "must be [positions] (mel) or [h, w] (image), each >= 1")
        check(0 <= self.valid_fraction < 1, "data.valid_fraction", "must be in [0, 1)")
        check(self.num_workers >= 0, "data.num_workers", "must be >= 0")


@dataclass
class PriorOptimConfig:
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float = 1.0          # 0 disables

    def validate(self) -> None:
        check(self.lr > 0, "optim.lr", "must be > 0")
        check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "optim.betas",
               "must be two numbers in [0, 1)")
        check(self.warmup_steps >= 0 and self.grad_clip >= 0 and self.weight_decay >= 0, "optim",
               "warmup_steps, grad_clip and weight_decay must be >= 0")


@dataclass
class SampleConfig:
    """Defaults of `vqkit sample` (each can be given on its command line too)."""
    temperature: float = 1.0
    top_k: int = 0                  # 0 = off
    top_p: float = 1.0              # 1 = off

    def validate(self) -> None:
        check(self.temperature > 0, "sample.temperature", "must be > 0")
        check(self.top_k >= 0, "sample.top_k", "must be >= 0 (0 = off)")
        check(0 < self.top_p <= 1, "sample.top_p", "must be in (0, 1]")


@dataclass
class PriorConfig:
    name: str = "prior-gpt"
    model: PriorModelConfig = field(default_factory=GPTConfig)
    data: PriorDataConfig = field(default_factory=PriorDataConfig)
    optim: PriorOptimConfig = field(default_factory=PriorOptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def validate(self) -> "PriorConfig":
        self.model.validate(); self.data.validate(); self.optim.validate(); self.train.validate()
        self.sample.validate()
        check(self.train.phase == 1 and self.train.init_from is None, "train.phase",
               "phase 2 / init_from apply to tokenizers only")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
