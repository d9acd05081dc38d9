"""Log-mels computed once and reused across epochs and runs (the `data.feature_cache` option).

The first call decodes the folder file by file (a few files in flight, never the whole corpus in
memory) into a sharded store (data/shards.py) under `cache_dir/<key>/`. The key hashes everything
the log-mels depend on: the mel settings, min/max seconds, the store dtype, the vqkit version and
every file's (relative path, size, mtime_ns). Later calls with the same key open the store as
memory maps and decode nothing; a touched, added or removed file or a changed mel setting gives a
new key and a new store. Skip counts of the first build are kept in the store and reported again.
"""
from __future__ import annotations

import collections.abc
import dataclasses
import hashlib
import json
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from . import audio_corpus
from ..frontends.audio_io import AUDIO_EXTENSIONS, AudioError, find_audio_files
from ..frontends.mel import MelFrontend
from ..io.inputs import SkipLog, describe_skips, relative_paths, with_skips
from .shards import INDEX, ShardedArrays, ShardWriter

CACHE_VERSION = 1          # bump when what a cached item holds changes
DTYPES = ("float32", "float16")
# float16 halves disk and page cache. Values with |x| < 16 (log-mels lie in [log(log_clamp), ~3],
# i.e. [-11.5, 3] by default) round to within half a float16 step, at most 2**-8 = 0.0039; measured
# on the demo speech: mean |error| 9.9e-4, max 0.0039 (docs/data.md). float32 is exact.
FLOAT16_MAX_ERROR = 2.0 ** -8


@dataclass
class CachedMelCorpus:
    """What load_mel_corpus gives, with the log-mels as a memory-mapped store instead of clips."""
    mels: ShardedArrays        # (n_mels, frames) per clip, in file order; keys = relative paths
    skipped: dict[str, int]    # reason -> count, from the build
    root: Path
    sample_rate: int
    num_samples: list[int]     # audio length of each clip at the corpus sample rate
    reused: bool               # True when opened from an earlier build

    def __len__(self) -> int:
        return len(self.mels)

    @property
    def total_seconds(self) -> float:
        return sum(self.num_samples) / self.sample_rate

    def relative_paths(self) -> list[str]:
        """Paths relative to root ('/'-separated): stable keys for split_by_hash."""
        return self.mels.keys

    def summary(self) -> str:
        text = f"{len(self)} clips, {self.total_seconds:.1f} s of audio"
        return with_skips(text, self.skipped)


class AsTensors(collections.abc.Sequence):
    """Items of an array sequence as float32 tensors, converted when accessed (code that evaluates
    held-out clips whole takes tensors; only the clips it looks at are read)."""

    def __init__(self, arrays: Sequence[np.ndarray]):
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return AsTensors(self.arrays[i])
        return torch.from_numpy(np.array(self.arrays[i], dtype=np.float32))


def cache_key(paths: Sequence[Path], root: Path, frontend: MelFrontend, min_seconds: float,
              max_seconds: float | None, dtype: str) -> str:
    """Hex digest of everything the cached log-mels depend on."""
    from ..version import __version__

    stats = [p.stat() for p in paths]
    files = sorted((rel, st.st_size, st.st_mtime_ns) for rel, st in zip(relative_paths(paths, root), stats))
    blob = json.dumps({"cache_version": CACHE_VERSION, "vqkit": __version__, "dtype": dtype,
                       "mel": dataclasses.asdict(frontend.cfg), "min_seconds": float(min_seconds),
                       "max_seconds": None if max_seconds is None else float(max_seconds), "files": files},
                      sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:24]


def cached_mel_corpus(folder: str | Path, frontend: MelFrontend, cache_dir: str | Path,
                      min_seconds: float = 0.3, max_seconds: float | None = None,
                      log: Callable[[str], None] = print, dtype: str = "float32",
                      workers: int = 2) -> CachedMelCorpus:
    """The folder's usable clips as cached log-mels: built on first use, reopened afterwards.

    Skips and errors are those of load_mel_corpus (AudioError when no file is usable).
    """
    if dtype not in DTYPES:
        raise ValueError(f"feature cache dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    root = Path(folder)
    paths = find_audio_files(root)
    if not paths:
        raise AudioError(f"{root}: no usable audio: no files with extensions "
                         f"{', '.join(AUDIO_EXTENSIONS)} found", reason="empty")
    store_dir = Path(cache_dir).expanduser() / cache_key(paths, root, frontend, min_seconds, max_seconds, dtype)
    if (store_dir / INDEX).exists():
        corpus = _as_corpus(ShardedArrays.open(store_dir), root, reused=True)
        log(f"{root}: {corpus.summary()} (log-mels reused from {store_dir})")
        return corpus
    log(f"{root}: computing log-mels once into {store_dir}")
    store = _build(paths, root, frontend, store_dir, min_seconds, max_seconds, dtype, log, workers)
    corpus = _as_corpus(store, root, reused=False)
    log(f"{root}: {corpus.summary()} (log-mels cached in {store_dir}, {store.nbytes / 2**20:.1f} MiB)")
    return corpus


def _as_corpus(store: ShardedArrays, root: Path, reused: bool) -> CachedMelCorpus:
    meta = store.meta
    return CachedMelCorpus(mels=store, skipped=dict(meta.get("skipped", {})), root=root,
                           sample_rate=int(meta["sample_rate"]), num_samples=list(meta["num_samples"]),
                           reused=reused)


def _decoded_in_order(paths: Sequence[Path], job: Callable, workers: int) -> Iterator:
    """job(path) for each path, in order, with at most 2 * workers results held at a time."""
    if workers <= 1:
        yield from (job(p) for p in paths)
        return
    # Decoders, soxr and torch release the GIL, so threads overlap well (as in load_mel_corpus).
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for p in paths:
            pending.append(pool.submit(job, p))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _build(paths: Sequence[Path], root: Path, frontend: MelFrontend, store_dir: Path, min_seconds: float,
           max_seconds: float | None, dtype: str, log: Callable[[str], None], workers: int) -> ShardedArrays:
    def job(p: Path):
        # Looked up on the module each time, so tests can stand in for the decoder.
        return audio_corpus.load_one_clip(p, frontend, min_seconds, max_seconds)

    skips = SkipLog(log)
    num_samples: list[int] = []
    try:
        writer = ShardWriter(store_dir, dtype)
    except FileExistsError:   # another process (e.g. a second training rank) finished it meanwhile
        return ShardedArrays.open(store_dir)
    with writer:
        for rel, res in zip(relative_paths(paths, root), _decoded_in_order(paths, job, workers)):
            if res.clip is None:
                skips.add(res.reason, res.detail)
                continue
            writer.add(rel, res.clip.mel.numpy())
            num_samples.append(res.clip.num_samples)
        skipped = skips.close()
        if not num_samples:   # raising inside the with block discards the partial store
            raise AudioError(f"{root}: no usable audio: found {len(paths)} audio files, all skipped "
                             f"({describe_skips(skipped)})", reason="empty")
        writer.meta.update(kind="log-mel", root=str(root), mel=dataclasses.asdict(frontend.cfg),
                           min_seconds=min_seconds, max_seconds=max_seconds, skipped=skipped,
                           sample_rate=frontend.cfg.sample_rate, num_samples=num_samples)
        try:
            return writer.close()
        except FileExistsError:   # another process (e.g. a second training rank) finished it first
            log(f"{store_dir}: built by another process meanwhile; using that one")
            return ShardedArrays.open(store_dir)
