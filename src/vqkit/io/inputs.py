"""What audio and image inputs share: errors that carry a skip reason, folder scans, stable relative
keys, skip summaries and the demo corpora's manifest."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable

from .files import read_limited

LOG_FIRST = 5   # skipped files logged one by one per reason, then only counted


class InputError(ValueError):
    """An input file (or folder) that cannot be used; `reason` is a short tag for skip counts."""

    def __init__(self, message: str, reason: str = "unreadable"):
        super().__init__(message)
        self.reason = reason


def find_files(root: str | Path, extensions: Iterable[str], what: str, error: type[InputError]) -> list[Path]:
    """All files under `root` (recursively) whose lower-cased suffix is in `extensions`, sorted."""
    root = Path(root)
    if not root.is_dir():
        state = "does not exist" if not root.exists() else "is not a directory"
        raise error(f"{root}: {state}; expected a folder of {what}", reason="not-a-directory")
    exts = set(extensions)
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in exts and p.is_file())


def relative_paths(paths: Iterable[Path], root: Path) -> list[str]:
    """Paths relative to root ('/'-separated): stable keys for split_by_hash and report hashes."""
    out = []
    for p in paths:
        try:
            out.append(p.relative_to(root).as_posix())
        except ValueError:  # a file given explicitly from outside root
            out.append(p.as_posix())
    return out


def describe_skips(skipped: dict[str, int]) -> str:
    """'3 too short, 1 unreadable': most frequent reason first."""
    return ", ".join(f"{n} {r}" for r, n in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0])) if n)


def with_skips(text: str, skipped: dict[str, int]) -> str:
    n = sum(skipped.values())
    return f"{text}; skipped {n} ({describe_skips(skipped)})" if n else text


def read_manifest(out_dir: Path) -> dict | None:
    try:
        manifest = json.loads(read_limited(Path(out_dir) / "manifest.json", 2**22, "corpus manifest"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


class SkipLog:
    """Counts skipped files by reason; logs the first few of each reason, then a count."""

    def __init__(self, log: Callable[[str], None]):
        self.log = log
        self.skipped: dict[str, int] = {}

    def add(self, reason: str, detail: str) -> None:
        n = self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if n <= LOG_FIRST:
            self.log(f"skipping ({reason}) {detail}")

    def close(self) -> dict[str, int]:
        for reason, n in self.skipped.items():
            if n > LOG_FIRST:
                self.log(f"... and {n - LOG_FIRST} more skipped as {reason!r}")
        return self.skipped


def decoder_message(err: BaseException, path: Path) -> str:
    """`Type: first line` of a decoder's message, without the file name (quoted or not) that the
    caller's error already starts with."""
    text = str(err).strip().splitlines()
    first = text[0] if text else ""
    for quoted in (f": '{path}'", f" '{path}'", f"'{path}'", f" {path}"):
        first = first.replace(quoted, "")
    return f"{type(err).__name__}: {first}"
