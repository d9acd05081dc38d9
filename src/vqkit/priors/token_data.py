"""Token files written by `vqkit encode` -> a corpus (memory-mapped arrays) and prior training batches.

Every file of a corpus must come from one tokenizer (the prior models that tokenizer's indices);
a file from another tokenizer is an error, not a skip, because it usually means two runs' outputs
were mixed. Broken files (unreadable, no sidecar, wrong format or shape) are skipped and counted.

`TokenBatches[step]` is a pure function of (seed, step), as MelCropBatches is: a resumed run sees
exactly the batches an uninterrupted one would, and DataLoader workers can build any step alone.

Millions of small token files mean millions of memory maps (Linux allows ~65k per process):
`pack_tokens` writes a folder into one sharded store (vqkit.data.shards, a few large files), and
`TokenCorpus.from_folder` reads such a store as it reads a folder.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..data.shards import INDEX as STORE_INDEX
from ..data.step_batches import StepBatches
from ..io.inputs import SkipLog, describe_skips, with_skips
from ..tokens_io import TokenFileError, load_tokens, sidecar_path

# Sidecars written before they recorded `spatial_axes` name only the modality.
SPATIAL_AXES = {"mel": 1, "image": 2}
TOKEN_STORE = "vqkit-token-store-v1"


def token_axes(meta: dict) -> int:
    """The number of spatial axes of a sidecar's tokens (1: a sequence in time; 2: an image grid)."""
    axes = meta.get("spatial_axes", SPATIAL_AXES.get(meta.get("modality")))
    if not isinstance(axes, int) or axes < 1:
        raise TokenFileError(f"the sidecar names neither spatial_axes nor a known modality "
                             f"(modality {meta.get('modality')!r}; expected mel or image)")
    return axes


def check_token_array(arr: np.ndarray, meta: dict) -> np.ndarray:
    """The array with a channel axis (mel (T, c), image (H, W, c)), checked against its sidecar:
    modality, axes, channels per position, codebook range. TokenFileError when they disagree."""
    modality, spatial = meta.get("modality"), token_axes(meta)
    c, k = meta.get("channels_per_position"), meta.get("codebook_size")
    if not isinstance(c, int) or c < 1 or not isinstance(k, int) or k < 2:
        raise TokenFileError(f"sidecar has no valid channels_per_position / codebook_size ({c!r}, {k!r})")
    axes = spatial + (1 if c > 1 else 0)
    if arr.ndim != axes or (c > 1 and arr.shape[-1] != c):
        raise TokenFileError(f"shape {arr.shape} does not fit {modality} tokens with {c} per position")
    if int(arr.min()) < 0 or int(arr.max()) >= k:
        raise TokenFileError(f"token ids out of range [{int(arr.min())}, {int(arr.max())}] for a codebook of {k}")
    return arr[..., None] if c == 1 else arr


