"""Typed configuration: one dataclass per part, defaults that work, validation that names the key.

Every key is either honoured or rejected: unknown keys, wrong types and out-of-range values raise
ConfigError naming the key (and the file, when there is one). The model's parts are in
model_schema.py; this module holds the rest of a tokenizer's config and re-exports them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from .checks import ConfigError, check
from .model_schema import (BackboneConfig, ConvNeXtConfig, FSQConfig, ImageConfig, ImageModelConfig,  # noqa: F401
                           MelConfig, MelModelConfig, ModelConfig, QuantizerConfig, RefinerConfig, ResNet1dConfig,
                           ResNet2dConfig, ViTConfig, VQConfig)


@dataclass
class MelDiscriminatorConfig:
    """MQGAN's pair on the (mel x time) image: a 2D patch discriminator plus one per band of mel bins."""
    kind: str = "mel"
    patch_channels: list[int] = field(default_factory=lambda: [32, 64, 64])  # width per conv layer
    bands: int = 4                  # mel bins split into this many bands; 0 = no band discriminators
    band_channels: list[int] = field(default_factory=lambda: [16, 32])

    def validate(self) -> None:
        check(len(self.patch_channels) >= 1, "discriminator.patch_channels", "needs at least one layer")
        check(self.bands >= 0, "discriminator.bands", "must be >= 0")
        check(self.bands == 0 or len(self.band_channels) >= 1, "discriminator.band_channels",
               "needs at least one layer when bands > 0")
        check(self.bands > 0 or self.band_channels in ([], MelDiscriminatorConfig().band_channels),
               "discriminator.band_channels", f"{self.band_channels} has no effect with bands 0 (no band "
               "discriminators): set discriminator.band_channels=[] with it")


@dataclass
class _ImageDiscriminator:
    """What the image discriminators share (not a kind itself)."""
    kind: str = ""
    patch_channels: list[int] = field(default_factory=lambda: [32, 64, 64])   # width per conv layer

    def validate(self) -> None:
        check(len(self.patch_channels) >= 1, "discriminator.patch_channels", "needs at least one layer")


@dataclass
class PatchGANConfig(_ImageDiscriminator):
    """taming's n-layer PatchGAN (images)."""
    kind: str = "patchgan"


@dataclass
class StyleGANConfig(_ImageDiscriminator):
    """Residual downsampling discriminator with minibatch-stddev (SeQ-GAN; images)."""
    kind: str = "stylegan"


DiscriminatorConfig = MelDiscriminatorConfig | PatchGANConfig | StyleGANConfig   # tagged by kind


@dataclass
class _Loss:
    """The losses every modality has (not a kind itself; tagged by the model's modality)."""
    TAG: ClassVar[str] = "modality"
    modality: str = ""
    draft_mse: float = 1.0          # MSE on the decoder draft (the only loss the base model sees in isolated mode)
    draft_l1: float = 0.0
    refined_mse: float = 2.0
    refined_l1: float = 0.0
    gan: float = 1.0                # generator adversarial weight
    gan_loss: str = "lsgan"         # "lsgan", "hinge" or "non_saturating"
    adaptive_gan_weight: bool = False  # taming: scale by |grad recon| / |grad gan| at the decoder's last layer
    feature_matching: float = 0.0
    lecam: float = 0.1              # LeCam regulariser weight on the discriminator
    lecam_decay: float = 0.99
    gan_start_step: int = 200       # reconstruction-only warm-up before the GAN starts

    def validate(self) -> None:
        check(self.gan_loss in ("lsgan", "hinge", "non_saturating"), "loss.gan_loss",
               "must be 'lsgan', 'hinge' or 'non_saturating'")
        for name in ("draft_mse", "draft_l1", "refined_mse", "refined_l1", "gan", "feature_matching", "lecam"):
            check(getattr(self, name) >= 0, f"loss.{name}", "must be >= 0")
        check(0 <= self.lecam_decay < 1, "loss.lecam_decay", "must be in [0, 1)")
        check(self.gan_start_step >= 0, "loss.gan_start_step", "must be >= 0")


