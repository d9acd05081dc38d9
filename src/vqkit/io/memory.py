"""Refusing work that cannot fit in memory, up front, with the config key to change, instead of
failing late with the allocator's text (or swapping the machine to a halt). Ground floor."""
from __future__ import annotations

import os


class MemoryBudgetError(ValueError):
    """A config or checkpoint that needs more memory than the machine has."""


def device_memory(gpu: bool | None = None) -> tuple[int, str]:
    """(bytes, what) of the memory the work will live in: the first GPU's when one is used (by
    default: when one exists), else physical RAM. 0 when unknown (then nothing is refused)."""
    import torch

    if (torch.cuda.is_available() if gpu is None else gpu):
        return int(torch.cuda.get_device_properties(0).total_memory), "GPU memory"
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")), "memory (RAM)"
    except (ValueError, OSError, AttributeError):   # not POSIX
        return 0, "memory"


def format_bytes(n: float) -> str:
    for unit, scale in (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{int(n)} bytes"


def refuse_if_over(needs: list[tuple[str, float, str]], doing: str, gpu: bool | None = None) -> None:
    """needs: (config key, bytes, what) parts of a lower bound of the memory `doing` takes. Refuse
    when their sum exceeds the machine's memory, naming the key of the largest part."""
    have, where = device_memory(gpu)
    total = sum(n for _, n, _ in needs)
    if not have or total <= have:
        return
    key = max(needs, key=lambda part: part[1])[0]
    parts = "; ".join(f"{w}: {format_bytes(b)}" for _, b, w in sorted(needs, key=lambda p: -p[1]) if b >= 2**20)
    raise MemoryBudgetError(f"{key}: {doing} needs at least {format_bytes(total)} ({parts}), more than this "
                            f"machine's {format_bytes(have)} of {where}; reduce {key}")
