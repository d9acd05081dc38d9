"""Typed configuration: dataclasses with working defaults, strict YAML load/save, dotted overrides.

Every key is either honoured or rejected: unknown keys, wrong types and out-of-range values raise
ConfigError naming the key (and the file, when there is one).
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PRESET_DIR = Path(__file__).parent / "presets"


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
class BackboneConfig:
    """ResNet-style encoder/decoder over time with mel bins as channels (MQGAN)."""
    kind: str = "resnet1d"
    channels: list[int] = field(default_factory=lambda: [64, 96])  # width of each stage
    blocks_per_stage: int = 1
    kernel_size: int = 5
    dropout: float = 0.0
    attention: bool = True          # channel + temporal attention inside each residual block
    mel_mixer: bool = True          # small 2D conv block over the (channels x time) map
    downsample: int = 1             # time downsampling factor: 1, 2 or 4 (fewer tokens per second)
    causal_decoder: bool = False    # decoder convolutions see only the past

    def validate(self) -> None:
        _check(self.kind == "resnet1d", "model.backbone.kind",
               f"unknown backbone {self.kind!r}; available: 'resnet1d'")
        _check(len(self.channels) >= 1 and all(c > 0 for c in self.channels),
               "model.backbone.channels", "needs at least one positive width")
        _check(self.blocks_per_stage >= 1, "model.backbone.blocks_per_stage", "must be >= 1")
        _check(self.kernel_size >= 1 and self.kernel_size % 2 == 1, "model.backbone.kernel_size",
               "must be a positive odd number")
        _check(0 <= self.dropout < 1, "model.backbone.dropout", "must be in [0, 1)")
        _check(self.downsample in (1, 2, 4), "model.backbone.downsample", "must be 1, 2 or 4")


@dataclass
class QuantizerConfig:
    kind: str = "fsq"
    levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])  # FSQ: 1000 codes

    def validate(self) -> None:
        _check(self.kind == "fsq", "model.quantizer.kind", f"unknown quantizer {self.kind!r}; available: 'fsq'")
        _check(len(self.levels) >= 1 and all(lv >= 2 for lv in self.levels),
               "model.quantizer.levels", "every level must be >= 2")


@dataclass
class RefinerConfig:
    """Small UNet that turns the decoder's draft into the refined output (a residual)."""
    enabled: bool = True
    mode: str = "isolated"          # "isolated": refined losses never reach the base model; "shared": reference
    base_channels: int = 16
    channel_mults: list[int] = field(default_factory=lambda: [1, 2, 4])
    hidden_bins: int | None = None  # decoder hidden -> this many extra "mel rows"; None = n_mels // 8

    def validate(self) -> None:
        _check(self.mode in ("isolated", "shared"), "model.refiner.mode", "must be 'isolated' or 'shared'")
        _check(self.base_channels > 0, "model.refiner.base_channels", "must be > 0")
        _check(len(self.channel_mults) >= 1 and all(m > 0 for m in self.channel_mults),
               "model.refiner.channel_mults", "needs at least one positive multiplier")
        _check(self.hidden_bins is None or self.hidden_bins >= 1, "model.refiner.hidden_bins", "must be >= 1")