@dataclass
class MelLossConfig(_Loss):
    modality: str = "mel"


@dataclass
class ImageLossConfig(_Loss):
    """Images add a VGG16 perceptual loss on the output."""
    modality: str = "image"
    perceptual: float = 0.0         # weight of the VGG16 perceptual loss on the output
    # "lpips" (learned linear heads); "seqgan": alpha L_sem + (1-alpha) L_low as in the paper (per layer
    # 1/(HWC) ||raw feature difference||^2, summed); "seqgan_normalized": the same terms on unit-normalised features
    perceptual_kind: str = "lpips"
    perceptual_alpha: float = 0.0   # seqgan: share of the semantic term (relu5_3 + logits)
    vgg_weights: str | None = None  # torchvision-layout vgg16 state dict (.pth/.safetensors)
    lpips_weights: str | None = None  # LPIPS linear heads (the `lpips` wheel's weights/v0.1/vgg.pth)

    def validate(self) -> None:
        super().validate()
        check(self.perceptual >= 0, "loss.perceptual", "must be >= 0")
        check(self.perceptual_kind in ("lpips", "seqgan", "seqgan_normalized"), "loss.perceptual_kind",
               "must be 'lpips', 'seqgan' or 'seqgan_normalized'")
        check(0 <= self.perceptual_alpha <= 1, "loss.perceptual_alpha", "must be in [0, 1]")


LossConfig = MelLossConfig | ImageLossConfig   # tagged by the model's modality


