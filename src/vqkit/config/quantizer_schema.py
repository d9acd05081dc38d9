"""Quantiser configs: one dataclass per kind, tagged by `kind` (config/io.py builds the one a block
names, so other kinds' keys are refused by construction). A new quantiser adds its dataclass here,
to QuantizerConfig, and one line to quantizers.REGISTRY."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from .checks import check


@dataclass
class FSQConfig:
    """Finite scalar quantisation: one integer per latent dimension, codes = product of the levels."""
    kind: str = "fsq"
    levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])  # 1000 codes

    tokens_per_position = 1

    def describe(self) -> str:
        return f"fsq levels {self.levels} = {math.prod(self.levels)} codes"

    def validate(self) -> None:
        check(len(self.levels) >= 1 and all(lv >= 2 for lv in self.levels),
               "model.quantizer.levels", "every level must be >= 2")


# How z_q's gradient passes the nearest-code lookup (quantizers/estimators.py). One key, not a
# switch per estimator: they are alternatives, so two of them cannot be asked for at once.
GRADIENTS = ("straight_through", "rotation", "index_backprop")


@dataclass
class _Codebook:
    """What the codebook kinds share (not a kind itself): a learned (or transformed) codebook of
    `codebook_size` codes, looked up by nearest distance in chunks."""
    kind: str = ""
    codebook_size: int = 1024
    dim: int = 64                   # latent width of one code (per channel chunk)
    beta: float = 0.25              # commitment loss weight
    channels: int = 1               # MoVQ multichannel, c chunks per latent sharing ONE codebook
    distance_chunk: int = 4096      # latents per chunk when computing distances (bounds memory)
    gradient: str = "straight_through"  # or "rotation", "index_backprop" (see GRADIENTS)
    restart_dead_codes: bool = False  # re-seed unused codes from recent encoder outputs
    dead_code_threshold: float = 0.1  # a code is dead when its EMA assignment count per step falls below this
    usage_decay: float = 0.99         # EMA decay of per-code assignment counts

    @property
    def tokens_per_position(self) -> int:
        return self.channels

    def check_codebook(self, code_dim: int) -> None:
        """The keys every codebook kind has; code_dim: the width codes are looked up in."""
        check(self.codebook_size >= 2, "model.quantizer.codebook_size", "must be >= 2")
        check(self.dim >= 1, "model.quantizer.dim", "must be >= 1")
        check(self.channels >= 1, "model.quantizer.channels", "must be >= 1")
        check(self.distance_chunk >= 1, "model.quantizer.distance_chunk", "must be >= 1")
        check(self.gradient in GRADIENTS, "model.quantizer.gradient",
              f"must be one of {', '.join(map(repr, GRADIENTS))}, got {self.gradient!r}")
        # in one dimension a direction is only a sign: there is no rotation to pass the gradient through
        check(self.gradient != "rotation" or code_dim >= 2, "model.quantizer.gradient",
              f"'rotation' needs codes of >= 2 dimensions, got {code_dim} (dim / codebook_dim)")
        check(0 < self.usage_decay < 1, "model.quantizer.usage_decay", "must be in (0, 1)")
        check(self.dead_code_threshold >= 0, "model.quantizer.dead_code_threshold", "must be >= 0")


@dataclass
class VQConfig(_Codebook):
    """Codebook VQ with the options of ViT-VQGAN, SeQ-GAN and MoVQ."""
    kind: str = "vq"
    codebook_dim: int | None = None  # factorised codes, looked up in this low dimension (e.g. 8)
    l2_norm: bool = False           # l2-normalise latents and codes (cosine lookup)
    entropy_weight: float = 0.0     # SeQ-GAN entropy regulariser gamma (0.01 in the paper)
    entropy_temperature: float = 0.01  # soft usage = softmax(-distance / T); at 1.0 the term barely acts

    def describe(self) -> str:
        return (f"vq {self.codebook_size} codes x {self.codebook_dim or self.dim} dims"
                f"{', l2-normalised' if self.l2_norm else ''}, {self.channels} per position")

    def validate(self) -> None:
        self.check_codebook(self.codebook_dim or self.dim)
        check(self.codebook_dim is None or self.codebook_dim >= 1, "model.quantizer.codebook_dim", "must be >= 1")
        check(self.beta >= 0 and self.entropy_weight >= 0, "model.quantizer.beta", "loss weights must be >= 0")
        check(self.entropy_temperature > 0, "model.quantizer.entropy_temperature", "must be > 0")


@dataclass
class SimVQConfig(_Codebook):
    """SimVQ (Zhu et al. 2024): a codebook frozen at its random init, used through one learned linear
    map (codes = C W, W is dim x dim), so every code moves with W. Codebook + beta x commitment
    losses; restart_dead_codes re-seeds a dead code's row of C so that its code is a recent latent."""
    kind: str = "simvq"

    def describe(self) -> str:
        return (f"simvq {self.codebook_size} codes x {self.dim} dims (frozen codebook x learned map), "
                f"{self.channels} per position")

    def validate(self) -> None:
        self.check_codebook(self.dim)
        check(self.beta >= 0, "model.quantizer.beta", "must be >= 0")


