"""Reading audio files block by block: memory bounded by the block, whatever the file's length.

The same decoders as `load_audio` (libsndfile first, FFmpeg through PyAV for everything else), the
same mono mix (channel mean) and the same resampler (soxr HQ, run as a stream: soxr's stream gives
exactly what its one-shot call gives). One difference, since a stream cannot know the file's peak in
advance: samples beyond full scale are clipped, where load_audio rescales the whole file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from .audio_io import _FFMPEG_ONLY, AudioError, _frame_to_float, decoder_message


def _soundfile_blocks(path: Path, block: int):
    import soundfile as sf

    f = sf.SoundFile(str(path))   # raises for formats libsndfile cannot read

    def blocks() -> Iterator[np.ndarray]:
        with f:
            while True:
                data = f.read(block, dtype="float32", always_2d=True)
                if not len(data):
                    return
                yield data.T

    return int(f.samplerate), blocks()


def _pyav_blocks(path: Path):
    import av

    container = av.open(str(path), mode="r")
    if not container.streams.audio:
        container.close()
        raise AudioError(f"{path}: not an audio file (FFmpeg reads it, but finds no audio stream)")
    stream = container.streams.audio[0]
    frames = container.decode(stream)
    first = next(frames, None)
    if first is None:
        container.close()
        raise AudioError(f"{path}: not an audio file (FFmpeg decodes no audio samples from it)")

    def blocks() -> Iterator[np.ndarray]:
        with container:
            yield _frame_to_float(first)
            for frame in frames:
                if frame.sample_rate != first.sample_rate:
                    raise AudioError(f"{path}: sample rate changes mid-stream ({first.sample_rate} -> "
                                     f"{frame.sample_rate} Hz)")
                yield _frame_to_float(frame)

    return int(first.sample_rate), blocks()


def _open(path: Path, block: int):
    sf_error = None
    if path.suffix.lower() not in _FFMPEG_ONLY:
        try:
            return _soundfile_blocks(path, block)
        except Exception as e:   # not for libsndfile: try FFmpeg
            sf_error = e
    try:
        return _pyav_blocks(path)
    except AudioError:
        raise
    except Exception as av_error:
        detail = f"FFmpeg: {decoder_message(av_error, path)}"
        if sf_error is not None:
            detail += f"; libsndfile: {decoder_message(sf_error, path)}"
        raise AudioError(f"{path}: cannot decode audio, corrupt or not an audio file ({detail})") from None


def audio_blocks(path: str | Path, sample_rate: int, block_seconds: float = 20.0) -> Iterator[np.ndarray]:
    """Yield `path` as float32 mono blocks at `sample_rate` in [-1, 1] (about block_seconds each).
    Raises AudioError naming the file for missing, undecodable, empty or non-finite audio."""
    import soxr

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)", reason="empty")
    rate, blocks = _open(path, max(1, int(block_seconds * sample_rate)))
    resampler = soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality="HQ") if rate != sample_rate else None
    samples = 0
    try:
        for data in blocks:
            if not np.isfinite(data).all():
                raise AudioError(f"{path}: {int((~np.isfinite(data)).sum())} non-finite samples (NaN or Inf) "
                                 f"after {samples / rate:.1f} s", reason="non-finite")
            samples += data.shape[-1]
            mono = data.mean(axis=0, dtype=np.float64).astype(np.float32) if data.shape[0] > 1 else data[0]
            out = resampler.resample_chunk(mono) if resampler is not None else mono
            if out.size:
                yield np.clip(out, -1.0, 1.0)
    except AudioError:
        raise
    except Exception as e:   # corrupt data part-way through a file
        raise AudioError(f"{path}: cannot decode audio after {samples / rate:.1f} s "
                         f"({decoder_message(e, path)})") from None
    if samples == 0:
        raise AudioError(f"{path}: zero-length audio (no samples)", reason="empty")
    if resampler is not None:
        tail = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
        if tail.size:
            yield np.clip(tail, -1.0, 1.0)
