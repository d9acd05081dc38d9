"""The one tokenizer class: frontend + encoder + quantiser + decoder + optional refiner.

    log-mel -> normalise -> encoder -> quantiser -> decoder -> draft -> refiner -> refined
                                          |
                                        tokens

`forward` works in normalised units (what the losses see); `encode` / `decode` take and return
log-mel in natural units. A checkpoint directory holding `config.yaml` + `model.safetensors` is all
that inference needs; loading it never unpickles.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import Config, ConfigError, config_from_dict, save_config
from ..frontends.mel import MelFrontend
from ..quantizers import build_quantizer
from .backbones import build_backbone
from .refiner import MelRefiner

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.yaml"


@dataclass
class TokenizerOutput:
    target: torch.Tensor            # normalised input (B, n_mels, T)
    draft: torch.Tensor             # decoder output (B, n_mels, T)
    refined: torch.Tensor | None    # refiner output (B, n_mels, T), None without a refiner
    indices: torch.Tensor           # (B, T / downsample)
    quant_loss: torch.Tensor
    stats: dict[str, torch.Tensor]

    @property
    def output(self) -> torch.Tensor:
        return self.refined if self.refined is not None else self.draft


class Tokenizer(nn.Module):
    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        m = config.model
        self.frontend = MelFrontend(m.mel)
        n_mels = m.mel.n_mels
        # Per-bin mean and a global scale of the training data's log-mel: the model sees inputs of
        # unit scale (the reference's raw log-mel made a small model spend hundreds of steps on the mean).
        self.register_buffer("norm_mean", torch.full((n_mels,), -5.0))
        self.register_buffer("norm_std", torch.full((n_mels,), 2.0))
        self.quantizer = build_quantizer(m.quantizer)
        self.encoder, self.decoder = build_backbone(n_mels, self.quantizer.dim, m.backbone)
        self.refiner = (MelRefiner(n_mels, self.decoder.hidden_channels, m.refiner)
                        if m.refiner.enabled else None)
        self.downsample = m.backbone.downsample
        self._id: str | None = None   # cached tokenizer_id of loaded (fixed) weights

    # ---- units ---------------------------------------------------------------------------
    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.norm_mean.copy_(mean.to(self.norm_mean))
        self.norm_std.copy_(std.to(self.norm_std).clamp(min=1e-3))

    def normalize(self, log_mel: torch.Tensor) -> torch.Tensor:
        return (log_mel - self.norm_mean[:, None]) / self.norm_std[:, None]

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.norm_std[:, None] + self.norm_mean[:, None]

    # ---- model ---------------------------------------------------------------------------
    def forward(self, log_mel: torch.Tensor, mask: torch.Tensor | None = None) -> TokenizerOutput:
        """log_mel (B, n_mels, T) in natural units, T a multiple of `downsample`; mask (B, T) marks
        real (1) vs padded (0) frames and only affects the usage statistics."""
        target = self.normalize(log_mel)
        z = self.encoder(target)
        token_mask = mask[:, :: self.downsample] if mask is not None else None
        q = self.quantizer(z, token_mask)
        draft, hidden = self.decoder(q.z_q)
        refined = self.refiner(draft, hidden) if self.refiner is not None else None
        return TokenizerOutput(target, draft, refined, q.indices, q.loss, q.stats)

    def _pad_to_multiple(self, log_mel: torch.Tensor) -> torch.Tensor:
        extra = (-log_mel.shape[-1]) % self.downsample
        if extra:
            log_mel = torch.nn.functional.pad(log_mel, (0, extra), value=self.frontend.silence_level)
        return log_mel

    @torch.no_grad()
    def encode(self, log_mel: torch.Tensor) -> torch.Tensor:
        """log-mel (n_mels, T) or (B, n_mels, T) -> integer tokens (T') or (B, T'), T' = ceil(T / downsample)."""
        single = log_mel.dim() == 2
        x = log_mel.unsqueeze(0) if single else log_mel
        if x.dim() != 3 or x.shape[1] != self.config.model.mel.n_mels:
            raise ValueError(f"expected log-mel of shape (n_mels={self.config.model.mel.n_mels}, T) "
                             f"or (B, n_mels, T), got {tuple(log_mel.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("log-mel contains NaN or Inf values")
        z = self.encoder(self.normalize(self._pad_to_multiple(x.to(self.norm_mean.device).float())))
        idx = self.quantizer(z).indices
        return idx[0] if single else idx

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, refined: bool = True) -> torch.Tensor:
        """Integer tokens (T') or (B, T') -> log-mel (n_mels, T' * downsample) or batched."""
        single = tokens.dim() == 1
        t = tokens.unsqueeze(0) if single else tokens
        draft, hidden = self.decoder(self.quantizer.indices_to_codes(t.to(self.norm_mean.device)))
        out = self.refiner(draft, hidden) if (refined and self.refiner is not None) else draft
        mel = self.denormalize(out)
        return mel[0] if single else mel

    @torch.no_grad()
    def reconstruct(self, log_mel: torch.Tensor, refined: bool = True) -> torch.Tensor:
        """encode + decode, cropped back to the input length."""
        return self.decode(self.encode(log_mel), refined)[..., : log_mel.shape[-1]]

    @property
    def tokenizer_id(self) -> str:
        """Hash of the current weights: tokens carry it, so they are never decoded by another model."""
        return self._id or state_hash(self.state_dict())

    # ---- rates ---------------------------------------------------------------------------
    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def tokens_per_second(self) -> float:
        return self.config.model.mel.frames_per_second / self.downsample

    @property
    def bits_per_second(self) -> float:
        return self.tokens_per_second * math.log2(self.codebook_size)

    # ---- files ---------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write config.yaml + model.safetensors into `directory` (created if needed)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_config(self.config, d / CONFIG_NAME)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(d / WEIGHTS_NAME), metadata={"format": "vqkit-tokenizer-v1"})
        return d

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "Tokenizer":
        """Load from a directory with config.yaml + model.safetensors, or from a training run
        directory (its latest checkpoint)."""
        d = resolve_checkpoint_dir(path)
        cfg_path = d / CONFIG_NAME
        try:
            raw = yaml.safe_load(cfg_path.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"{cfg_path}: not valid YAML: {e}") from None
        cfg = config_from_dict(raw, where=str(cfg_path))
        model = cls(cfg)
        weights = d / WEIGHTS_NAME
        try:
            state = load_file(str(weights), device=str(map_location))
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise ValueError(f"{weights}: cannot read weights ({e})") from None
        load_matching(model, state, f"{weights} (config {cfg_path})")
        model._id = model.tokenizer_id   # weights are fixed from here on: hash once
        return model.eval()