@dataclass
class TokenCorpus:
    arrays: list[np.ndarray]         # (T, c) for mel, (H, W, c) for images; read-only memmaps
    paths: list[str]                 # relative to root, '/'-separated
    meta: dict                       # the sidecar of the first file (tokenizer id, codebook, ...)
    root: Path
    skipped: dict[str, int] = field(default_factory=dict)   # reason -> count
    labels: list[int] | None = None  # with class_folders: index into class_names per array
    class_names: list[str] = field(default_factory=list)

    @property
    def modality(self) -> str:
        return self.meta["modality"]

    @property
    def spatial_axes(self) -> int:
        return token_axes(self.meta)

    @property
    def codebook_size(self) -> int:
        return int(self.meta["codebook_size"])

    @property
    def channels(self) -> int:
        return int(self.meta["channels_per_position"])

    @property
    def tokenizer_id(self) -> str:
        return self.meta["tokenizer_id"]

    def __len__(self) -> int:
        return len(self.arrays)

    def subset(self, indices: list[int]) -> "TokenCorpus":
        """The files at `indices` (e.g. a held-out split); class names stay those of the whole corpus."""
        return TokenCorpus(arrays=[self.arrays[i] for i in indices], paths=[self.paths[i] for i in indices],
                           meta=self.meta, root=self.root, skipped=self.skipped,
                           labels=[self.labels[i] for i in indices] if self.labels is not None else None,
                           class_names=self.class_names)

    def summary(self) -> str:
        positions = sum(int(np.prod(a.shape[:-1])) for a in self.arrays)
        text = (f"{len(self.arrays)} {self.modality} token files, {positions} positions x {self.channels}, "
                f"codebook {self.codebook_size}, tokenizer {self.tokenizer_id}")
        if self.class_names:
            text += f", {len(self.class_names)} classes"
        return with_skips(text, self.skipped)

    @classmethod
    def from_folder(cls, folder: str | Path, tokenizer_id: str | None = None, class_folders: bool = False,
                    log: Callable[[str], None] = print) -> "TokenCorpus":
        """Every `*.npy` under `folder` (sorted), memory-mapped. With class_folders, each file's label
        is the index of its top-level sub-folder among the sorted names of those holding usable files."""
        root = Path(folder)
        if not root.is_dir():
            raise ValueError(f"{root}: not a folder of token files")
        if (root / STORE_INDEX).is_file():   # a sharded store written by pack_tokens
            return cls.from_store(root, tokenizer_id, class_folders, log)
        files = sorted(p for p in root.rglob("*.npy") if p.is_file())
        arrays, rel_paths, skips = [], [], SkipLog(log)
        meta: dict | None = None
        first: str = ""
        for path in files:
            rel = path.relative_to(root).as_posix()
            if class_folders and "/" not in rel:
                skips.add("not in a class folder", f"{path}: class_folders needs <class>/<file>.npy")
                continue
            try:
                arr, file_meta = load_tokens(path, mmap=True)
            except TokenFileError as e:   # its messages name the file
                missing_sidecar = not sidecar_path(path).exists()
                skips.add("no sidecar" if missing_sidecar else "unreadable", str(e))
                continue
            try:
                arr = check_token_array(arr, file_meta)
            except TokenFileError as e:
                skips.add("does not fit its sidecar", f"{path}: {e}")
                continue
            file_id = file_meta.get("tokenizer_id")
            expected = tokenizer_id if tokenizer_id is not None else (meta or {}).get("tokenizer_id")
            if expected is not None and file_id != expected:
                source = "the given tokenizer" if tokenizer_id is not None else f"{first} (the first file)"
                raise TokenFileError(f"{path}: made by tokenizer {file_id}, but {source} is {expected}; "
                                     f"a prior models one tokenizer's tokens, keep each tokenizer's in its own folder")
            if meta is None:
                meta, first = file_meta, rel
            arrays.append(arr)
            rel_paths.append(rel)
        skipped = skips.close()
        if not arrays:
            detail = f"all {len(files)} skipped ({describe_skips(skipped)})" if files else "no .npy files found"
            raise ValueError(f"{root}: no usable token files: {detail}")
        labels, class_names = None, []
        if class_folders:
            tops = [p.split("/", 1)[0] for p in rel_paths]
            class_names = sorted(set(tops))
            index = {name: i for i, name in enumerate(class_names)}
            labels = [index[t] for t in tops]
        corpus = cls(arrays=arrays, paths=rel_paths, meta=meta, root=root, skipped=skipped, labels=labels,
                     class_names=class_names)
        log(f"{root}: {corpus.summary()}")
        return corpus


    @classmethod
    def from_store(cls, directory: Path, tokenizer_id: str | None, class_folders: bool,
                   log: Callable[[str], None]) -> "TokenCorpus":
        """A store written by pack_tokens: the same corpus, with one memory map per shard."""
        from ..data.shards import ShardedArrays

        store = ShardedArrays.open(directory)
        meta, paths = store.meta.get("sidecar"), list(store.keys)
        if not isinstance(meta, dict) or store.meta.get("format") != TOKEN_STORE:
            raise TokenFileError(f"{directory}: a sharded store, but not of vqkit tokens (no {TOKEN_STORE} meta)")
        if tokenizer_id is not None and meta.get("tokenizer_id") != tokenizer_id:
            raise TokenFileError(f"{directory}: made by tokenizer {meta.get('tokenizer_id')}, but the given "
                                 f"tokenizer is {tokenizer_id}")
        labels, class_names = None, []
        if class_folders:
            if any("/" not in p for p in paths):
                raise ValueError(f"{directory}: class_folders needs <class>/<file> paths; this store has files "
                                 "outside class folders")
            class_names = sorted({p.split("/", 1)[0] for p in paths})
            labels = [class_names.index(p.split("/", 1)[0]) for p in paths]
        corpus = cls(arrays=list(store), paths=paths, meta=meta, root=Path(directory),
                     skipped=dict(store.meta.get("skipped", {})), labels=labels, class_names=class_names)
        log(f"{directory}: {corpus.summary()} (sharded store)")
        return corpus


