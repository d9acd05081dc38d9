"""Waveforms in, tokens out, and back: a mel tokenizer as a Python API (Tokenizer.encode_audio /
decode_audio call these).

    tokens = encode_audio(tok, waveform, sample_rate)                    # (S,) -> (T'[, c])
    tokens = encode_audio(tok, [w1, w2], sample_rate)                    # list -> list
    tokens, token_lengths = encode_audio(tok, padded, sample_rate, lengths)   # (B, S) -> (B, T'max[, c]), (B,)
    audio, sr = decode_audio(tok, tokens)                                # (T'[, c]) -> (S,) at the model's rate
    audio, sr = decode_audio(tok, [t1, t2])                              # list -> list
    audio, lengths, sr = decode_audio(tok, padded_tokens, token_lengths) # -> (B, Smax), (B,)

A waveform takes the path of `vqkit encode` on a WAV file: resampled to the model's rate by
load_audio's resampler when `sample_rate` differs, clipped to [-1, 1], the mel frontend, then
Tokenizer.encode. Its tokens are those of the command line, and each item of a batch gets the
tokens it gets alone: `_encode_mels` and `_decode_tokens` run them in padded batches
(Tokenizer.encode_batch / decode_batch), exact per item.

Example, with a tiny untrained tokenizer (shapes and lengths do not depend on the weights):

>>> import torch, vqkit
>>> from vqkit.models.waveforms import encode_audio, decode_audio
>>> tok = vqkit.Tokenizer(vqkit.load_config(preset="mqgan-refiner-21-rfsq", overrides=[
...     "model.backbone.channels=[16]", "model.refiner.base_channels=4", "model.refiner.channel_mults=[1]"]))
>>> tok.config.model.mel.sample_rate, tok.downsample, tok.stages
(22050, 4, 2)
>>> one_second = torch.sin(torch.arange(22050) / 8.0) / 2
>>> tokens = encode_audio(tok, one_second, 22050)     # 86 mel frames -> 22 positions x 2 stages
>>> tokens.shape, tokens.dtype
(torch.Size([22, 2]), torch.int64)
>>> padded, token_lengths = encode_audio(tok, torch.stack([one_second, one_second]), 22050, lengths=[22050, 11025])
>>> padded.shape, token_lengths.tolist()
(torch.Size([2, 22, 2]), [22, 11])
>>> bool((padded[1, :11] == encode_audio(tok, one_second[:11025], 22050)).all()), padded[1, 11:].unique().tolist()
(True, [-1])
>>> audio, lengths, sr = decode_audio(tok, padded, token_lengths, vocoder="griffin-lim", stages=1)
>>> audio.shape, lengths.tolist(), sr                 # 22 positions x 4 frames x 256 samples
(torch.Size([2, 22528]), [22528, 11264], 22050)
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..frontends.audio_io import resample
from ..vocoders import Vocoder, vocoder_for

PAD_TOKEN = -1                     # what padded token batches hold past each item's length
VOCODERS = ("auto", "hifigan", "griffin-lim")   # as the command line's --vocoder


# ---- waveforms -> tokens -----------------------------------------------------------------------

def encode_audio(tok, waveform, sample_rate: int, lengths=None):
    """Waveform(s) in [-1, 1] at `sample_rate` Hz -> integer tokens in [0, tok.codebook_size).

    waveform (S,) -> tokens (T'[, c]); a list of (S_i,) -> a list of (T'_i[, c]); a padded (B, S)
    batch with `lengths` (B,) samples -> (tokens (B, T'max[, c]) holding PAD_TOKEN (-1) past each
    item's end, token lengths (B,) int64 on the CPU). torch or numpy float input; tokens are int64 on
    the tokenizer's device. Raises ValueError naming the problem (and the item) for bad input."""
    _need_audio(tok, "encode_audio")
    rate = _sample_rate(sample_rate)
    items, form = _waveforms(waveform, lengths)
    mels = [_mel(tok, w, rate, _name("waveform", i, form)) for i, w in enumerate(items)]
    tokens = _encode_mels(tok, mels)
    if form == "one":
        return tokens[0]
    if form == "list":
        return tokens
    return _pad(tokens, PAD_TOKEN), torch.tensor([t.shape[0] for t in tokens], dtype=torch.int64)


def _encode_mels(tok, mels: list[torch.Tensor]) -> list[torch.Tensor]:
    """Log-mels (n_mels, T_i) -> tokens (T'_i[, c]), each as Tokenizer.encode gives it alone, in
    padded batches (models/batched.py)."""
    return tok.encode_batch(mels)


def _mel(tok, w: np.ndarray, rate: int, name: str) -> torch.Tensor:
    """One float32 waveform -> its log-mel, as `vqkit encode` of a WAV computes it."""
    if w.size == 0:
        raise ValueError(f"{name} is empty (0 samples)")
    bad = int((~np.isfinite(w)).sum())
    if bad:
        raise ValueError(f"{name} has {bad} non-finite samples (NaN or Inf)")
    mel_rate, given = tok.config.model.mel.sample_rate, w.size
    w = resample(w, rate, mel_rate)
    fe = tok.frontend
    if w.size <= fe.edge_pad:
        at = f"{w.size} samples at {mel_rate} Hz"
        if rate != mel_rate:
            at += f" (resampled from {given} at {rate} Hz)"
        raise ValueError(f"{name} is too short for one STFT window: {at}; this tokenizer's mel frontend "
                         f"needs more than {fe.edge_pad} samples at {mel_rate} Hz (n_fft={fe.cfg.n_fft})")
    w = np.clip(w, -1.0, 1.0)   # as the file path does (audio_stream.audio_blocks)
    return fe(torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32)).to(fe.filterbank.device))


