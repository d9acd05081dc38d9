"""What encode, decode and reconstruct share: their options, the (input, output) file pairs of a
file or a folder tree, and the per-file loop that skips and counts failures. What a file is and
how it is read and written is the modality's (modalities/)."""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .shared import add_max_pixels, log


def add_file_parser(sub, verb: str, what: str, reads_signals: bool, writes_signals: bool) -> None:
    """A file verb's subparser: `reads_signals` (audio/images in) adds --max-pixels, `writes_signals`
    (audio/images out) the vocoder and output options."""
    p = sub.add_parser(verb, help=what)
    p.add_argument("checkpoint", help="checkpoint or run directory")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("-q", "--quiet", action="store_true", help="no line per file (summary and skips only)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="files go through N threads at once, each with its share of torch's threads (default 1: "
                        "on 2 cores more workers were no faster; many-core machines may differ)")
    if reads_signals:
        add_max_pixels(p)
        p.add_argument("--batch-frames", type=int, default=None, metavar="F",
                       help="mel tokenizers: files go through the model in padded batches of at most F mel frames, "
                            "each file's tokens equal to encoding it alone (default 2048; 0: one file at a time)")
        p.add_argument("--batch-images", type=int, default=None, metavar="N",
                       help="image tokenizers: up to N images of one size per batch (default: 1 on CPU, where "
                            "batches ran slower, 8 on a GPU; 0: one at a time)")
    if writes_signals:
        p.add_argument("--vocoder", choices=["auto", "hifigan", "griffin-lim"], default="auto")
        p.add_argument("--draft", action="store_true", help="use the decoder draft, not the refined output")
        p.add_argument("--save-mel", action="store_true", help="also write the decoded log-mel as .mel.npy")
        p.add_argument("--stages", type=int, default=None, metavar="K",
                       help="residual quantisers (rfsq): decode from the first K stages only (a lower bit rate)")


def file_pairs(inp: Path, out: Path, in_suffixes: tuple[str, ...], out_suffix: str,
               keep_suffix: bool = False) -> list[tuple[Path, Path]]:
    """(input, output) file pairs: a single file, or every matching file in a folder tree, each
    output with `out_suffix` (keep_suffix: a single output keeps the name given). No output may be
    an input or lie in the input folder (io.paths.refuse_overwriting_inputs)."""
    from ..io.paths import OutputPathError, outside_output, refuse_overwriting_inputs

    if inp.is_dir():
        if out.exists() and not out.is_dir():
            raise OutputPathError(f"-o {out}: is a file; a folder input ({inp}) writes a folder of outputs")
        found = sorted(p for p in inp.rglob("*") if p.is_file() and p.suffix.lower() in in_suffixes)
        files = outside_output(inp, found, out)
        if len(files) < len(found):
            log(f"not reading {len(found) - len(files)} files in {out}: it is the output folder, inside the input "
                "folder, so they are outputs, never inputs")
        if not files:
            raise FileNotFoundError(f"{inp}: no {'/'.join(in_suffixes)} files found")
        pairs = [(f, (out / f.relative_to(inp)).with_suffix(out_suffix)) for f in files]
    elif not inp.exists():
        raise FileNotFoundError(f"{inp}: no such file or folder")
    elif out.is_dir():   # like cp: into the folder, named after the input
        pairs = [(inp, (out / inp.name).with_suffix(out_suffix))]
    else:
        pairs = [(inp, out if keep_suffix else out.with_suffix(out_suffix))]
    refuse_overwriting_inputs(inp, pairs, out)
    return pairs


def _failure(src: Path, dst: Path, e: Exception) -> str:
    """The skip line of one file: an output problem names the output, an input problem the input
    (once: most errors start with the file's name already)."""
    from ..io.files import WriteError

    text = str(e) if isinstance(e, (ValueError, OSError)) and str(e) else f"{type(e).__name__}: {e}".rstrip(": ")
    if isinstance(e, WriteError):
        return f"skipped {src}: its output {text}"
    return f"skipped {text}" if text.startswith(str(src)) else f"skipped {src}: {text}"


def worker_count(args, tok) -> int:
    """--workers (default 1: on the 2-core CPU this was measured on, 2 workers of one torch thread
    each ran no faster than one of two threads, whatever the batch size: the models' convolutions
    are bound by memory bandwidth there; bench_batch_inference.py measures it on yours)."""
    n = getattr(args, "workers", None)
    if n is None:
        return 1
    if n < 1:
        raise ValueError(f"--workers {n}: must be >= 1")
    if n > 1 and tok.spatial_dims == 1:
        tok.bounded   # measures the receptive field once, here, not once per worker thread
    return n


