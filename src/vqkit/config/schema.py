"""Typed configuration: one dataclass per part, defaults that work, validation that names the key.

Every key is either honoured or rejected: unknown keys, wrong types and out-of-range values raise
ConfigError naming the key (and the file, when there is one).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A configuration that cannot be honoured."""


@dataclass
class MelConfig:
    """Audio <-> log-mel. Defaults follow HiFi-GAN V1 so the shipped vocoder applies."""
    sample_rate: int = 22050
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float | None = 8000.0
    mel_scale: str = "slaney"          # "slaney" or "htk"
    filter_norm: str | None = "slaney"  # librosa filterbank norm: "slaney" or None
    power: float = 1.0                 # 1 = magnitude, 2 = power
    mag_eps: float = 1e-9              # magnitude = sqrt(re^2 + im^2 + mag_eps): HiFi-GAN adds 1e-9
    log_clamp: float = 1e-5            # log(clamp(mel, log_clamp))
    center: bool = False               # False: reflect-pad (n_fft - hop) / 2 each side (HiFi-GAN)

    def validate(self) -> None:
        _check(self.sample_rate > 0 and self.n_fft > 0 and self.n_mels > 0, "model.mel.n_mels",
               "sample_rate, n_fft and n_mels must be > 0")
        _check(self.mel_scale in ("slaney", "htk"), "model.mel.mel_scale", "must be 'slaney' or 'htk'")
        _check(self.filter_norm in ("slaney", None), "model.mel.filter_norm", "must be 'slaney' or null")
        _check(self.win_length <= self.n_fft, "model.mel.win_length", "must be <= n_fft")
        _check(0 < self.hop_length <= self.win_length, "model.mel.hop_length", "must be in (0, win_length]")
        fmax = self.fmax if self.fmax is not None else self.sample_rate / 2
        _check(0 <= self.fmin < fmax <= self.sample_rate / 2, "model.mel.fmax",
               f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={self.fmin}, fmax={fmax}")
        _check(self.power in (1.0, 2.0), "model.mel.power", "must be 1 or 2")
        _check(self.log_clamp > 0, "model.mel.log_clamp", "must be > 0")
        _check(self.mag_eps >= 0, "model.mel.mag_eps", "must be >= 0")

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length


@dataclass
class ResNet1dConfig:
    """MQGAN-style encoder/decoder over time, mel bins as channels (mel models)."""
    kind: str = "resnet1d"
    channels: list[int] = field(default_factory=lambda: [64, 96])  # width of each stage
    blocks_per_stage: int = 1
    kernel_size: int = 5
    dropout: float = 0.0
    attention: bool = True          # channel + temporal attention per block
    mel_mixer: bool = True          # small 2D conv block over the (channels x time) map
    downsample: int = 1             # time factor 1/2/4/8 (86 / 43 / 21.5 / 10.8 tokens/s at 22.05 kHz, hop 256)
    causal_decoder: bool = False    # decoder convolutions see only the past (model.causal: all of it)
    # Frames the channel attention's squeeze averages over (centred; causal: the last N). A finite
    # window keeps the receptive field finite (streaming, long files, padded batches); null = the
    # whole clip, as checkpoints saved before it existed.
    attention_frames: int | None = 31

    is_image = False

    def validate(self) -> None:
        _widths_and_depth(self)
        _check(self.kernel_size >= 1 and self.kernel_size % 2 == 1, "model.backbone.kernel_size",
               "must be a positive odd number")
        _check(self.downsample in (1, 2, 4, 8), "model.backbone.downsample", "must be 1, 2, 4 or 8 for resnet1d")
        _check(self.attention_frames is None or self.attention_frames >= 1, "model.backbone.attention_frames",
               "must be >= 1 (or null: the whole clip)")


@dataclass
class _ImageBackbone:
    """What the image backbones share (not a kind itself)."""
    kind: str = ""
    channels: list[int] = field(default_factory=lambda: [64, 96])  # width of each stage (vit: last = width)
    blocks_per_stage: int = 1       # vit: transformer depth of encoder and of decoder
    dropout: float = 0.0
    downsample: int = 4             # spatial factor 2/4/8/16 (vit: patch size)
    heads: int = 4                  # attention heads
    spatial_norm_blocks: int = 0    # MoVQ: the first N decoder stages normalise with gamma(z_q), beta(z_q)
    decoder_attention: str = "none"  # SeQ-GAN enhanced decoder: "none", "window" or "dilated" attention blocks
    decoder_attention_blocks: int = 0
    attention_window: int = 8

    is_image = True

    def validate(self) -> None:
        _widths_and_depth(self)
        _check(self.heads >= 1, "model.backbone.heads", "must be >= 1")
        _check(self.downsample in (2, 4, 8, 16), "model.backbone.downsample", "must be 2, 4, 8 or 16 for images")
        _check(0 <= self.spatial_norm_blocks <= len(self.channels), "model.backbone.spatial_norm_blocks",
               f"must be in [0, {len(self.channels)}] (one per decoder stage)")
        _check(self.decoder_attention in ("none", "window", "dilated"), "model.backbone.decoder_attention",
               "must be 'none', 'window' or 'dilated'")
        _check((self.decoder_attention == "none") == (self.decoder_attention_blocks == 0),
               "model.backbone.decoder_attention_blocks", "must be > 0 exactly when decoder_attention is set")
        _check(self.attention_window >= 2, "model.backbone.attention_window", "must be >= 2")


@dataclass
class ResNet2dConfig(_ImageBackbone):
    """VQGAN's convolutional encoder/decoder."""
    kind: str = "resnet2d"
    attention: bool = True          # self-attention at the lowest resolution


@dataclass
class ConvNeXtConfig(_ImageBackbone):
    """Depthwise 7x7 + RMSNorm + SwiGLU blocks."""
    kind: str = "convnext"
    attention: bool = True          # self-attention at the lowest resolution


@dataclass
class ViTConfig(_ImageBackbone):
    """Patchify transformer (ViT-VQGAN)."""
    kind: str = "vit"
    patch_overlap: bool = False     # overlapping patch embedding (kernel 2p, stride p) against grid artefacts


# A tagged union keyed by kind (config/io.py): each backbone reads exactly its own keys.
BackboneConfig = ResNet1dConfig | ResNet2dConfig | ConvNeXtConfig | ViTConfig


def _widths_and_depth(cfg) -> None:
    _check(len(cfg.channels) >= 1 and all(c > 0 for c in cfg.channels),
           "model.backbone.channels", "needs at least one positive width")
    _check(cfg.blocks_per_stage >= 1, "model.backbone.blocks_per_stage", "must be >= 1")
    _check(0 <= cfg.dropout < 1, "model.backbone.dropout", "must be in [0, 1)")


@dataclass
class FSQConfig:
    """Finite scalar quantisation: one integer per latent dimension, codes = product of the levels."""
    kind: str = "fsq"
    levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])  # 1000 codes

    tokens_per_position = 1

    def validate(self) -> None:
        _check(len(self.levels) >= 1 and all(lv >= 2 for lv in self.levels),
               "model.quantizer.levels", "every level must be >= 2")