def _waveforms(waveform, lengths) -> tuple[list[np.ndarray], str]:
    """(float32 1-D arrays, "one" | "list" | "padded")."""
    if isinstance(waveform, (list, tuple)):
        if lengths is not None:
            raise ValueError("lengths goes with a padded (B, S) waveform; a list of waveforms carries its own lengths")
        if not waveform:
            raise ValueError("no waveforms: the list is empty")
        hint = " (a list holds one array per waveform)"
        items = [_samples(w, f"waveform[{i}]", hint) for i, w in enumerate(waveform)]
        for i, w in enumerate(items):
            if w.ndim != 1:
                raise ValueError(f"waveform[{i}]: each waveform of a list is 1-D (samples,), got shape {w.shape}")
        return items, "list"
    w = _samples(waveform, "waveform")
    if w.ndim == 1:
        if lengths is not None:
            raise ValueError("lengths goes with a padded (B, S) waveform; a 1-D waveform is one clip of all its "
                             "samples")
        return [w], "one"
    if w.ndim != 2:
        raise ValueError(f"waveform: expected (samples,), a list of those, or a padded (B, samples) batch with "
                         f"lengths; got shape {w.shape}")
    if lengths is None:
        raise ValueError(f"a 2-D waveform {w.shape} is read as a padded batch (B, samples) and needs lengths= (the "
                         "samples of each row); pass a list for clips of their own lengths, and mix a "
                         "multichannel clip down to mono first (waveform.mean(0))")
    n = _lengths(lengths, w.shape[0], w.shape[1], "waveform", "samples")
    return [w[i, :k] for i, k in enumerate(n)], "padded"


def _samples(w, name: str, hint: str = "") -> np.ndarray:
    if isinstance(w, torch.Tensor):
        w = w.detach().cpu()
        if w.is_floating_point():
            w = w.float()
        w = w.numpy()
    elif not isinstance(w, np.ndarray):
        raise ValueError(f"{name}: expected a torch tensor or numpy array of samples, got {type(w).__name__}{hint}")
    if w.dtype.kind != "f":
        hint = " (integer PCM: divide by its full scale, e.g. x / 32768 for 16-bit)" if w.dtype.kind in "iu" else ""
        raise ValueError(f"{name}: samples must be floats in [-1, 1], got dtype {w.dtype}{hint}")
    return w.astype(np.float32, copy=False)


