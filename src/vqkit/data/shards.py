"""Many variable-shape arrays of one dtype in a few large files, read back as memory maps.

For stores larger than memory (cached log-mels, token stores): items are appended to shard files of
about `shard_bytes` each, and `index.json` says where each item lives. Reading maps the shards, so an
item costs no copy and only the pages actually touched are read.

Layout of a store directory:
    index.json          format + version, dtype, one column per item field (keys, shards, offsets,
                        shapes), the shard files with their byte sizes, and free-form `meta`
    shard-00000.bin     raw item bytes, each item starting at a multiple of ALIGN bytes
    shard-00001.bin     ...

A store is built in a hidden temp directory beside its final place and renamed into place only
after every shard and then index.json are written and synced: an interrupted build leaves nothing
that looks complete, and a directory without index.json is never read.
"""
from __future__ import annotations

import collections.abc
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..io.files import atomic_write, fsync_dir
from ..io.inputs import InputError

FORMAT = "vqkit-sharded-arrays"
VERSION = 1
INDEX = "index.json"
ALIGN = 64   # item offsets are multiples of this: aligned views for any dtype and for SIMD loads


class ShardStoreError(InputError):
    """A store directory that is missing, incomplete or inconsistent."""

    def __init__(self, directory: Path, problem: str):
        super().__init__(f"{directory}: {problem}", reason="corrupt")
        self.directory = directory


def _shard_name(i: int) -> str:
    return f"shard-{i:05d}.bin"