def pack_tokens(folder: str | Path, out_dir: str | Path, shard_bytes: int = 256 * 2**20,
                log: Callable[[str], None] = print) -> Path:
    """Write every usable token file under `folder` into one sharded store at `out_dir` (paths kept as
    keys, the shared sidecar and skip counts in its meta); returns out_dir."""
    from ..data.shards import ShardWriter

    corpus = TokenCorpus.from_folder(folder, log=log)
    dtype = np.int16 if corpus.codebook_size <= 2**15 else np.int32 if corpus.codebook_size <= 2**31 else np.int64
    meta = {"format": TOKEN_STORE, "sidecar": corpus.meta, "skipped": corpus.skipped}
    with ShardWriter(out_dir, dtype, shard_bytes=shard_bytes, meta=meta) as writer:
        for path, arr in zip(corpus.paths, corpus.arrays):
            writer.add(path, np.asarray(arr))
        writer.close()
    log(f"{len(corpus)} token files -> {out_dir}")
    return Path(out_dir)


class TokenBatches(StepBatches):
    """`batches[step]` -> (tokens (B, L, c) int64 in raster order, labels (B,) int64 or an empty tensor).

    mel: `length` positions cut at a random offset from a sequence drawn with probability proportional
    to its length (every position equally likely). image: a random (h, w) window of a grid drawn
    uniformly (each image one example, as image datasets are sampled). Sequences or grids smaller than
    the crop are left out, counted in `too_short`.
    """

    def __init__(self, corpus: TokenCorpus, length: int | tuple[int, int], batch_size: int, seed: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.corpus, self.batch_size, self.seed = corpus, batch_size, seed
        sequence = corpus.spatial_axes == 1   # tokens in time: crops of a length; grids: of a shape
        if sequence:
            if not isinstance(length, int) or length < 1:
                raise ValueError(f"{corpus.modality} tokens: length must be a positive number of positions, "
                                 f"got {length!r}")
            self.crop: tuple[int, ...] = (length,)
        else:
            if not (isinstance(length, (tuple, list)) and len(length) == corpus.spatial_axes and all(
                    isinstance(v, int) and v >= 1 for v in length)):
                raise ValueError(f"{corpus.modality} tokens: length must be a crop grid (h, w), got {length!r}")
            self.crop = tuple(length)
        fits = [i for i, a in enumerate(corpus.arrays) if all(s >= c for s, c in zip(a.shape, self.crop))]
        self.too_short = len(corpus.arrays) - len(fits)
        if not fits:
            biggest = max((a.shape[:-1] for a in corpus.arrays), key=lambda s: int(np.prod(s)))
            raise ValueError(f"{corpus.root}: no token file is at least {'x'.join(map(str, self.crop))} positions "
                             f"(the largest is {'x'.join(map(str, biggest))}); use a smaller crop")
        self.indices = fits
        sizes = [corpus.arrays[i].shape[0] if sequence else 1 for i in fits]   # long sequences drawn more often
        self.weights = torch.tensor(sizes, dtype=torch.float)
        self.count = len(fits)

    @property
    def positions(self) -> int:
        """L: positions per example."""
        return int(np.prod(self.crop))

    def batch(self, picks: list[int], g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.corpus.channels
        out = np.empty((self.batch_size, *self.crop, c), dtype=np.int64)
        labels = []
        for row, k in enumerate(picks):
            i = self.indices[k]
            arr = self.corpus.arrays[i]
            starts = [int(torch.randint(0, s - n + 1, (1,), generator=g)) for s, n in zip(arr.shape, self.crop)]
            out[row] = arr[tuple(slice(s, s + n) for s, n in zip(starts, self.crop))]   # reads only the crop
            if self.corpus.labels is not None:
                labels.append(self.corpus.labels[i])
        tokens = torch.from_numpy(out).view(self.batch_size, self.positions, c)
        return tokens, torch.tensor(labels, dtype=torch.long)