def _sample_rate(sample_rate) -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, float, np.integer, np.floating)) or \
            sample_rate <= 0 or int(sample_rate) != sample_rate:
        raise ValueError(f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}")
    return int(sample_rate)


# ---- tokens -> waveforms -----------------------------------------------------------------------

def decode_audio(tok, tokens, lengths=None, *, vocoder: str | Vocoder = "auto", refined: bool = True,
                 stages: int | None = None):
    """Tokens -> waveform(s) at the model's sample rate through a vocoder.

    tokens (T'[, c]) -> (audio (S,), sample_rate); a list -> (a list of (S_i,), sample_rate); padded
    tokens (B, T'max[, c]) with token `lengths` (B,) -> (audio (B, Smax) zero past each end, lengths
    (B,) int64 samples, sample_rate). S = T' x downsample x hop_length. Audio is float32 on the CPU.
    vocoder: "auto" (HiFi-GAN V1 when the mel settings are its own and its weights are installed,
    else Griffin-Lim), "hifigan", "griffin-lim" (as --vocoder) or a Vocoder. refined=False: the
    decoder's draft; stages=k: residual quantisers decode from their first k stages only."""
    _need_audio(tok, "decode_audio")
    tok.check_stages(stages)
    voc = _vocoder(tok, vocoder)
    items, form = _token_items(tok, tokens, lengths)
    audio = [voc(m).float().cpu() for m in _decode_tokens(tok, items, refined, stages)]
    if form == "one":
        return audio[0], voc.sample_rate
    if form == "list":
        return audio, voc.sample_rate
    return _pad(audio, 0.0), torch.tensor([a.shape[-1] for a in audio], dtype=torch.int64), voc.sample_rate


def _decode_tokens(tok, tokens: list[torch.Tensor], refined: bool = True,
                   stages: int | None = None) -> list[torch.Tensor]:
    """Tokens (T'_i[, c]) -> log-mels (n_mels, T'_i x downsample), each as Tokenizer.decode gives it
    alone, in padded batches (models/batched.py)."""
    return tok.decode_batch(tokens, refined, stages)


def _token_items(tok, tokens, lengths) -> tuple[list[torch.Tensor], str]:
    dims = tok.token_dims
    rest = f", {tok.tokens_per_position})" if tok.tokens_per_position > 1 else ")"   # the shape after T'
    shape = "(T'" + rest
    if isinstance(tokens, (list, tuple)):
        if lengths is not None:
            raise ValueError("lengths goes with padded (B, T'max) tokens; a list of token arrays carries its own "
                             "lengths")
        if not tokens:
            raise ValueError("no tokens: the list is empty")
        items = [_ids(t, f"tokens[{i}]") for i, t in enumerate(tokens)]
        for i, t in enumerate(items):
            if t.dim() != dims:
                raise ValueError(f"tokens[{i}]: each item of a list is {shape}, got shape {tuple(t.shape)}")
        form = "list"
    else:
        t = _ids(tokens, "tokens")
        if t.dim() == dims:
            if lengths is not None:
                raise ValueError(f"lengths goes with padded (B, T'max) tokens; tokens {shape} are one clip")
            items, form = [t], "one"
        elif t.dim() == dims + 1:
            if lengths is None:
                raise ValueError(f"tokens of shape {tuple(t.shape)} are read as a padded batch (B, T'max"
                                 f"{rest} and need lengths= (the token positions of each row); pass a list "
                                 "for items of their own lengths")
            n = _lengths(lengths, t.shape[0], t.shape[1], "tokens", "positions")
            items, form = [t[i, :k] for i, k in enumerate(n)], "padded"
        else:
            raise ValueError(f"tokens: expected {shape}, a list of those, or padded (B, T'max{rest} with "
                             f"lengths; got shape {tuple(t.shape)}")
    c, k = tok.tokens_per_position, tok.codebook_size
    for i, t in enumerate(items):
        name = "tokens" if form == "one" else f"tokens[{i}]"
        if t.shape[0] == 0:
            raise ValueError(f"{name} is empty (0 positions)")
        if c > 1 and t.shape[-1] != c:
            raise ValueError(f"{name}: this tokenizer has {c} tokens per position (last axis), got shape "
                             f"{tuple(t.shape)}")
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= k:
            pad = " (padding past lengths is ignored: is a length too long?)" if form == "padded" else ""
            raise ValueError(f"{name} holds ids outside [0, {k}) (min {lo}, max {hi}){pad}")
    return items, form