def load_matching(module: nn.Module, state: dict, where: str) -> None:
    """load_state_dict that turns any mismatch (keys or shapes) into one clear ValueError."""
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as e:   # shape mismatches raise even with strict=False
        detail = str(e).split("\n\t")[1] if "\n\t" in str(e) else str(e)
        raise ValueError(f"{where}: weights do not fit the configured model ({detail}); "
                         "is this a checkpoint of another model?") from None
    if missing or unexpected:
        raise ValueError(f"{where}: weights do not fit the configured model "
                         f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                         f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}); "
                         "is this a checkpoint of another model?")


def state_hash(state: dict[str, torch.Tensor]) -> str:
    """Identity of a set of weights: sha256 over names, dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()[:16]


def resolve_checkpoint_dir(path: str | Path) -> Path:
    """A directory with model.safetensors, or a run directory whose `checkpoints/latest` names one."""
    p = Path(path)
    if (p / WEIGHTS_NAME).is_file() and (p / CONFIG_NAME).is_file():
        return p
    latest = p / "checkpoints" / "latest"
    if latest.is_file():
        d = p / "checkpoints" / latest.read_text().strip()
        if (d / WEIGHTS_NAME).is_file():
            return d
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such checkpoint or run directory")
    raise FileNotFoundError(f"{p}: not a vqkit checkpoint (expected {CONFIG_NAME} + {WEIGHTS_NAME}, "
                            "or a run directory with checkpoints/latest)")