class ShardWriter:
    """Append arrays under unique keys; `close()` publishes the store and opens it for reading.

    Arrays are cast to the store's dtype ('same_kind' casts only: float32 -> float16 is allowed,
    float -> int is not). Use as a context manager to discard the partial store on an exception.
    """

    def __init__(self, directory: str | Path, dtype: Any, shard_bytes: int = 256 * 2**20,
                 meta: dict | None = None):
        self.directory = Path(directory)
        self.dtype = np.dtype(dtype)
        if self.dtype.hasobject or self.dtype.fields is not None:
            raise ValueError(f"{self.directory}: dtype {self.dtype} cannot be stored as raw bytes")
        if shard_bytes < 1:
            raise ValueError(f"shard_bytes must be >= 1, got {shard_bytes}")
        if (self.directory / INDEX).exists():
            raise FileExistsError(f"{self.directory}: a store already exists here")
        self.shard_bytes = shard_bytes
        self.meta = dict(meta or {})
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.directory.name}.", suffix=".partial",
                                          dir=self.directory.parent))
        self.keys: list[str] = []
        self._seen: set[str] = set()
        self._shards: list[int] = []
        self._offsets: list[int] = []
        self._shapes: list[list[int]] = []
        self._sizes: list[int] = []      # bytes written per shard file
        self._file = None
        self._closed = False

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, key: str, array: np.ndarray) -> None:
        if self._closed:
            raise ValueError(f"{self.directory}: writer already closed")
        if not isinstance(key, str):
            raise ValueError(f"{self.directory}: key must be a string, got {key!r}")
        if key in self._seen:
            raise ValueError(f"{self.directory}: key {key!r} added twice")
        data = np.asarray(array).astype(self.dtype, casting="same_kind", copy=False)
        used = self._sizes[-1] if self._sizes else 0
        start = -(-used // ALIGN) * ALIGN
        if self._file is None or (used > 0 and start + data.nbytes > self.shard_bytes):
            self._next_shard()
            used = start = 0
        self._file.write(b"\0" * (start - used))
        self._file.write(data.tobytes(order="C"))   # also right for zero-size, 0-d and strided arrays
        self._sizes[-1] = start + data.nbytes
        self.keys.append(key)
        self._seen.add(key)
        self._shards.append(len(self._sizes) - 1)
        self._offsets.append(start)
        self._shapes.append([int(n) for n in data.shape])

    def _next_shard(self) -> None:
        self._finish_shard()
        self._file = open(self._tmp / _shard_name(len(self._sizes)), "wb")
        self._sizes.append(0)

    def _finish_shard(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def close(self) -> "ShardedArrays":
        """Sync the shards, write index.json last, then rename the directory into place."""
        if self._closed:
            raise ValueError(f"{self.directory}: writer already closed")
        try:
            self._finish_shard()
            index = {
                "format": FORMAT, "version": VERSION, "dtype": self.dtype.str,
                "keys": self.keys, "shards": self._shards, "offsets": self._offsets, "shapes": self._shapes,
                "shard_files": [_shard_name(i) for i in range(len(self._sizes))], "shard_bytes": self._sizes,
                "meta": self.meta,
            }
            atomic_write(self._tmp / INDEX, json.dumps(index, separators=(",", ":")))
            os.chmod(self._tmp, 0o755)   # mkdtemp makes 0700 directories
            try:
                os.rename(self._tmp, self.directory)   # replaces only a missing or empty directory
            except OSError:
                raise FileExistsError(f"{self.directory}: a store (or other files) appeared here while "
                                      "this one was being built") from None
            fsync_dir(self.directory.parent)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return ShardedArrays.open(self.directory)

    def abort(self) -> None:
        """Discard everything written so far."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._closed = True
        shutil.rmtree(self._tmp, ignore_errors=True)


class ShardedArrays(collections.abc.Sequence):
    """Read-only items of a store: `store[i]` is a memmap view with the stored shape and dtype.

    `subset(positions)` gives a view over some items (e.g. a train/valid split) without reading any.
    Pickling keeps only the directory and positions, so DataLoader workers reopen the maps instead
    of receiving the data.
    """

    def __init__(self, directory: Path, index: dict, positions: Sequence[int] | None = None):
        self.directory = directory
        self._index = index
        self._positions = list(range(len(index["keys"]))) if positions is None else list(positions)
        self._maps: dict[int, np.ndarray] = {}
        self.dtype = np.dtype(index["dtype"])
        self.meta: dict = index["meta"]

    @classmethod
    def open(cls, directory: str | Path) -> "ShardedArrays":
        directory = Path(directory)
        return cls(directory, _read_index(directory))

    @property
    def keys(self) -> list[str]:
        return [self._index["keys"][p] for p in self._positions]

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [tuple(self._index["shapes"][p]) for p in self._positions]

    @property
    def nbytes(self) -> int:
        return sum(int(np.prod(s, dtype=np.int64)) for s in self.shapes) * self.dtype.itemsize

    def __len__(self) -> int:
        return len(self._positions)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.subset(self._positions[i], absolute=True)
        p = self._positions[i]    # IndexError past the end ends iteration, as Sequence expects
        idx = self._index
        shape = tuple(idx["shapes"][p])
        count = int(np.prod(shape, dtype=np.int64))
        offset = idx["offsets"][p]
        raw = self._shard(idx["shards"][p])[offset: offset + count * self.dtype.itemsize]
        return raw.view(self.dtype).reshape(shape)

    def subset(self, positions: Iterable[int], absolute: bool = False) -> "ShardedArrays":
        """Items at `positions` (indices into this view, or into the whole store when absolute)."""
        chosen = list(positions) if absolute else [self._positions[i] for i in positions]
        view = ShardedArrays(self.directory, self._index, chosen)
        view._maps = self._maps   # shard maps are shared, not reopened
        return view

    def _shard(self, s: int) -> np.ndarray:
        m = self._maps.get(s)
        if m is None:
            path = self.directory / self._index["shard_files"][s]
            if self._index["shard_bytes"][s] == 0:   # mmap cannot map an empty file
                m = np.zeros(0, np.uint8)
                m.flags.writeable = False
            else:
                m = np.memmap(path, dtype=np.uint8, mode="r")
            self._maps[s] = m
        return m

    def __getstate__(self) -> dict:
        return {"directory": str(self.directory), "positions": self._positions}

    def __setstate__(self, state: dict) -> None:
        self.__init__(Path(state["directory"]), _read_index(Path(state["directory"])), state["positions"])

    def __repr__(self) -> str:
        return f"ShardedArrays({str(self.directory)!r}, {len(self)} items, {self.dtype})"


def _read_index(directory: Path) -> dict:
    """index.json, checked against the shard files; ShardStoreError naming the directory otherwise."""
    if not directory.is_dir():
        raise ShardStoreError(directory, "no such store directory")
    path = directory / INDEX
    if not path.is_file():
        raise ShardStoreError(directory, f"incomplete store: no {INDEX} (an interrupted build?); "
                                         "delete the directory and build it again")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ShardStoreError(directory, f"unreadable {INDEX}: {e}") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise ShardStoreError(directory, f"{INDEX} is not a {FORMAT} index")
    if index.get("version") != VERSION:
        raise ShardStoreError(directory, f"store version {index.get('version')!r}; this vqkit reads {VERSION}")
    try:
        dtype = np.dtype(index["dtype"])
        columns = [index[k] for k in ("keys", "shards", "offsets", "shapes")]
        files, sizes = index["shard_files"], index["shard_bytes"]
        if len({len(c) for c in columns}) != 1 or len(files) != len(sizes) or not isinstance(index["meta"], dict):
            raise ValueError("columns of different lengths")
        for shard, offset, shape in zip(*columns[1:]):
            end = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if not (0 <= shard < len(files) and 0 <= offset and min(shape, default=0) >= 0 and end <= sizes[shard]):
                raise ValueError(f"an item (offset {offset}, shape {shape}) lies outside shard {shard}")
    except (KeyError, TypeError, ValueError) as e:
        raise ShardStoreError(directory, f"inconsistent {INDEX}: {e}") from None
    for name, size in zip(files, sizes):
        try:
            actual = (directory / name).stat().st_size
        except OSError:
            raise ShardStoreError(directory, f"shard {name} is missing") from None
        if actual != size:
            raise ShardStoreError(directory, f"shard {name} has {actual} bytes, the index says {size} "
                                             "(truncated or modified)")
    return index
