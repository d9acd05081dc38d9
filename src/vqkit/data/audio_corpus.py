"""A folder of audio files -> log-mel clips in memory, with bad files skipped and counted.

Real corpora contain broken, silent and odd-length files; one of them must never end a training run
that has been loading for minutes, so every problem becomes a counted, logged skip. Only a corpus
with nothing usable at all is an error.
"""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..frontends.audio_io import AUDIO_EXTENSIONS, AudioError, find_audio_files, load_audio
from ..io.inputs import SkipLog, describe_skips, relative_paths, with_skips
from ..frontends.mel import MelFrontend

SILENCE_PEAK = 1e-4           # peak |amplitude| below this counts as digital silence
REASONS = ("unreadable", "non-finite", "silent", "too short", "too long")


@dataclass
class MelClip:
    path: Path
    mel: torch.Tensor          # (n_mels, frames) float32 log-mel
    num_samples: int           # audio length at the corpus sample rate


@dataclass
class MelCorpus:
    clips: list[MelClip]
    skipped: dict[str, int]    # reason -> count
    root: Path
    sample_rate: int = 22050   # rate the clips were decoded at (MelConfig's default)

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def total_seconds(self) -> float:
        return sum(c.num_samples for c in self.clips) / self.sample_rate

    def relative_paths(self) -> list[str]:
        """Paths relative to root ('/'-separated): stable keys for split_by_hash."""
        return relative_paths([c.path for c in self.clips], self.root)

    def summary(self) -> str:
        text = f"{len(self.clips)} clips, {self.total_seconds:.1f} s of audio"
        return with_skips(text, self.skipped)


@dataclass
class _Result:
    clip: MelClip | None = None
    reason: str | None = None
    detail: str = ""


def load_one_clip(path: Path, frontend: MelFrontend, min_seconds: float, max_seconds: float | None) -> _Result:
    sr = frontend.cfg.sample_rate
    try:
        audio = load_audio(path, sr)
    except AudioError as e:
        return _Result(reason="non-finite" if e.reason == "non-finite" else "unreadable", detail=str(e))
    except Exception as e:  # anything else a decoder throws still must not end the run
        return _Result(reason="unreadable", detail=f"{path}: {type(e).__name__}: {e}")
    seconds = audio.shape[0] / sr
    if seconds < min_seconds:
        return _Result(reason="too short", detail=f"{path}: {seconds:.2f} s < min_seconds={min_seconds}")
    if max_seconds is not None and seconds > max_seconds:
        return _Result(reason="too long", detail=f"{path}: {seconds:.1f} s > max_seconds={max_seconds}")
    peak = float(np.abs(audio).max())
    if peak < SILENCE_PEAK:
        return _Result(reason="silent", detail=f"{path}: silent (peak {peak:.1e} < {SILENCE_PEAK:g})")
    try:
        with torch.no_grad():
            mel = frontend(torch.from_numpy(audio)).float().contiguous()
    except ValueError as e:  # shorter than one STFT window
        return _Result(reason="too short", detail=f"{path}: {e}")
    if not torch.isfinite(mel).all():
        return _Result(reason="non-finite", detail=f"{path}: log-mel has non-finite values")
    return _Result(clip=MelClip(path=path, mel=mel, num_samples=int(audio.shape[0])))


def load_mel_corpus(root: str | Path, frontend: MelFrontend, min_seconds: float = 0.3,
                    max_seconds: float | None = None, files: Sequence[str | Path] | None = None,
                    log: Callable[[str], None] = print, workers: int = 2) -> MelCorpus:
    """Load every audio file under `root` (or just `files`) as a log-mel clip.

    Unreadable, non-finite, silent, too short and too long files are skipped and counted by reason.
    Raises AudioError when no file is usable. Clip order follows the (sorted) file order.
    """
    root = Path(root)
    paths = [Path(p) for p in files] if files is not None else find_audio_files(root)
    if not paths:
        raise AudioError(f"{root}: no usable audio: no files with extensions "
                         f"{', '.join(AUDIO_EXTENSIONS)} found", reason="empty")

    def job(p: Path) -> _Result:
        return load_one_clip(p, frontend, min_seconds, max_seconds)

    # Decoders, soxr and torch release the GIL, so threads overlap well; map() keeps file order.
    if workers > 1 and len(paths) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(job, paths))
    else:
        results = [job(p) for p in paths]

    clips: list[MelClip] = []
    skips = SkipLog(log)
    for res in results:
        if res.clip is not None:
            clips.append(res.clip)
        else:
            skips.add(res.reason, res.detail)
    skipped = skips.close()

    if not clips:
        raise AudioError(f"{root}: no usable audio: found {len(paths)} audio files, all skipped "
                         f"({describe_skips(skipped)})", reason="empty")
    corpus = MelCorpus(clips=clips, skipped=skipped, root=root, sample_rate=frontend.cfg.sample_rate)
    log(f"{root}: {corpus.summary()}")
    return corpus


def _unit_hash(key: str) -> float:
    """sha1 of the key mapped to [0, 1): depends on nothing but the key itself."""
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:15], 16) / float(16 ** 15)


def split_by_hash(paths_relative: Sequence[str], valid_fraction: float) -> tuple[list[int], list[int]]:
    """Deterministic train/valid split of indices by the hash of each relative path.

    A file's side depends only on its own path, so adding files never moves existing ones. With at
    least two paths and valid_fraction > 0 both sides get at least one clip (then the clip with
    the lowest/highest hash is moved, which is still deterministic).
    """
    if not 0 <= valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    keys = [_unit_hash(str(p).replace("\\", "/")) for p in paths_relative]
    valid = {i for i, h in enumerate(keys) if h < valid_fraction}
    if valid_fraction > 0 and len(keys) >= 2:
        order = sorted(range(len(keys)), key=lambda i: (keys[i], i))
        if not valid:
            valid.add(order[0])
        elif len(valid) == len(keys):
            valid.discard(order[-1])
    train = [i for i in range(len(keys)) if i not in valid]
    return train, sorted(valid)