@dataclass
class ModelConfig:
    mel: MelConfig = field(default_factory=MelConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    refiner: RefinerConfig = field(default_factory=RefinerConfig)

    def validate(self) -> None:
        self.mel.validate(); self.backbone.validate(); self.quantizer.validate(); self.refiner.validate()


@dataclass
class DiscriminatorConfig:
    """Two mel discriminators on the refined output: a 2D patch one and a multi-band one."""
    patch_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    bands: int = 4                  # multi-band discriminator: mel bins split into this many bands; 0 = off
    band_channels: list[int] = field(default_factory=lambda: [16, 32])

    def validate(self) -> None:
        _check(len(self.patch_channels) >= 1, "discriminator.patch_channels", "needs at least one layer")
        _check(self.bands >= 0, "discriminator.bands", "must be >= 0")
        _check(self.bands == 0 or len(self.band_channels) >= 1, "discriminator.band_channels",
               "needs at least one layer when bands > 0")


@dataclass
class LossConfig:
    draft_mse: float = 1.0          # MSE on the decoder draft (the only loss the base model sees in isolated mode)
    refined_mse: float = 2.0
    refined_l1: float = 0.0
    gan: float = 1.0                # generator adversarial weight (LSGAN)
    feature_matching: float = 0.0
    lecam: float = 0.1              # LeCam regulariser weight on the discriminator
    lecam_decay: float = 0.99
    gan_start_step: int = 200       # reconstruction-only warm-up before the GAN starts

    def validate(self) -> None:
        for name in ("draft_mse", "refined_mse", "refined_l1", "gan", "feature_matching", "lecam"):
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
    valid_fraction: float = 0.05    # held out by file-name hash when no --valid-data is given
    num_workers: int = 0

    def validate(self) -> None:
        _check(self.segment_frames >= 8, "data.segment_frames", "must be >= 8")
        _check(self.min_seconds >= 0, "data.min_seconds", "must be >= 0")
        _check(0 <= self.valid_fraction < 1, "data.valid_fraction", "must be in [0, 1)")
        _check(self.num_workers >= 0, "data.num_workers", "must be >= 0")


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 16
    seed: int = 0
    log_every: int = 25
    eval_every: int = 250           # held-out loss + reconstruction samples
    save_every: int = 250
    keep_last: int = 2              # checkpoints kept (older ones deleted after a successful save)
    precision: str = "fp32"         # "fp32" or "bf16" (autocast; the quantiser stays float32)
    device: str = "auto"            # "auto", "cpu" or "cuda"
    eval_clips: int = 8
    max_nonfinite_steps: int = 20   # consecutive skipped (NaN/Inf) steps before training stops

    def validate(self) -> None:
        _check(self.steps >= 1, "train.steps", "must be >= 1")
        _check(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        for name in ("log_every", "eval_every", "save_every", "keep_last", "eval_clips", "max_nonfinite_steps"):
            _check(getattr(self, name) >= 1, f"train.{name}", "must be >= 1")
        _check(self.precision in ("fp32", "bf16"), "train.precision", "must be 'fp32' or 'bf16'")
        _check(self.device in ("auto", "cpu", "cuda"), "train.device", "must be 'auto', 'cpu' or 'cuda'")


@dataclass
class Config:
    name: str = "mqgan-refiner"
    model: ModelConfig = field(default_factory=ModelConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> "Config":
        self.model.validate(); self.discriminator.validate(); self.loss.validate()
        self.optim.validate(); self.data.validate(); self.train.validate()
        _check(self.discriminator.bands <= self.model.mel.n_mels, "discriminator.bands",
               f"cannot split {self.model.mel.n_mels} mel bins into {self.discriminator.bands} bands")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


# ---- dict <-> dataclass, strict -------------------------------------------------------------

def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass `cls` from a plain dict, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"{where or 'config'}: keys must be names, got {bad[0]!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where + '.' if where else ''}{unknown[0]}: unknown key "
                          f"(valid keys here: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        number = None
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:   # strings too: YAML 1.1 reads 3e-4 (no dot) as a string
                number = float(value)
            except (ValueError, OverflowError):
                pass
        if number is None or not math.isfinite(number):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (UTF-8) file") from None
    except Exception as e:  # YAMLError, and the ValueError/KeyError/... of tags like !!int abc
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def parse_overrides(overrides: list[str]) -> dict:
    """['train.steps=10', 'model.refiner.mode=shared'] -> nested dict (values parsed as YAML)."""
    nested: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.steps=100")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        except Exception as e:  # tags such as !!int abc raise ValueError, KeyError, ...
            raise ConfigError(f"override {item!r}: cannot read the value ({e})") from None
        node = nested
        parts = key.strip().split(".")
        for i, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {'.'.join(parts[:i + 1])} was already set to a value")
        if isinstance(node.get(parts[-1]), dict):
            raise ConfigError(f"override {item!r}: {key} was already given nested keys")
        node[parts[-1]] = value
    return nested


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_config(preset: str | None = None, path: str | Path | None = None,
                overrides: list[str] | None = None) -> Config:
    """Defaults <- preset <- YAML file <- overrides, validated."""
    data: dict = {}
    if preset is not None:
        p = PRESET_DIR / f"{preset}.yaml"
        if not p.exists():
            raise ConfigError(f"unknown preset {preset!r}; available: {', '.join(available_presets())}")
        data = _merge(data, _read_yaml(p))
    if path is not None:
        data = _merge(data, _read_yaml(Path(path)))
    if overrides:
        data = _merge(data, parse_overrides(overrides))
    where = str(path) if path is not None else (f"preset {preset}" if preset else "")
    try:
        cfg = from_dict(Config, data)
        return cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}" if where else str(e)) from None


def config_from_dict(data: dict, where: str = "") -> Config:
    try:
        return from_dict(Config, data).validate()
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}" if where else str(e)) from None


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
