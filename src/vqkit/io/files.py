"""Writing and reading files safely: the one atomic write every file vqkit writes goes through, and
size-limited reads for small files (configs, sidecars, pointers). Ground floor: imports no vqkit.

atomic_write: a temp file beside the destination, written, flushed and fsynced, then renamed over
the destination (os.replace), then the folder fsynced. Readers never see a half-written file, a crash
leaves the old file, and a symlink planted at the destination is replaced, never followed (rename
acts on the link itself, where open() would write through it to the link's target).
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Callable, Union

Content = Union[bytes, str, Callable[[str], None]]


class WriteError(OSError):
    """A file vqkit could not write; the message starts with that (output) path."""


class TooLargeError(ValueError):
    """A small file (config, sidecar, pointer) that is larger than its limit, e.g. /dev/zero."""


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable. Platforms without directory fds (Windows) skip it: the
    rename itself is still atomic there, and that is the one policy for every caller."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def _why(e: OSError) -> str:
    if isinstance(e, FileExistsError) and e.filename:
        return f"{e.filename} is a file, not a folder"
    where = f": {e.filename}" if e.filename and str(e.filename) not in ("", ".") else ""
    return f"{e.strerror or e}{where}"


def atomic_write(path: str | Path, content: Content) -> Path:
    """Write `content` (bytes, text as UTF-8, or a function writing the temp file it is given) to
    `path` atomically. The temp name keeps the destination's suffix (np.save, Pillow and
    soundfile look at it). Any OSError becomes a WriteError naming `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    except OSError as e:
        raise WriteError(f"{path}: cannot write ({_why(e)})") from None
    try:
        if callable(content):
            os.close(fd)
            content(tmp)
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(content.encode("utf-8") if isinstance(content, str) else content)
        fsync_file(tmp)
        os.chmod(tmp, 0o644)   # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise WriteError(f"{path}: cannot write ({_why(e)})") from None
        raise
    fsync_dir(path.parent)
    return path


def read_limited(path: str | Path, limit: int, what: str) -> bytes:
    """The bytes of a small file, refusing (TooLargeError) anything over `limit` bytes without
    reading more than that: /dev/zero, a FIFO or a huge file give one clear line, not a hang.
    OSErrors (missing, a directory, no permission) propagate for the caller to word."""
    path = Path(path)
    with open(path, "rb") as f:
        info = os.fstat(f.fileno())
        if stat.S_ISREG(info.st_mode) and info.st_size > limit:
            raise TooLargeError(f"{path}: {_size(info.st_size)}, larger than the {_size(limit)} a {what} "
                                "may have; is this the right file?")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise TooLargeError(f"{path}: more than the {_size(limit)} a {what} may have "
                            f"({'not a regular file; ' if not stat.S_ISREG(info.st_mode) else ''}is this the right file?)")
    return data


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"