@dataclass
class LFQConfig:
    """Lookup-free quantisation (MAGVIT-v2): each latent channel is one bit, 2^dim codes, no codebook."""
    kind: str = "lfq"
    dim: int = 10                   # bits per token = latent width: 2^dim codes
    commitment_weight: float = 0.25  # ||z - code||^2 pulls the latents towards their codes
    entropy_weight: float = 0.1     # weight of the entropy term (MAGVIT-v2: 0.1; 0 = off)
    codebook_entropy_weight: float = 1.0  # inside the term: per-sample entropy - this x batch-usage entropy
    entropy_temperature: float = 0.01  # soft codes q(c|z) = softmax(<z, c> / T) over the 2^dim codes

    def describe(self) -> str:
        return f"{self.kind} {self.dim} bits = {2 ** self.dim} codes"

    def validate(self) -> None:
        # ids are int64 and the codebook size 2^dim must be one too
        check(1 <= self.dim <= 62, "model.quantizer.dim", f"must be in [1, 62] (2^dim codes), got {self.dim}")
        check(self.commitment_weight >= 0, "model.quantizer.commitment_weight", "must be >= 0")
        check(self.entropy_weight >= 0, "model.quantizer.entropy_weight", "must be >= 0")
        check(self.codebook_entropy_weight >= 0, "model.quantizer.codebook_entropy_weight", "must be >= 0")
        check(self.entropy_temperature > 0, "model.quantizer.entropy_temperature", "must be > 0")


@dataclass
class BSQConfig(LFQConfig):
    """Binary spherical quantisation (BSQ-ViT): LFQ of the l2-normalised latent, codes sign(z) / sqrt(dim)."""
    kind: str = "bsq"


@dataclass
class RFSQConfig:
    """Residual FSQ: `stages` FSQ stages over one latent, each quantising what the earlier ones left,
    on a grid `levels` times finer per stage; a position holds one index per stage."""
    kind: str = "rfsq"
    levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])  # per stage: 1000 codes
    stages: int = 2
    # SoundStream / DAC quantiser dropout: the probability that a training example decodes from only
    # its first k stages (k uniform in 1..stages), so that decoding from fewer stages is trained
    stage_dropout: float = 0.0

    @property
    def tokens_per_position(self) -> int:
        return self.stages

    def describe(self) -> str:
        return f"rfsq levels {self.levels} x {self.stages} stages = {math.prod(self.levels)} codes per stage"

    def validate(self) -> None:
        check(len(self.levels) >= 1 and all(lv >= 2 for lv in self.levels),
               "model.quantizer.levels", "every level must be >= 2")
        check(self.stages >= 1, "model.quantizer.stages", "must be >= 1")
        check(0 <= self.stage_dropout <= 1, "model.quantizer.stage_dropout", "must be in [0, 1]")


# A tagged union: `kind` picks the dataclass, and a key of another kind is unknown by construction
# (config/io.py). A new quantiser adds its dataclass here and to build_quantizer's registry.
QuantizerConfig = FSQConfig | VQConfig | LFQConfig | BSQConfig | RFSQConfig | SimVQConfig