def run_files(pairs, fn, quiet: bool = False, workers: int = 1) -> int:
    """Apply fn to every pair; a file that fails in any way (MemoryError too) is reported and
    counted, the rest still run. Only KeyboardInterrupt / SystemExit stop the loop."""
    return _run_groups(pairs, lambda group: [_attempt(lambda: fn(src, dst)) for src, dst in group], 1, workers, quiet)


def _run_groups(pairs, work, size: int, workers: int, quiet: bool) -> int:
    """work(group of at most `size` pairs) -> one (ok, line or exception) per pair, for every group,
    on `workers` threads (each with an equal share of torch's intra-op threads); the outcomes are
    reported in the order of the files. With workers, groups shrink so that every worker gets one."""
    import torch

    if workers > 1:
        size = max(1, min(size, math.ceil(len(pairs) / workers)))
    groups = [pairs[g: g + size] for g in range(0, len(pairs), size)]
    pool = None
    if workers > 1 and len(groups) > 1:
        threads = max(1, torch.get_num_threads() // workers)
        pool = ThreadPoolExecutor(min(workers, len(groups)), thread_name_prefix="vqkit-files",
                                  initializer=torch.set_num_threads, initargs=(threads,))
    try:
        failed = 0
        for group, outcomes in zip(groups, pool.map(work, groups) if pool else map(work, groups)):
            failed += sum(_report(src, dst, outcome, quiet) for (src, dst), outcome in zip(group, outcomes))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return _summary(pairs, failed)


def _report(src: Path, dst: Path, outcome: tuple[bool, object], quiet: bool) -> bool:
    """Log one file's (ok, line or exception); True when it failed."""
    ok, value = outcome
    if not ok:
        log(_failure(src, dst, value))
    elif not quiet:
        log(value)
    return not ok


def _summary(pairs, failed: int) -> int:
    if len(pairs) > 1:
        log(f"{len(pairs) - failed} of {len(pairs)} files done" + (f", {failed} skipped" if failed else ""))
    return 1 if failed == len(pairs) else 0


def batch_size(args, tok) -> dict | None:
    """The batch option of this tokenizer's modality as encode_batch's keyword, or None for one file
    at a time; the other modality's option is refused (it would be ignored)."""
    mine, other = ("batch_frames", "batch_images") if tok.spatial_dims == 1 else ("batch_images", "batch_frames")
    flag = lambda name: "--" + name.replace("_", "-")  # noqa: E731
    if getattr(args, other) is not None:
        raise ValueError(f"{flag(other)} applies to {'image' if tok.spatial_dims == 1 else 'mel'} tokenizers; "
                         f"this one is a {tok.modality} tokenizer: use {flag(mine)}")
    n = getattr(args, mine)
    if n is not None and n < 0:
        raise ValueError(f"{flag(mine)} {n}: must be >= 0 (0: one file at a time)")
    return None if n == 0 else {mine: n}


def run_batched(pairs, read, many, done, single, quiet: bool = False, read_ahead: int = 16,
                workers: int = 1) -> int:
    """run_files for models that take batches: read(src) -> signal (None: the file goes alone through
    single(src, dst)); many(signals) -> one result each, in batches; done(src, dst, result) -> line.
    Files are read `read_ahead` at a time per worker (memory stays bounded); a group whose batch
    fails is run again one file at a time, so a failure names its file. Every failure is reported
    and counted, in the order of the files."""
    def work(group):
        results = [_attempt(lambda src=src: read(src)) for src, _ in group]
        batch = [k for k, (ok, signal) in enumerate(results) if ok and signal is not None]
        for k, (ok, signal) in enumerate(results):
            if ok and signal is None:   # a file that goes alone
                results[k] = _attempt(lambda: single(*group[k]))
        together, outs = _attempt(lambda: many([results[k][1] for k in batch]) if batch else [])
        for j, k in enumerate(batch):
            src, dst = group[k]
            signal = results[k][1]
            results[k] = _attempt(lambda: done(src, dst, outs[j] if together else many([signal])[0]))
        return results

    return _run_groups(pairs, work, read_ahead, workers, quiet)


def _attempt(fn):
    """(True, fn()) or (False, the exception); only KeyboardInterrupt / SystemExit pass."""
    try:
        return True, fn()
    except Exception as e:
        if os.environ.get("VQKIT_DEBUG"):
            raise
        return False, e
