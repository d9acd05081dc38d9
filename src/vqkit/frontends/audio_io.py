"""Reading and writing audio files robustly.

`load_audio` tries libsndfile (soundfile) first because it is fast and exact for WAV/FLAC/OGG, then
falls back to FFmpeg through PyAV for everything else (mp3, m4a, aac, opus, G.722, ...). Every
failure becomes an AudioError that names the file, so a bad file in a large corpus can be found.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io.inputs import InputError, decoder_message, find_files
from ..io.files import atomic_write

AUDIO_EXTENSIONS: tuple[str, ...] = (
    ".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aif", ".aiff", ".g722",
)


class AudioError(InputError):
    """An audio file that cannot be used. `reason` is a short machine-readable tag:
    "unreadable", "empty" or "non-finite" (or "not-a-directory" for find_audio_files)."""


def find_audio_files(root: str | Path) -> list[Path]:
    """All files under `root` (recursively) whose suffix is in AUDIO_EXTENSIONS, sorted."""
    return find_files(root, AUDIO_EXTENSIONS, "audio files", AudioError)


# ---- decoding ----------------------------------------------------------------------------------

def _read_soundfile(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    # float32 output: libsndfile scales integer PCM to [-1, 1) itself.
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return data.T, int(rate)  # (channels, samples)


# Full-scale value of each integer sample type FFmpeg can hand back.
_INT_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2.0 ** 31, np.dtype(np.int64): 2.0 ** 63}


def _frame_to_float(frame) -> np.ndarray:
    """One PyAV AudioFrame -> float32 (channels, samples)."""
    arr = frame.to_ndarray()
    channels = len(frame.layout.channels)  # nb_channels only exists in PyAV >= 13
    if not frame.format.is_planar:
        # Packed layouts come back as (1, samples * channels), interleaved.
        arr = arr.reshape(-1, channels).T
    if arr.dtype == np.uint8:  # u8 PCM is offset binary around 128
        return (arr.astype(np.float32) - 128.0) / 128.0
    if arr.dtype in _INT_SCALE:
        return (arr.astype(np.float64) / _INT_SCALE[arr.dtype]).astype(np.float32)
    return arr.astype(np.float32, copy=False)  # float formats are already in [-1, 1]


def _read_pyav(path: Path) -> tuple[np.ndarray, int]:
    import av

    chunks: list[np.ndarray] = []
    rate = None
    with av.open(str(path), mode="r") as container:
        if not container.streams.audio:
            raise AudioError(f"{path}: not an audio file (FFmpeg reads it, but finds no audio stream)")
        stream = container.streams.audio[0]
        for frame in container.decode(stream):
            if rate is None:
                rate = frame.sample_rate
            elif frame.sample_rate != rate:
                raise AudioError(f"{path}: sample rate changes mid-stream ({rate} -> {frame.sample_rate} Hz)")
            chunk = _frame_to_float(frame)
            if chunks and chunk.shape[0] != chunks[0].shape[0]:
                raise AudioError(f"{path}: channel count changes mid-stream")
            chunks.append(chunk)
    if not chunks:
        raise AudioError(f"{path}: zero-length audio (no samples decoded)", reason="empty")
    return np.concatenate(chunks, axis=1), int(rate)


# libsndfile never reads these; skipping the attempt saves time on large G.722/AAC corpora.
_FFMPEG_ONLY = {".g722", ".m4a", ".aac"}


def _decode(path: Path) -> tuple[np.ndarray, int]:
    sf_error: Exception | None = None
    if path.suffix.lower() not in _FFMPEG_ONLY:
        try:
            return _read_soundfile(path)
        except Exception as e:  # libsndfile cannot read it: try FFmpeg
            sf_error = e
    try:
        return _read_pyav(path)
    except AudioError as e:
        if e.reason == "empty" and sf_error is not None:
            # FFmpeg probes almost anything (text too) as some stream and decodes nothing from it;
            # with libsndfile refusing it as well, the file is not audio, not empty audio.
            raise AudioError(f"{path}: not an audio file (FFmpeg decodes no audio samples from it; libsndfile: "
                             f"{decoder_message(sf_error, path)})") from None
        raise
    except Exception as av_error:  # av.FFmpegError, OSError, ValueError, ...
        # FFmpeg first: libsndfile's message for unknown formats ("not a regular file") misleads.
        detail = f"FFmpeg: {decoder_message(av_error, path)}"
        if sf_error:
            detail += f"; libsndfile: {decoder_message(sf_error, path)}"
        raise AudioError(f"{path}: cannot decode audio, corrupt or not an audio file ({detail})") from None


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Mono float32 (samples,) from `orig_sr` to `target_sr` Hz with soxr (high quality): the
    resampler of load_audio (and, run as a stream, of audio_stream.audio_blocks)."""
    if orig_sr == target_sr:
        return audio
    import librosa

    return librosa.resample(audio, orig_sr=orig_sr, target_sr=target_sr, res_type="soxr_hq")


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Decode `path` to float32 mono at `sample_rate`, with values in [-1, 1].

    Channels are averaged; other rates are resampled with soxr (high quality). Raises AudioError
    for missing, unreadable, empty or non-finite audio.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)", reason="empty")
    data, rate = _decode(path)
    if data.size == 0 or data.shape[-1] == 0:
        raise AudioError(f"{path}: zero-length audio (no samples)", reason="empty")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioError(f"{path}: {bad} non-finite samples (NaN or Inf)", reason="non-finite")
    audio = data.mean(axis=0, dtype=np.float64).astype(np.float32) if data.shape[0] > 1 else data[0]
    if rate != sample_rate:
        audio = resample(audio, rate, sample_rate)
        if audio.size == 0:
            raise AudioError(f"{path}: too short to resample from {rate} to {sample_rate} Hz", reason="empty")
    peak = float(np.abs(audio).max())
    if peak > 1.0:
        # Float files (and resampler overshoot) can exceed full scale; rescaling keeps the waveform
        # shape where clipping would add distortion.
        audio = audio / peak
    return np.ascontiguousarray(audio, dtype=np.float32)


# ---- writing -----------------------------------------------------------------------------------

def save_wav(path: str | Path, audio, sample_rate: int) -> None:
    """Write mono (samples,) or (samples, channels) audio as 16-bit PCM WAV, atomically."""
    import soundfile as sf

    path = Path(path)
    if hasattr(audio, "detach"):  # torch tensor
        audio = audio.detach().float().cpu().numpy()
    audio = np.asarray(audio, dtype=np.float32)
    if not np.isfinite(audio).all():  # NaN would be written as silence or noise: refuse loudly
        raise AudioError(f"{path}: refusing to write non-finite samples", reason="non-finite")
    audio = np.clip(audio, -1.0, 1.0)
    atomic_write(path, lambda tmp: sf.write(tmp, audio, int(sample_rate), subtype="PCM_16", format="WAV"))
