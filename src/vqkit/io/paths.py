"""Where vqkit may write and what it may follow: outputs never overwrite an input or land where a
later run would read them back as inputs, and a pointer file (checkpoints/latest) never leads out of
its folder. Ground floor: imports nothing above vqkit.io."""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator

from .files import read_limited


class OutputPathError(ValueError):
    """An output path that would overwrite, or mix with, the inputs (or cannot be written)."""


class UnsafePointerError(ValueError):
    """A pointer file naming something outside the folder it may name into."""


def _real(p: Path) -> Path:
    return Path(os.path.realpath(p))   # symlinks, `.` and `..` resolved, also for paths not there yet


def is_within(path: Path, folder: Path) -> bool:
    """path is folder itself or lies under it, after resolving links, `.` and `..`."""
    p, f = _real(path), _real(folder)
    return p == f or f in p.parents


def refuse_overlap(output: Path, out_flag: str, inputs: Iterable[tuple[str, Path | None]]) -> None:
    """A folder verb's output folder may neither be an input folder, nor lie inside one (its files
    would be read back as inputs), nor hold one (its sub-folders could be inputs)."""
    output = Path(output)
    for in_flag, folder in inputs:
        if folder is None:
            continue
        folder = Path(folder)
        if is_within(output, folder):
            where = "is" if _real(output) == _real(folder) else "is inside"
            raise OutputPathError(f"{out_flag} {output} {where} {in_flag} {folder}: vqkit would read its own "
                                  f"outputs back as inputs (or overwrite them); choose {out_flag} outside {folder}")
        if folder.is_dir() and is_within(folder, output):
            raise OutputPathError(f"{out_flag} {output} holds {in_flag} {folder}: outputs and inputs would mix; "
                                  f"choose {out_flag} and {in_flag} folders apart")


def outside_output(root: Path, files: list[Path], output: Path, out_flag: str = "-o") -> list[Path]:
    """The input files of a folder verb, without those in its output folder when that lies inside
    the input folder `root` (a rerun must not read its outputs back as inputs). An output folder
    that is the input folder itself is refused."""
    if _real(output) == _real(root):
        raise OutputPathError(f"{out_flag} {output} is the input folder {root}: vqkit would overwrite inputs or "
                              f"mix its outputs with them; choose another {out_flag}")
    if not is_within(output, root):
        return files
    return [f for f in files if not is_within(f, output)]


def refuse_overwriting_inputs(root: Path, pairs: list[tuple[Path, Path]], output: Path,
                              out_flag: str = "-o") -> None:
    """(input, output) file pairs of encode / decode / reconstruct: no output may be an input file
    (also through a symlink or hard link), nor lie in the input folder `root` outside the output
    folder (e.g. -o above the input folder: data/in/in/x.wav would land on data/in/x.wav)."""
    root = Path(root)
    if root.is_dir() and not is_within(output, root):
        for src, dst in pairs:
            if is_within(dst, root):
                raise OutputPathError(f"{out_flag}: {dst} is inside the input folder {root}: vqkit would "
                                      f"overwrite inputs or read its outputs back as inputs; choose {out_flag} "
                                      f"outside {root}")
    inputs = {}   # what each input is: its resolved path, and its file identity (hard links too)
    for src, _ in pairs:
        inputs[_real(src)] = src
        with contextlib.suppress(OSError):
            st = os.stat(src)
            inputs[(st.st_dev, st.st_ino)] = src
    for _, dst in pairs:
        keys = [_real(dst)]
        with contextlib.suppress(OSError):
            st = os.stat(dst)
            keys.append((st.st_dev, st.st_ino))
        hit = next((inputs[k] for k in keys if k in inputs), None)
        if hit is not None:
            raise OutputPathError(f"{out_flag}: {dst} is the input file {hit} (or a link to it); refusing to "
                                  f"overwrite an input; choose another {out_flag}")


def check_output_folder(folder: Path, flag: str) -> None:
    """A folder vqkit will write into: not a file, and creatable and writable, checked before any
    work so that a long load never ends in 'cannot write'. Creates nothing."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputPathError(f"{flag} {folder}: is a file, not a folder")
    probe = folder
    while not probe.exists():
        if probe.is_symlink():
            raise OutputPathError(f"{flag} {folder}: {probe} is a dangling symlink")
        probe = probe.parent
    if not probe.is_dir():
        raise OutputPathError(f"{flag} {folder}: cannot create it, {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputPathError(f"{flag} {folder}: cannot write into {probe} (permission denied)")


@contextlib.contextmanager
def output_folder(folder: Path) -> Iterator[Path]:
    """Create `folder` for a command's outputs; when the command fails and the folder did not
    exist before, remove it again (with what the failed command wrote), so a failure leaves no
    empty or half-filled folder that looks like a result."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    except BaseException:
        if created:
            shutil.rmtree(folder, ignore_errors=True)
        raise


POINTER_LIMIT = 4096   # a pointer holds one folder name


def read_pointer(pointer: Path) -> tuple[str, Path]:
    """(name, folder) of a pointer file such as checkpoints/latest, which names a folder beside
    it. Anything else (a path with separators, `..`, an absolute path, or a link leading out of
    the pointer's folder) is refused: a run directory from someone else must not make vqkit read
    files elsewhere. An unreadable pointer gives name ''."""
    pointer = Path(pointer)
    root = pointer.parent
    try:
        name = read_limited(pointer, POINTER_LIMIT, "checkpoint pointer").decode("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return "", root
    if name and (name in (".", "..") or "/" in name or "\\" in name or os.path.isabs(name) or "\0" in name):
        raise UnsafePointerError(f"{pointer}: names {name!r}, not a folder in {root}; a pointer names one "
                                 "checkpoint folder beside it (like step_00001000); refusing to follow it")
    folder = root / name
    check_confined(folder, root, f"{pointer}: names {name!r}, which")
    return name, folder


def check_confined(path: Path, root: Path, what: str) -> None:
    """Refuse `path` when a symlink takes it out of `root`."""
    if not is_within(path, root):
        raise UnsafePointerError(f"{what} is a link to {_real(path)}, outside {root}; refusing to follow it")