@dataclass
class VQConfig:
    """Codebook VQ with the options of ViT-VQGAN, SeQ-GAN and MoVQ."""
    kind: str = "vq"
    codebook_size: int = 1024
    dim: int = 64                   # latent width of one code (per channel chunk)
    codebook_dim: int | None = None  # factorised codes, looked up in this low dimension (e.g. 8)
    l2_norm: bool = False           # l2-normalise latents and codes (cosine lookup)
    beta: float = 0.25              # commitment loss weight
    entropy_weight: float = 0.0     # SeQ-GAN entropy regulariser gamma (0.01 in the paper)
    entropy_temperature: float = 0.01  # soft usage = softmax(-distance / T); at 1.0 the term barely acts
    channels: int = 1               # MoVQ multichannel, c chunks per latent sharing ONE codebook
    restart_dead_codes: bool = False  # re-seed unused codes from recent encoder outputs
    dead_code_threshold: float = 0.1  # a code is dead when its EMA assignment count per step falls below this
    usage_decay: float = 0.99         # EMA decay of per-code assignment counts
    distance_chunk: int = 4096        # latents per chunk when computing distances (bounds memory)

    @property
    def tokens_per_position(self) -> int:
        return self.channels

    def validate(self) -> None:
        _check(self.codebook_size >= 2, "model.quantizer.codebook_size", "must be >= 2")
        _check(self.dim >= 1, "model.quantizer.dim", "must be >= 1")
        _check(self.codebook_dim is None or self.codebook_dim >= 1, "model.quantizer.codebook_dim", "must be >= 1")
        _check(self.beta >= 0 and self.entropy_weight >= 0, "model.quantizer.beta", "loss weights must be >= 0")
        _check(self.entropy_temperature > 0, "model.quantizer.entropy_temperature", "must be > 0")
        _check(self.channels >= 1, "model.quantizer.channels", "must be >= 1")
        _check(0 < self.usage_decay < 1, "model.quantizer.usage_decay", "must be in (0, 1)")
        _check(self.dead_code_threshold >= 0, "model.quantizer.dead_code_threshold", "must be >= 0")
        _check(self.distance_chunk >= 1, "model.quantizer.distance_chunk", "must be >= 1")


