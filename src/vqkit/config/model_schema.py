"""The tokenizer's own parts: mel frontend, backbones, refiner, image input, and the model block
that holds them (the quantisers' configs are in quantizer_schema.py). Components with kinds are tagged unions keyed by `kind` (config/io.py
builds the dataclass a block's kind names, so other kinds' keys are refused by construction)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .checks import check
from .quantizer_schema import (BSQConfig, FSQConfig, LFQConfig, QuantizerConfig, RFSQConfig,  # noqa: F401
                               SimVQConfig, VQConfig)


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
        check(self.sample_rate > 0 and self.n_fft > 0 and self.n_mels > 0, "model.mel.n_mels",
               "sample_rate, n_fft and n_mels must be > 0")
        check(self.mel_scale in ("slaney", "htk"), "model.mel.mel_scale", "must be 'slaney' or 'htk'")
        check(self.filter_norm in ("slaney", None), "model.mel.filter_norm", "must be 'slaney' or null")
        check(self.win_length <= self.n_fft, "model.mel.win_length", "must be <= n_fft")
        check(0 < self.hop_length <= self.win_length, "model.mel.hop_length", "must be in (0, win_length]")
        fmax = self.fmax if self.fmax is not None else self.sample_rate / 2
        check(0 <= self.fmin < fmax <= self.sample_rate / 2, "model.mel.fmax",
               f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={self.fmin}, fmax={fmax}")
        check(self.power in (1.0, 2.0), "model.mel.power", "must be 1 or 2")
        check(self.log_clamp > 0, "model.mel.log_clamp", "must be > 0")
        check(self.mag_eps >= 0, "model.mel.mag_eps", "must be >= 0")

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
        check(self.kernel_size >= 1 and self.kernel_size % 2 == 1, "model.backbone.kernel_size",
               "must be a positive odd number")
        check(self.downsample in (1, 2, 4, 8), "model.backbone.downsample", "must be 1, 2, 4 or 8 for resnet1d")
        check(self.attention_frames is None or self.attention_frames >= 1, "model.backbone.attention_frames",
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
        check(self.heads >= 1, "model.backbone.heads", "must be >= 1")
        check(self.downsample in (2, 4, 8, 16), "model.backbone.downsample", "must be 2, 4, 8 or 16 for images")
        check(0 <= self.spatial_norm_blocks <= len(self.channels), "model.backbone.spatial_norm_blocks",
               f"must be in [0, {len(self.channels)}] (one per decoder stage)")
        check(self.decoder_attention in ("none", "window", "dilated"), "model.backbone.decoder_attention",
               "must be 'none', 'window' or 'dilated'")
        check((self.decoder_attention == "none") == (self.decoder_attention_blocks == 0),
               "model.backbone.decoder_attention_blocks", "must be > 0 exactly when decoder_attention is set")
        check(self.attention_window >= 2, "model.backbone.attention_window", "must be >= 2")


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
    check(len(cfg.channels) >= 1 and all(c > 0 for c in cfg.channels),
           "model.backbone.channels", "needs at least one positive width")
    check(cfg.blocks_per_stage >= 1, "model.backbone.blocks_per_stage", "must be >= 1")
    check(0 <= cfg.dropout < 1, "model.backbone.dropout", "must be in [0, 1)")



@dataclass
class RefinerConfig:
    """Small UNet that turns the decoder's draft into the refined output (a residual). A model
    without one has `model.refiner: null` (there are no refiner options to ignore then)."""
    REMOVED: ClassVar[dict[str, str]] = {"enabled": "the refiner is off with model.refiner=null and on with a "
                                                    "refiner block (model.refiner={} for the defaults)"}
    mode: str = "isolated"          # "isolated": refined losses never reach the base model; "shared": reference
    base_channels: int = 16
    channel_mults: list[int] = field(default_factory=lambda: [1, 2, 4])
    hidden_bins: int | None = None  # decoder hidden -> this many extra rows (mel) / channels (image); None = auto
    # GroupNorm statistics: "frame" = per time frame (mels: local in time, needed for streaming and
    # long files); "clip" = over the whole input (images; mel checkpoints saved before "frame").
    # null: "frame" for mels, "clip" for images.
    norm: str | None = None

    def validate(self) -> None:
        check(self.norm in (None, "frame", "clip"), "model.refiner.norm", "must be 'frame', 'clip' or null")
        check(self.mode in ("isolated", "shared"), "model.refiner.mode", "must be 'isolated' or 'shared'")
        check(self.base_channels > 0, "model.refiner.base_channels", "must be > 0")
        check(len(self.channel_mults) >= 1 and all(m > 0 for m in self.channel_mults),
               "model.refiner.channel_mults", "needs at least one positive multiplier")
        check(self.hidden_bins is None or self.hidden_bins >= 1, "model.refiner.hidden_bins", "must be >= 1")


@dataclass
class ImageConfig:
    channels: int = 3               # images are converted to RGB (3) or grayscale (1)

    def validate(self) -> None:
        check(self.channels in (1, 3), "model.image.channels", "must be 1 (grayscale) or 3 (RGB)")


@dataclass
class _Model:
    """What every modality's model block has (not a kind itself): the tokenizer's parts."""
    TAG: ClassVar[str] = "modality"     # the key that picks the dataclass (config/io.py)
    modality: str = ""
    backbone: BackboneConfig = field(default_factory=ResNet1dConfig)
    quantizer: QuantizerConfig = field(default_factory=FSQConfig)
    refiner: RefinerConfig | None = field(default_factory=RefinerConfig)

    def validate(self) -> None:
        self.backbone.validate(); self.quantizer.validate()
        if self.refiner is not None:
            self.refiner.validate()
        check(self.backbone.is_image == (self.modality == "image"), "model.backbone.kind",
               f"{self.backbone.kind!r} does not fit modality {self.modality!r}")


@dataclass
class MelModelConfig(_Model):
    """A mel (audio) tokenizer: the mel frontend's settings and whether everything is causal."""
    modality: str = "mel"
    # Encoder, decoder and refiner see only the past (left-padded convolutions, causal statistics,
    # pooling aligned to the past): tokens and frames stream chunk by chunk.
    causal: bool = False
    mel: MelConfig = field(default_factory=MelConfig)

    # The signal's shape, for the tokenizer: (n_mels, T), one spatial axis. The model starts from a
    # log-mel's typical per-bin mean and scale (unit-scale inputs from the first step).
    spatial_dims: ClassVar[int] = 1
    norm_init: ClassVar[tuple[float, float]] = (-5.0, 2.0)

    @property
    def input_channels(self) -> int:
        return self.mel.n_mels

    def input_shape_text(self) -> str:
        return f"log-mel of shape (n_mels={self.mel.n_mels}, T) or (B, n_mels, T)"

    def validate(self) -> None:
        super().validate()
        self.mel.validate()
        norm = self.refiner.norm if self.refiner is not None else None
        check(not (self.causal and norm == "clip"), "model.refiner.norm",
               "'clip' statistics see the whole clip, so a causal model cannot use them")
        check(not (self.causal and self.backbone.attention_frames is None), "model.backbone.attention_frames",
               "null (the whole clip) sees the future, so a causal model needs a window")


@dataclass
class ImageModelConfig(_Model):
    """An image tokenizer: its input's channels. Image kinds come first, so a backbone block
    without `kind` is resnet2d."""
    causal: ClassVar[bool] = False      # images have no time axis to be causal in
    modality: str = "image"
    image: ImageConfig = field(default_factory=ImageConfig)
    backbone: ResNet2dConfig | ConvNeXtConfig | ViTConfig | ResNet1dConfig = field(default_factory=ResNet2dConfig)

    # (C, H, W) in [-1, 1]: two spatial axes, already unit scale.
    spatial_dims: ClassVar[int] = 2
    norm_init: ClassVar[tuple[float, float]] = (0.0, 1.0)

    @property
    def input_channels(self) -> int:
        return self.image.channels

    def input_shape_text(self) -> str:
        return f"an image (C={self.image.channels}, H, W) or (B, C, H, W)"

    def validate(self) -> None:
        super().validate()
        self.image.validate()
        check(self.refiner is None or self.refiner.norm != "frame", "model.refiner.norm",
               "'frame' applies to mel models only (images: 'clip' or null)")


# Tagged by `modality`: a mel model has no `image` block and an image model no `mel` or `causal`.
ModelConfig = MelModelConfig | ImageModelConfig
