"""The one tokenizer class: frontend + encoder + quantiser + decoder + optional refiner, for every
modality. A mel spectrogram is a one-axis signal with mel bins as channels; an image has two axes.

    signal -> normalise -> encoder -> quantiser -> decoder -> draft -> refiner -> refined
                                         |
                                       tokens

`forward` works in normalised units (what the losses see); `encode` / `decode` take and return
signals in natural units: log-mel (n_mels, T) or images (C, H, W) in [-1, 1]. Token shapes: (T')
for mels, (h, w) for images, with a trailing channel axis (.., c) for multichannel quantisers (MoVQ
chunks, or the stages of a residual quantiser, which `decode(..., stages=k)` can cut to the first k).
A checkpoint directory holding `config.yaml` + `model.safetensors` is all inference needs; loading
it never unpickles.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import Config, ConfigError, config_from_dict, save_config
from ..config.io import read_yaml
from ..frontends import build_frontend
from ..io.weights import (CONFIG_NAME, WEIGHTS_NAME, check_fits, load_matching, read_weights,
                          resolve_checkpoint_dir, save_weights, state_hash)
from ..quantizers import build_quantizer
from .backbones import build_backbone
from .backbones2d import upgrade_keys
from .refiner import Refiner
from .token_rates import TokenRates


# Mels longer than this many frames (~95 s at 86 frames/s) are encoded and decoded window by window
# (LONG_WINDOW frames plus the context the receptive field needs): bounded memory, identical tokens.
LONG_FRAMES = 8192
LONG_WINDOW = 2048


@dataclass
class TokenizerOutput:
    target: torch.Tensor            # normalised input (B, C, *spatial)
    draft: torch.Tensor             # decoder output, same shape
    refined: torch.Tensor | None    # refiner output, same shape; None without a refiner
    indices: torch.Tensor           # (B, *spatial / downsample[, c])
    quant_loss: torch.Tensor
    stats: dict[str, torch.Tensor]

    @property
    def output(self) -> torch.Tensor:
        return self.refined if self.refined is not None else self.draft


class Tokenizer(TokenRates, nn.Module):   # rates, bits and token grids: models/token_rates.py
    def __init__(self, config: Config):
        super().__init__()
        self.config = config
        m = config.model
        self.modality = m.modality
        channels = m.input_channels
        self.frontend = build_frontend(m)
        self.spatial_dims = m.spatial_dims
        # Per-channel mean and a scale of the training data (mels: per-bin mean and a global scale of
        # the log-mel, so the model sees inputs of unit scale; the reference's raw log-mel made a small
        # model spend hundreds of steps on the mean). Images arrive in [-1, 1]: identity.
        mean, std = m.norm_init
        self.register_buffer("norm_mean", torch.full((channels,), mean))
        self.register_buffer("norm_std", torch.full((channels,), std))
        self.quantizer = build_quantizer(m.quantizer)
        self.encoder, self.decoder = build_backbone(channels, self.quantizer.dim, m.backbone, m.causal)
        self.refiner = (Refiner(channels, self.decoder.hidden_channels, m.refiner, layout=m.modality,
                                causal=m.causal) if m.refiner is not None else None)
        self.downsample = m.backbone.downsample
        self.tokens_per_position = self.quantizer.tokens_per_position
        self._id: str | None = None   # cached tokenizer_id of loaded (fixed) weights
        self._time_context = None      # cached receptive field, or why there is none (architecture only)

    # ---- units ---------------------------------------------------------------------------
    def _per_channel(self, v: torch.Tensor) -> torch.Tensor:
        return v.view(-1, *([1] * self.spatial_dims))

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.norm_mean.copy_(mean.to(self.norm_mean))
        self.norm_std.copy_(std.to(self.norm_std).clamp(min=1e-3))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self._per_channel(self.norm_mean)) / self._per_channel(self.norm_std)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self._per_channel(self.norm_std) + self._per_channel(self.norm_mean)

    # ---- model ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> TokenizerOutput:
        """x (B, C, *spatial) in natural units, spatial sizes multiples of `downsample`; mask (B, T)
        marks real (1) vs padded (0) mel frames and only affects the usage statistics."""
        target = self.normalize(x)
        z = self.encoder(target)
        token_mask = mask[:, :: self.downsample] if (mask is not None and self.spatial_dims == 1) else None
        q = self.quantizer(z, token_mask)
        draft, hidden = self.decoder(q.z_q)
        refined = self.refiner(draft, hidden) if self.refiner is not None else None
        return TokenizerOutput(target, draft, refined, q.indices, q.loss, q.stats)

    def pad_to_multiple(self, x: torch.Tensor) -> torch.Tensor:
        """Pad the spatial axes up to multiples of `downsample` (mels with silence, images by edge
        replication); decode + crop returns the original size."""
        pads = []
        for size in reversed(x.shape[2:]):
            pads += [0, (-size) % self.downsample]
        if not any(pads):
            return x
        if self.frontend is not None:
            return torch.nn.functional.pad(x, pads, value=self.frontend.silence_level)
        return torch.nn.functional.pad(x, pads, mode="replicate")

    def _batched(self, x: torch.Tensor, allow_empty: bool = False) -> tuple[torch.Tensor, bool]:
        m = self.config.model
        single = x.dim() == 1 + self.spatial_dims
        xb = x.unsqueeze(0) if single else x
        if xb.dim() != 2 + self.spatial_dims or xb.shape[1] != m.input_channels:
            raise ValueError(f"expected {m.input_shape_text()}, got {tuple(x.shape)}")
        if not torch.isfinite(xb).all():
            raise ValueError("input contains NaN or Inf values")
        if not allow_empty and 0 in xb.shape[2:]:
            raise ValueError(f"empty input, shape {tuple(x.shape)}")
        return xb.to(self.norm_mean.device).float(), single

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Signal (C, *spatial) or batched -> integer tokens (*spatial / downsample[, c]), batched likewise."""
        xb, single = self._batched(x)
        if self._long(xb.shape[-1]):
            enc = self.stream_encoder(LONG_WINDOW)
            idx = torch.cat([enc.push(xb), enc.flush()], dim=1)
        else:
            idx = self._encode_clip(xb)
        return idx[0] if single else idx

    def _encode_clip(self, xb: torch.Tensor) -> torch.Tensor:
        return self.quantizer.indices(self.encoder(self.normalize(self.pad_to_multiple(xb))))

    def _long(self, frames: int) -> bool:
        """Mels longer than LONG_FRAMES go window by window (bounded memory, the same result), unless
        the model looks at the whole clip."""
        return self.spatial_dims == 1 and frames > LONG_FRAMES and self.bounded

    @property
    def bounded(self) -> bool:
        """A finite receptive field (it streams, windows give whole-clip results). False for mel models
        saved before vqkit 0.2, whose channel attention and refiner statistics span the whole clip."""
        from .time_context import UnboundedContext

        try:
            return self.time_context is not None
        except UnboundedContext:
            return False

    @property
    def token_dims(self) -> int:
        """Axes of one example's tokens: spatial axes, plus one for multichannel quantisers."""
        return self.spatial_dims + (1 if self.tokens_per_position > 1 else 0)

    def check_stages(self, stages: int | None, name: str = "stages") -> None:
        """Refuse a `stages` that this tokenizer cannot decode from (None: every token, always fine);
        the message names it as `name` (the command line: --stages)."""
        if stages is None:
            return
        if self.quantizer.stages is None:
            raise ValueError(f"{name}={stages!r}: decoding from the first k stages needs a residual quantiser "
                             f"(model.quantizer.kind: rfsq); this tokenizer's is "
                             f"{self.config.model.quantizer.kind!r}, which has no stages")
        self.quantizer.check_stages(stages, name)

    def check_token_shape(self, tokens: torch.Tensor, batched: bool) -> None:
        """Refuse tokens whose axes do not fit: one example's, or a batch's (batched)."""
        if tokens.dim() != self.token_dims + batched or (self.tokens_per_position > 1
                                                         and tokens.shape[-1] != self.tokens_per_position):
            raise ValueError(f"tokens of shape {tuple(tokens.shape)} do not fit this tokenizer "
                             f"({self.token_dims} axes per example, {self.tokens_per_position} per position)")

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, refined: bool = True, stages: int | None = None) -> torch.Tensor:
        """Integer tokens, one example or batched -> signal (C, *spatial * downsample) or batched.
        stages=k (residual quantisers): decode from the sum of the first k stage codes only; the
        tokens still hold every stage (the ids of later ones are checked, not used)."""
        self.check_stages(stages)
        single = tokens.dim() == self.token_dims
        self.check_token_shape(tokens, batched=not single)
        t = tokens.unsqueeze(0) if single else tokens
        if self._long(t.shape[1] * self.downsample):
            dec = self.stream_decoder(refined, LONG_WINDOW // self.downsample, stages)
            y = torch.cat([dec.push(t), dec.flush()], dim=-1)
        else:
            y = self._decode_clip(t, refined, stages)
        return y[0] if single else y

    def _decode_clip(self, t: torch.Tensor, refined: bool, stages: int | None = None,
                     with_draft: bool = False) -> torch.Tensor:
        """Tokens (B, ...) -> output (B, C, ...); with_draft: (B, 2, C, ...), the output and the draft
        from one decoder pass."""
        t = t.to(self.norm_mean.device)
        # only residual quantisers take `stages` (check_stages refused it for the others)
        z_q = self.quantizer.indices_to_codes(t) if stages is None else self.quantizer.indices_to_codes(t, stages)
        draft, hidden = self.decoder(z_q)
        out = self.refiner(draft, hidden) if (refined and self.refiner is not None) else draft
        return torch.stack([self.denormalize(out), self.denormalize(draft)], 1) if with_draft else self.denormalize(out)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, refined: bool = True, stages: int | None = None) -> torch.Tensor:
        """encode + decode (from the first `stages` stages, residual quantisers), cropped to the input size."""
        self.check_stages(stages)
        y = self.decode(self.encode(x), refined, stages)
        if self.spatial_dims == 1:
            return y[..., : x.shape[-1]]
        return y[..., : x.shape[-2], : x.shape[-1]]

    def encode_batch(self, signals, batch_frames: int | None = None, batch_images: int | None = None) -> list:
        """A list of signals of any lengths -> the list of their tokens, each equal to `encode(signal)`,
        computed in padded batches of at most `batch_frames` mel frames (or `batch_images` images of
        one size); models/batched.py says how the ends stay exact."""
        from . import batched

        return batched.encode_batch(self, signals, batch_frames, batch_images)

    def decode_batch(self, tokens, refined: bool = True, stages: int | None = None, batch_frames: int | None = None,
                     batch_images: int | None = None) -> list:
        """A list of token arrays -> the list of their signals, each equal to `decode(tokens, refined, stages)`."""
        from . import batched

        return batched.decode_batch(self, tokens, refined, stages, batch_frames, batch_images)

    # ---- audio in, audio out (models/waveforms.py) ----------------------------------------
    def encode_audio(self, waveform, sample_rate: int, lengths=None):
        """Mel tokenizers: waveform(s) in [-1, 1] at `sample_rate` Hz (resampled to the model's) ->
        tokens, as `vqkit encode` gives for the same audio in a WAV. (S,) -> (T'[, c]); a list -> a
        list; padded (B, S) + lengths (B,) -> (tokens (B, T'max[, c]) padded with -1, token lengths).

        >>> import torch, vqkit
        >>> tok = vqkit.Tokenizer(vqkit.load_config(preset="mqgan-refiner", overrides=[
        ...     "model.backbone.channels=[16]", "model.refiner.base_channels=4", "model.refiner.channel_mults=[1]"]))
        >>> tok.encode_audio(torch.zeros(22050), 22050).shape          # 1 s at 22.05 kHz: 86 frames
        torch.Size([86])
        >>> [t.shape[0] for t in tok.encode_audio([torch.zeros(16000), torch.zeros(8000)], 16000)]
        [86, 43]
        """
        from .waveforms import encode_audio

        return encode_audio(self, waveform, sample_rate, lengths)

    def decode_audio(self, tokens, lengths=None, *, vocoder="auto", refined: bool = True, stages: int | None = None):
        """Mel tokenizers: tokens -> (waveform (S,), sample_rate) through a vocoder ("auto", "hifigan",
        "griffin-lim" as --vocoder, or a Vocoder); a list -> (list, sample_rate); padded tokens + token
        lengths -> (audio (B, Smax), lengths (B,), sample_rate). stages=k as in `decode`.

        >>> import torch, vqkit
        >>> tok = vqkit.Tokenizer(vqkit.load_config(preset="mqgan-refiner", overrides=[
        ...     "model.backbone.channels=[16]", "model.refiner.base_channels=4", "model.refiner.channel_mults=[1]"]))
        >>> audio, sr = tok.decode_audio(torch.zeros(10, dtype=torch.long), vocoder="griffin-lim")
        >>> audio.shape, audio.dtype, sr                               # 10 frames x hop 256
        (torch.Size([2560]), torch.float32, 22050)
        """
        from .waveforms import decode_audio

        return decode_audio(self, tokens, lengths, vocoder=vocoder, refined=refined, stages=stages)

    # ---- time: receptive field, streams, latency ----------------------------------------
    @property
    def time_context(self):
        """How far along time tokens and frames look (mels): measured on the model, once. A model
        without a finite field raises UnboundedContext, also once measured: the answer is kept."""
        if self._time_context is None:
            from .time_context import UnboundedContext, probe_time_context

            try:
                self._time_context = probe_time_context(self)
            except UnboundedContext as e:
                self._time_context = e
        if isinstance(self._time_context, Exception):
            raise self._time_context
        return self._time_context

    def stream_encoder(self, window_frames: int = 1024):
        """Log-mel frames in, tokens out, for input of any length (models/streaming.py): chunk by
        chunk for causal models, window by window (window_frames) otherwise; always equal to `encode`."""
        from .streaming import EncoderStream

        return EncoderStream(self, window_frames)

    def stream_decoder(self, refined: bool = True, window_tokens: int = 256, stages: int | None = None):
        """Tokens in, log-mel frames out, for any length; equal to `decode` (with the same `stages`)."""
        from .streaming import DecoderStream

        self.check_stages(stages)
        return DecoderStream(self, refined, window_tokens, stages)

    @property
    def latency_ms(self) -> float:
        """Algorithmic latency of audio -> tokens -> mel when streaming: the STFT window's right half
        and half a hop, plus the frames after a frame that its reconstruction needs."""
        hop, sr = self.config.model.mel.hop_length, self.config.model.mel.sample_rate
        samples = self.frontend.latency_samples + hop * self.time_context.lookahead_frames
        return 1000.0 * samples / sr

    @property
    def tokenizer_id(self) -> str:
        """Hash of the current weights: tokens carry it, so they are never decoded by another model."""
        return self._id or state_hash(self.state_dict())

    # ---- files ---------------------------------------------------------------------------
    def upgrade_state(self, state: dict) -> dict:
        """Names of tensors (or of their shapes) in checkpoints of earlier versions -> this model's;
        io.weights applies it wherever weights are checked or loaded into a tokenizer."""
        return upgrade_keys(state, self.config.model.backbone)   # no old name matches a resnet1d's tensors

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write config.yaml + model.safetensors into `directory` (created if needed)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_config(self.config, d / CONFIG_NAME)
        save_weights(self, d / WEIGHTS_NAME, "vqkit-tokenizer-v1")
        return d

    def push_to_hub(self, repo_id: str, *, license: str | None = None, data: str | None = None,
                    source: str | Path | None = None, token: str | bool | None = None, private: bool | None = None,
                    revision: str | None = None, commit_message: str | None = None, api=None):
        """Upload config.yaml + model.safetensors + a model card (README.md) to the Hugging Face Hub
        repo `repo_id` (created if needed) as one commit; models/hub_card.py writes the card, quoting
        the records of `source` (default: the folder this model was loaded from). -> CommitInfo."""
        from .hub_card import push_tokenizer

        return push_tokenizer(self, repo_id, source if source is not None else getattr(self, "_loaded_from", None),
                              license, data, token=token, private=private, revision=revision,
                              commit_message=commit_message, api=api)

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str | torch.device = "cpu", *,
                        revision: str | None = None, cache_dir: str | Path | None = None,
                        local_files_only: bool = False, token: str | bool | None = None) -> "Tokenizer":
        """Load from a directory with config.yaml + model.safetensors, from a training run directory
        (its latest checkpoint), or, where no such local path exists, from a Hugging Face Hub repo
        `namespace/name` at `revision` through the huggingface_hub cache (io/hub.py)."""
        d = resolve_checkpoint_dir(path, revision, cache_dir=cache_dir, local_files_only=local_files_only,
                                   token=token)
        cfg_path = d / CONFIG_NAME
        raw = read_yaml(cfg_path, what="checkpoint config")
        if not raw:   # saved configs are complete: an empty one would silently mean "defaults"
            raise ConfigError(f"{cfg_path}: empty config; a checkpoint's {CONFIG_NAME} describes its model")
        cfg = config_from_dict(raw, where=str(cfg_path), saved=True)
        weights = d / WEIGHTS_NAME
        article = "an" if cfg.model.modality[0] in "aeiou" else "a"
        where = f"{weights} (config {cfg_path}, {article} {cfg.model.modality} model)"
        with torch.device("meta"):   # allocates nothing: an edited config.yaml is refused before it can
            skeleton = cls(cfg)
        check_fits(skeleton, weights, where)
        model = cls(cfg)
        state = read_weights(weights, map_location)
        load_matching(model, state, where)
        bad = sorted(k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all())
        if bad:   # a diverged run's weights would decode every token to NaN
            raise ValueError(f"{weights}: weights contain NaN or Inf ({len(bad)} tensors, e.g. {bad[0]}); "
                             "did the run that saved them diverge?")
        model._id = model.tokenizer_id   # weights are fixed from here on: hash once
        model._loaded_from = d            # push_to_hub's model card reads the run's records there
        return model.eval()