def _ids(t, name: str) -> torch.Tensor:
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(t)
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a torch tensor or numpy array of token ids, got {type(t).__name__}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{name}: token ids must be integers, got dtype {t.dtype}")
    return t.long()


def _vocoder(tok, vocoder) -> Vocoder:
    mel = tok.config.model.mel
    if isinstance(vocoder, Vocoder):
        theirs = vocoder.mel_cfg
        for key in ("sample_rate", "hop_length", "n_mels"):
            if getattr(theirs, key) != getattr(mel, key):
                raise ValueError(f"vocoder {vocoder.name!r} takes mels with {key}={getattr(theirs, key)}, "
                                 f"this tokenizer's have {key}={getattr(mel, key)}")
        return vocoder
    if vocoder not in VOCODERS:
        raise ValueError(f"vocoder must be one of {', '.join(map(repr, VOCODERS))} or a Vocoder, got {vocoder!r}")
    return vocoder_for(mel, prefer=vocoder, device=tok.norm_mean.device)


# ---- shared ------------------------------------------------------------------------------------

def _need_audio(tok, verb: str) -> None:
    if tok.frontend is None or tok.modality != "mel":
        raise ValueError(f"{verb} needs a mel (audio) tokenizer; this is {'an' if tok.modality[0] in 'aeiou' else 'a'} "
                         f"{tok.modality} tokenizer, which has no audio frontend (use encode / decode)")


def _name(what: str, i: int, form: str) -> str:
    return what if form == "one" else f"{what}[{i}]"


def _lengths(lengths, batch: int, longest: int, what: str, unit: str) -> list[int]:
    """Validated per-row lengths of a padded batch (B rows of `longest`)."""
    if isinstance(lengths, torch.Tensor):
        lengths = lengths.detach().cpu().numpy()
    elif not isinstance(lengths, (np.ndarray, Sequence)):
        raise ValueError(f"lengths: expected a sequence of {batch} integers, got {type(lengths).__name__}")
    if batch == 0:
        raise ValueError(f"no {what}: the batch has 0 rows")
    arr = np.asarray(lengths)
    if arr.ndim != 1 or arr.shape[0] != batch:
        got = arr.shape[0] if arr.ndim == 1 else f"shape {arr.shape}"
        raise ValueError(f"lengths: expected {batch} lengths, one per row of the {what} batch of shape "
                         f"({batch}, {longest}, ...), got {got}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"lengths must be whole numbers of {unit}, got dtype {arr.dtype}")
    for i, n in enumerate(arr.tolist()):
        if not 1 <= n <= longest:
            raise ValueError(f"lengths[{i}]={n} is outside 1..{longest}: the {what} batch has {longest} {unit} per row")
    return arr.tolist()


def _pad(items: list[torch.Tensor], value) -> torch.Tensor:
    """Stack along a new first axis, each padded with `value` to the longest (first axis for tokens,
    last axis = samples for audio: both are the items' axis 0)."""
    longest = max(x.shape[0] for x in items)
    out = items[0].new_full((len(items), longest, *items[0].shape[1:]), value)
    for i, x in enumerate(items):
        out[i, : x.shape[0]] = x
    return out