# A tagged union: `kind` picks the dataclass, and a key of another kind is unknown by construction
# (config/io.py). A new quantiser adds its dataclass here and to build_quantizer's registry.
QuantizerConfig = FSQConfig | VQConfig


@dataclass
class RefinerConfig:
    """Small UNet that turns the decoder's draft into the refined output (a residual)."""
    enabled: bool = True
    mode: str = "isolated"          # "isolated": refined losses never reach the base model; "shared": reference
    base_channels: int = 16
    channel_mults: list[int] = field(default_factory=lambda: [1, 2, 4])
    hidden_bins: int | None = None  # decoder hidden -> this many extra rows (mel) / channels (image); None = auto
    # GroupNorm statistics: "frame" = per time frame (mels: local in time, needed for streaming and
    # long files); "clip" = over the whole input (images; mel checkpoints saved before "frame").
    # null: "frame" for mels, "clip" for images.
    norm: str | None = None

    def validate(self) -> None:
        _check(self.norm in (None, "frame", "clip"), "model.refiner.norm", "must be 'frame', 'clip' or null")
        _check(self.mode in ("isolated", "shared"), "model.refiner.mode", "must be 'isolated' or 'shared'")
        _check(self.base_channels > 0, "model.refiner.base_channels", "must be > 0")
        _check(len(self.channel_mults) >= 1 and all(m > 0 for m in self.channel_mults),
               "model.refiner.channel_mults", "needs at least one positive multiplier")
        _check(self.hidden_bins is None or self.hidden_bins >= 1, "model.refiner.hidden_bins", "must be >= 1")


@dataclass
class ImageConfig:
    channels: int = 3               # images are converted to RGB (3) or grayscale (1)

    def validate(self) -> None:
        _check(self.channels in (1, 3), "model.image.channels", "must be 1 (grayscale) or 3 (RGB)")


