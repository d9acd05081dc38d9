"""Audio files through a mel tokenizer in bounded memory, whatever their length.

    file -> tokens:  audio blocks -> mel frontend stream -> encoder stream
    tokens -> file:  decoder stream -> vocoder stream -> WAV written as it comes (one atomic write)
    file -> file:    the two chained, the output cropped to the input's frames

Causal models stream chunk by chunk, others window by window (models/streaming.py); either way the
tokens are those of encoding the whole file at once. Only the tokens are held whole (an hour at 86
tokens/s is 300k integers).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..frontends.audio_io import AudioError
from ..frontends.audio_stream import audio_blocks
from ..io.files import atomic_write
from .tokenizer import LONG_WINDOW

DECODE_CHUNK = 256   # tokens per decoder push


def mel_of_file(tok, path: str | Path, block_seconds: float = 20.0) -> Iterator[torch.Tensor]:
    """The file's log-mel (n_mels, t) pieces, as the frontend computes them from the whole signal."""
    fe = tok.frontend.stream()
    for block in audio_blocks(path, tok.config.model.mel.sample_rate, block_seconds):
        mel = fe.push(torch.from_numpy(block))
        if mel.shape[-1]:
            yield mel
    try:
        yield fe.flush()
    except ValueError as e:   # shorter than one STFT window
        raise AudioError(f"{path}: {e}", reason="too short") from None


@torch.no_grad()
def encode_file(tok, path: str | Path) -> torch.Tensor:
    """Tokens of an audio file: (T',) or (T', c)."""
    if not tok.bounded:   # a model that looks at the whole clip: one pass
        return tok.encode(whole_mel(tok, path))
    enc = tok.stream_encoder(LONG_WINDOW)
    return torch.cat([enc.push(m) for m in mel_of_file(tok, path)] + [enc.flush()], dim=0)


def whole_mel(tok, path: str | Path) -> torch.Tensor:
    """The whole file's log-mel in memory (models without a finite receptive field; batches)."""
    return torch.cat(list(mel_of_file(tok, path)), -1)


def _frames(tok, tokens: torch.Tensor, refined: bool, stages: int | None) -> Iterator[torch.Tensor]:
    if not tok.bounded:   # a model that looks at the whole clip: one pass
        yield tok.decode(tokens, refined, stages)
        return
    dec = tok.stream_decoder(refined, max(1, LONG_WINDOW // tok.downsample), stages)
    for i in range(0, tokens.shape[0], DECODE_CHUNK):
        yield dec.push(tokens[i: i + DECODE_CHUNK])
    yield dec.flush()


def write_wav(dst: str | Path, pieces: Iterator[torch.Tensor], vocoder, save_mel: Path | None = None) -> float:
    """Vocode a stream of log-mel pieces into `dst` (16-bit WAV) as they come; returns seconds."""
    import soundfile as sf

    voc = vocoder.stream()
    mels: list[np.ndarray] = []
    written = 0

    def write(tmp: str) -> None:
        nonlocal written
        with sf.SoundFile(tmp, "w", samplerate=vocoder.sample_rate, channels=1, subtype="PCM_16", format="WAV") as f:
            def put(audio: torch.Tensor) -> None:
                nonlocal written
                a = audio.detach().float().cpu().numpy()
                if not np.isfinite(a).all():
                    raise AudioError(f"{dst}: refusing to write non-finite samples", reason="non-finite")
                f.write(np.clip(a, -1.0, 1.0))
                written += a.size
            for mel in pieces:
                if save_mel is not None:
                    mels.append(mel.cpu().numpy())
                put(voc.push(mel))
            put(voc.flush())

    atomic_write(dst, write)
    if save_mel is not None:
        mel = np.concatenate(mels, -1) if mels else np.zeros((vocoder.mel_cfg.n_mels, 0), np.float32)
        atomic_write(save_mel, lambda tmp: np.save(tmp, mel, allow_pickle=False))
    return written / vocoder.sample_rate


def decode_to_wav(tok, tokens: torch.Tensor, vocoder, dst: str | Path, refined: bool = True,
                  save_mel: Path | None = None, stages: int | None = None) -> float:
    """Tokens -> WAV at dst; stages=k: from the first k stages of a residual quantiser's tokens."""
    return write_wav(dst, _frames(tok, tokens.long(), refined, stages), vocoder, save_mel)


@torch.no_grad()
def reconstruct_file(tok, src: str | Path, dst: str | Path, vocoder, refined: bool = True,
                     save_mel: Path | None = None, stages: int | None = None) -> float:
    """Audio file -> tokens -> audio file, streamed end to end; the output has the input's frames."""
    if not tok.bounded:   # a model that looks at the whole clip: one pass
        return write_wav(dst, iter([tok.reconstruct(whole_mel(tok, src), refined, stages)]), vocoder, save_mel)
    enc = tok.stream_encoder(LONG_WINDOW)
    dec = tok.stream_decoder(refined, max(1, LONG_WINDOW // tok.downsample), stages)

    def frames() -> Iterator[torch.Tensor]:
        seen = emitted = 0
        for mel in mel_of_file(tok, src):
            seen += mel.shape[-1]
            piece = dec.push(enc.push(mel))
            emitted += piece.shape[-1]
            yield piece
        for piece in (dec.push(enc.flush()), dec.flush()):
            # the last token is completed with silence: its frames past the input's end are dropped
            piece = piece[..., : max(0, seen - emitted)]
            emitted += piece.shape[-1]
            yield piece

    return write_wav(dst, frames(), vocoder, save_mel)