@dataclass
class OptimConfig:
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.0
    warmup_steps: int = 100
    d_lr: float = 1e-3
    d_betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    grad_clip: float = 1.0          # 0 disables

    def validate(self) -> None:
        check(self.lr > 0 and self.d_lr > 0, "optim.lr", "learning rates must be > 0")
        check(len(self.betas) == 2 and len(self.d_betas) == 2, "optim.betas", "need two values")
        check(self.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
        check(self.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
        check(self.grad_clip >= 0, "optim.grad_clip", "must be >= 0")


@dataclass
class _Data:
    """What every modality's data block has (not a kind itself; tagged by the model's modality)."""
    TAG: ClassVar[str] = "modality"
    modality: str = ""
    valid_fraction: float = 0.05    # held out by file-name hash when no --valid-data is given
    num_workers: int = 0

    def validate(self) -> None:
        check(0 <= self.valid_fraction < 1, "data.valid_fraction", "must be in [0, 1)")
        check(self.num_workers >= 0, "data.num_workers", "must be >= 0")


@dataclass
class MelDataConfig(_Data):
    """Audio clips cut into random mel crops."""
    modality: str = "mel"
    segment_frames: int = 128       # random crop length in mel frames
    min_seconds: float = 0.3        # shorter clips are skipped and counted
    max_seconds: float | None = None  # longer clips are skipped and counted; None = no limit
    feature_cache: str | None = None  # directory of log-mels computed once and reused; None = off
    feature_cache_dtype: str = "float32"  # "float32" (exact) or "float16" (half the disk; ~1e-3 nats off)

    def validate(self) -> None:
        super().validate()
        check(self.segment_frames >= 8, "data.segment_frames", "must be >= 8")
        check(self.feature_cache is None or (isinstance(self.feature_cache, str) and self.feature_cache.strip() != ""),
               "data.feature_cache", "must be a directory path (a non-empty string) or null")
        check(self.feature_cache_dtype in ("float32", "float16"), "data.feature_cache_dtype",
               "must be 'float32' or 'float16'")
        check(self.min_seconds >= 0, "data.min_seconds", "must be >= 0")


@dataclass
class ImageDataConfig(_Data):
    """Images cut into random square crops."""
    modality: str = "image"
    image_size: int = 64            # random square crop side (smaller images are upscaled first)
    random_flip: bool = True        # horizontal flips

    def validate(self) -> None:
        super().validate()
        check(self.image_size >= 8, "data.image_size", "must be >= 8")


DataConfig = MelDataConfig | ImageDataConfig   # tagged by the model's modality


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 16            # per process and micro-batch
    seed: int = 0
    log_every: int = 25
    eval_every: int = 250           # held-out loss + reconstruction samples
    save_every: int = 250
    keep_last: int = 2              # checkpoints kept (older ones deleted after a successful save)
    precision: str = "fp32"         # "fp32" or "bf16" (autocast; the quantiser stays float32)
    device: str = "auto"            # "auto", "cpu" or "cuda"
    eval_clips: int = 8
    max_nonfinite_steps: int = 20   # consecutive skipped (NaN/Inf) steps before training stops
    phase: int = 1                  # 2: SeQ-GAN phase 2, fine-tune the decoder with encoder and codebook frozen
    init_from: str | None = None    # phase 2: the phase-1 checkpoint (or run directory) to start from
    grad_accum_steps: int = 1       # micro-batches per optimiser step (global batch = batch_size x this x processes)
    ema_decay: float = 0.0          # > 0: EMA of the generator's weights, used for eval and export (e.g. 0.999)
    compile: bool = False           # torch.compile the model's forward (GPU: faster after a warm-up)
    compile_backend: str = "inductor"  # torch.compile backend; "aot_eager" traces without code generation
    keep_best: bool = True          # also keep the best held-out checkpoint (checkpoints/best)
    # Wall-clock budget of one `vqkit train` invocation: at the first step past it training stops
    # with a complete, resumable checkpoint. null = no limit (train.steps only).
    max_minutes: float | None = None

    def validate(self) -> None:
        check(self.steps >= 1, "train.steps", "must be >= 1")
        check(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        for name in ("log_every", "eval_every", "save_every", "keep_last", "eval_clips", "max_nonfinite_steps"):
            check(getattr(self, name) >= 1, f"train.{name}", "must be >= 1")
        check(self.precision in ("fp32", "bf16"), "train.precision", "must be 'fp32' or 'bf16'")
        check(self.device in ("auto", "cpu", "cuda"), "train.device", "must be 'auto', 'cpu' or 'cuda'")
        check(self.phase in (1, 2), "train.phase", "must be 1 or 2")
        check(self.compile_backend in ("inductor", "aot_eager", "eager", "cudagraphs"), "train.compile_backend",
               "must be 'inductor', 'aot_eager', 'eager' or 'cudagraphs'")
        check(self.grad_accum_steps >= 1, "train.grad_accum_steps", "must be >= 1")
        check(0.0 <= self.ema_decay < 1.0, "train.ema_decay", "must be in [0, 1) (0 = off)")
        check(self.max_minutes is None or self.max_minutes > 0, "train.max_minutes", "must be > 0 (or null)")


@dataclass
class Config:
    # Blocks tagged by the model's modality: a block that does not say its own takes the model's.
    TAG_FROM: ClassVar[dict[str, str]] = {"data": "model", "loss": "model"}
    name: str = "mqgan-refiner"
    model: ModelConfig = field(default_factory=MelModelConfig)
    discriminator: DiscriminatorConfig = field(default_factory=MelDiscriminatorConfig)
    loss: LossConfig = field(default_factory=MelLossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=MelDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> "Config":
        self.model.validate(); self.discriminator.validate(); self.loss.validate()
        self.optim.validate(); self.data.validate(); self.train.validate()
        modality = self.model.modality
        for block in ("data", "loss"):
            check(getattr(self, block).modality == modality, f"{block}.modality",
                   f"{getattr(self, block).modality!r} does not match model.modality {modality!r}")
        d = self.discriminator
        if modality == "mel":
            check(d.kind == "mel", "discriminator.kind", "mel models use kind 'mel'")
            check(d.bands <= self.model.mel.n_mels, "discriminator.bands",
                   f"cannot split {self.model.mel.n_mels} mel bins into {d.bands} bands")
        check(modality == "mel" or d.kind != "mel", "discriminator.kind", "image models use 'patchgan' or 'stylegan'")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