@dataclass
class ModelConfig:
    modality: str = "mel"           # "mel" (audio) or "image"
    # Encoder, decoder and refiner see only the past (left-padded convolutions, causal statistics,
    # pooling aligned to the past): tokens and frames stream chunk by chunk. Mels only.
    causal: bool = False
    mel: MelConfig = field(default_factory=MelConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    backbone: BackboneConfig = field(default_factory=ResNet1dConfig)
    quantizer: QuantizerConfig = field(default_factory=FSQConfig)
    refiner: RefinerConfig = field(default_factory=RefinerConfig)

    def validate(self) -> None:
        _check(self.modality in ("mel", "image"), "model.modality", "must be 'mel' or 'image'")
        self.mel.validate(); self.image.validate(); self.backbone.validate(); self.quantizer.validate()
        self.refiner.validate()
        _check(self.backbone.is_image == (self.modality == "image"), "model.backbone.kind",
               f"{self.backbone.kind!r} does not fit modality {self.modality!r}")
        image = self.modality == "image"
        _check(not (image and self.causal), "model.causal", "applies to mel models only")
        _check(not (image and self.refiner.norm == "frame"), "model.refiner.norm",
               "'frame' applies to mel models only (images: 'clip' or null)")
        _check(not (self.causal and self.refiner.norm == "clip"), "model.refiner.norm",
               "'clip' statistics see the whole clip, so a causal model cannot use them")
        _check(not (self.causal and self.backbone.attention_frames is None), "model.backbone.attention_frames",
               "null (the whole clip) sees the future, so a causal model needs a window")


@dataclass
class MelDiscriminatorConfig:
    """MQGAN's pair on the (mel x time) image: a 2D patch discriminator plus one per band of mel bins."""
    kind: str = "mel"
    patch_channels: list[int] = field(default_factory=lambda: [32, 64, 64])  # width per conv layer
    bands: int = 4                  # mel bins split into this many bands; 0 = no band discriminators
    band_channels: list[int] = field(default_factory=lambda: [16, 32])

    def validate(self) -> None:
        _check(len(self.patch_channels) >= 1, "discriminator.patch_channels", "needs at least one layer")
        _check(self.bands >= 0, "discriminator.bands", "must be >= 0")
        _check(self.bands == 0 or len(self.band_channels) >= 1, "discriminator.band_channels",
               "needs at least one layer when bands > 0")
        _check(self.bands > 0 or self.band_channels in ([], MelDiscriminatorConfig().band_channels),
               "discriminator.band_channels", f"{self.band_channels} has no effect with bands 0 (no band "
               "discriminators): set discriminator.band_channels=[] with it")


@dataclass
class PatchGANConfig:
    """taming's n-layer PatchGAN (images)."""
    kind: str = "patchgan"
    patch_channels: list[int] = field(default_factory=lambda: [32, 64, 64])

    def validate(self) -> None:
        _check(len(self.patch_channels) >= 1, "discriminator.patch_channels", "needs at least one layer")


@dataclass
class StyleGANConfig:
    """Residual downsampling discriminator with minibatch-stddev (SeQ-GAN; images)."""
    kind: str = "stylegan"
    patch_channels: list[int] = field(default_factory=lambda: [32, 64, 64])

    def validate(self) -> None:
        _check(len(self.patch_channels) >= 1, "discriminator.patch_channels", "needs at least one layer")


DiscriminatorConfig = MelDiscriminatorConfig | PatchGANConfig | StyleGANConfig   # tagged by kind


@dataclass
class LossConfig:
    draft_mse: float = 1.0          # MSE on the decoder draft (the only loss the base model sees in isolated mode)
    draft_l1: float = 0.0
    refined_mse: float = 2.0
    refined_l1: float = 0.0
    gan: float = 1.0                # generator adversarial weight
    gan_loss: str = "lsgan"         # "lsgan", "hinge" or "non_saturating"
    adaptive_gan_weight: bool = False  # taming: scale by |grad recon| / |grad gan| at the decoder's last layer
    perceptual: float = 0.0         # images: weight of the VGG16 perceptual loss on the output
    # "lpips" (learned linear heads); "seqgan": alpha L_sem + (1-alpha) L_low as in the paper (per layer
    # 1/(HWC) ||raw feature difference||^2, summed); "seqgan_normalized": the same terms on unit-normalised features
    perceptual_kind: str = "lpips"
    perceptual_alpha: float = 0.0   # seqgan: share of the semantic term (relu5_3 + logits)
    vgg_weights: str | None = None  # torchvision-layout vgg16 state dict (.pth/.safetensors)
    lpips_weights: str | None = None  # LPIPS linear heads (the `lpips` wheel's weights/v0.1/vgg.pth)
    feature_matching: float = 0.0
    lecam: float = 0.1              # LeCam regulariser weight on the discriminator
    lecam_decay: float = 0.99
    gan_start_step: int = 200       # reconstruction-only warm-up before the GAN starts

    def validate(self) -> None:
        _check(self.gan_loss in ("lsgan", "hinge", "non_saturating"), "loss.gan_loss",
               "must be 'lsgan', 'hinge' or 'non_saturating'")
        _check(self.perceptual_kind in ("lpips", "seqgan", "seqgan_normalized"), "loss.perceptual_kind",
               "must be 'lpips', 'seqgan' or 'seqgan_normalized'")
        _check(0 <= self.perceptual_alpha <= 1, "loss.perceptual_alpha", "must be in [0, 1]")
        for name in ("draft_mse", "draft_l1", "refined_mse", "refined_l1", "gan", "feature_matching", "lecam",
                     "perceptual"):
            _check(getattr(self, name) >= 0, f"loss.{name}", "must be >= 0")
        _check(0 <= self.lecam_decay < 1, "loss.lecam_decay", "must be in [0, 1)")
        _check(self.gan_start_step >= 0, "loss.gan_start_step", "must be >= 0")


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
        _check(self.lr > 0 and self.d_lr > 0, "optim.lr", "learning rates must be > 0")
        _check(len(self.betas) == 2 and len(self.d_betas) == 2, "optim.betas", "need two values")
        _check(self.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
        _check(self.warmup_steps >= 0, "optim.warmup_steps", "must be >= 0")
        _check(self.grad_clip >= 0, "optim.grad_clip", "must be >= 0")


@dataclass
class DataConfig:
    segment_frames: int = 128       # random crop length in mel frames
    min_seconds: float = 0.3        # shorter clips are skipped and counted
    max_seconds: float | None = None  # longer clips are skipped and counted; None = no limit
    image_size: int = 64            # images: random square crop side (smaller images are upscaled first)
    random_flip: bool = True        # images: horizontal flips
    valid_fraction: float = 0.05    # held out by file-name hash when no --valid-data is given
    num_workers: int = 0
    feature_cache: str | None = None  # mel models: directory of log-mels computed once and reused; None = off
    feature_cache_dtype: str = "float32"  # "float32" (exact) or "float16" (half the disk; ~1e-3 nats off)

    def validate(self) -> None:
        _check(self.segment_frames >= 8, "data.segment_frames", "must be >= 8")
        _check(self.feature_cache is None or (isinstance(self.feature_cache, str) and self.feature_cache.strip() != ""),
               "data.feature_cache", "must be a directory path (a non-empty string) or null")
        _check(self.feature_cache_dtype in ("float32", "float16"), "data.feature_cache_dtype",
               "must be 'float32' or 'float16'")
        _check(self.image_size >= 8, "data.image_size", "must be >= 8")
        _check(self.min_seconds >= 0, "data.min_seconds", "must be >= 0")
        _check(0 <= self.valid_fraction < 1, "data.valid_fraction", "must be in [0, 1)")
        _check(self.num_workers >= 0, "data.num_workers", "must be >= 0")


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
        _check(self.steps >= 1, "train.steps", "must be >= 1")
        _check(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        for name in ("log_every", "eval_every", "save_every", "keep_last", "eval_clips", "max_nonfinite_steps"):
            _check(getattr(self, name) >= 1, f"train.{name}", "must be >= 1")
        _check(self.precision in ("fp32", "bf16"), "train.precision", "must be 'fp32' or 'bf16'")
        _check(self.device in ("auto", "cpu", "cuda"), "train.device", "must be 'auto', 'cpu' or 'cuda'")
        _check(self.phase in (1, 2), "train.phase", "must be 1 or 2")
        _check(self.compile_backend in ("inductor", "aot_eager", "eager", "cudagraphs"), "train.compile_backend",
               "must be 'inductor', 'aot_eager', 'eager' or 'cudagraphs'")
        _check(self.grad_accum_steps >= 1, "train.grad_accum_steps", "must be >= 1")
        _check(0.0 <= self.ema_decay < 1.0, "train.ema_decay", "must be in [0, 1) (0 = off)")
        _check(self.max_minutes is None or self.max_minutes > 0, "train.max_minutes", "must be > 0 (or null)")


@dataclass
class Config:
    name: str = "mqgan-refiner"
    model: ModelConfig = field(default_factory=ModelConfig)
    discriminator: DiscriminatorConfig = field(default_factory=MelDiscriminatorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> "Config":
        self.model.validate(); self.discriminator.validate(); self.loss.validate()
        self.optim.validate(); self.data.validate(); self.train.validate()
        d = self.discriminator
        _check(d.kind != "mel" or d.bands <= self.model.mel.n_mels, "discriminator.bands",
               f"cannot split {self.model.mel.n_mels} mel bins into {getattr(d, 'bands', 0)} bands")
        image = self.model.modality == "image"
        _check(image or self.discriminator.kind == "mel", "discriminator.kind", "mel models use kind 'mel'")
        _check(not image or self.discriminator.kind != "mel", "discriminator.kind",
               "image models use 'patchgan' or 'stylegan'")
        _check(image or self.loss.perceptual == 0, "loss.perceptual", "applies to images only")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")
