#!/usr/bin/env python
"""Forward + backward cost of each quantiser option on its own (a script, not a test).

For every option (FSQ and the codebook-VQ variants of vqkit.quantizers) at a small and a large
codebook, it times `quantizer(z)` followed by `backward()` of (mean z_q^2 + auxiliary loss) on N
random latent vectors in float32, in train mode (so the entropy term and the dead-code restart run),
and measures the peak extra memory of one such call:

  * CUDA: torch.cuda.max_memory_allocated during the call, minus what was allocated before it;
  * CPU: growth of the process's peak resident set size (VmHWM, reset through /proc/self/clear_refs
    before the call) over the resident size before it, after one warm-up call. glibc's malloc is
    told to serve every allocation of 64 KiB or more with its own mmap (malloc_trim(0) before each
    call), so freed tensors leave RSS at once and RSS follows the live tensors. That is done in a
    forked child process before the timings, so the timed process keeps its own malloc settings.
    Where fork, /proc or glibc is missing: n/a.

CPU and glibc's malloc: VQ allocates distance_chunk x K float32 buffers (16 MiB at 4096 x 1024,
256 MiB at 4096 x 16384) on every call. With glibc's defaults, blocks above its mmap threshold
(adaptive, at most 32 MiB) come fresh from the kernel each time and freed heap beyond the trim
threshold is handed back, so a call spends much of its time in page faults, and how much depends
on which options ran before (the threshold adapts). By default (--malloc retain) the script sets
the mmap threshold to 1 GiB and turns heap trimming off before anything runs, so freed memory is
kept and reused, as PyTorch's CUDA caching allocator does: the timings are the quantiser's own
work, the same whatever the order. (The heap can still grow during the first calls of an option
until its layout settles, which is why every option is timed at least --min-repeats times.)
--malloc glibc leaves glibc as it is (what a CPU training run sees by default). The `sys %` column
is the share of CPU time spent in the kernel, mostly those page faults: near 0 means the timing is
compute.

It prints a table and writes JSON (default benchmarks/results/quantizers.json).

    .venv/bin/python benchmarks/bench_quantizers.py                  # defaults: N = 8192, dim 32
    .venv/bin/python benchmarks/bench_quantizers.py --n 65536 --repeats 20
    python benchmarks/bench_quantizers.py --device cuda --n 262144

Random inputs and untrained codebooks: the numbers are speed and memory only.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py, also when imported from elsewhere

from common import RESULTS, add_device_arg, add_repeat_args, add_threads_out_args, clear_rss_peak  # noqa: E402
from common import count, cpu_seconds, fmt, loadavg, mem_column, print_table, proc_status_mb  # noqa: E402
from common import setup_device, start_run, sys_seconds, time_calls, wall_line, write_report  # noqa: E402
from reference_quantizers import VERSION as REFERENCE_VERSION, reference_step  # noqa: E402
from vqkit.config import QuantizerConfig, VQConfig, tagged_kinds  # noqa: E402
from vqkit.quantizers import build_quantizer  # noqa: E402

DEFAULT_OUT = RESULTS / "quantizers.json"

# (name, a quantiser config's fields). Codebook kinds take codebook_size and dim from the size / --dim.
OPTIONS: list[tuple[str, dict]] = [
    ("fsq", {"kind": "fsq"}),
    ("vq", {"kind": "vq"}),
    ("vq l2", {"kind": "vq", "l2_norm": True}),
    ("vq factorised-8 + l2", {"kind": "vq", "codebook_dim": 8, "l2_norm": True}),
    ("vq entropy 0.01", {"kind": "vq", "entropy_weight": 0.01}),
    ("vq multichannel 4", {"kind": "vq", "channels": 4}),
    ("vq restart dead codes", {"kind": "vq", "restart_dead_codes": True}),
    ("vq rotation trick", {"kind": "vq", "gradient": "rotation"}),
    ("vq index backprop", {"kind": "vq", "gradient": "index_backprop"}),
    ("simvq", {"kind": "simvq"}),
    ("lfq", {"kind": "lfq"}),
    ("bsq", {"kind": "bsq"}),
    ("rfsq 2 stages", {"kind": "rfsq", "stages": 2}),
]
# Small, large and (codebooks without a lookup only) huge: VQ sizes, and FSQ levels of about the same
# size; lfq / bsq take log2(size) bits.
SIZES = [(1024, [8, 5, 5, 5]), (16384, [8, 8, 8, 6, 5]), (65536, [8, 8, 8, 8, 4, 4])]
LOOKUP_FREE = ("fsq", "lfq", "bsq", "rfsq")   # the only kinds timed at the huge size
STATS_REFERENCE = ("fsq", "rfsq")   # theirs also timed with vqkit's usage statistics (see reference_quantizers)
NOTES = ["random N(0, 1) latents and untrained codebooks: speed and memory only",
         "one call = quantizer(z) + backward of mean(z_q^2) + auxiliary loss, train mode, float32",
         "multichannel splits each dim-wide vector into `channels` chunks: lookups = channels x N",
         "fsq / rfsq input width is the number of levels (4 to 6), lfq / bsq the bits (log2 K), not --dim",
         "vector-quantize-pytorch gets the same channels-first latents as vqkit and returns z_q in them",
         "ours computes usage / perplexity every call, theirs not: fsq / rfsq rows also give theirs + "
         "vqkit's usage statistics (ratio_to_reference_with_stats)",
         "restart_dead_codes: the EMA usage update runs every call; codes are re-seeded only once "
         "they are dead (see restarted_per_call_mean)"]


# ---- CPU peak memory -------------------------------------------------------------------------

class CpuPeakMemory:
    """Peak RSS growth of one call, from /proc/self/status (Linux). `available` is False elsewhere."""

    M_TRIM_THRESHOLD = -1   # glibc mallopt parameters
    M_MMAP_THRESHOLD = -3

    def __init__(self) -> None:
        self.available = False
        self.why = ""
        try:
            clear_rss_peak()
            proc_status_mb("VmHWM")
            libc = ctypes.CDLL("libc.so.6")
        except (OSError, ValueError, TypeError) as e:
            self.why = f"no /proc/self/clear_refs or glibc ({e})"
            return
        self.libc = libc
        self.available = True

    @classmethod
    def retain_freed_memory(cls) -> bool:
        """glibc: serve blocks up to 1 GiB from the heap and never trim it, so freed tensors stay
        mapped and are reused (setting the thresholds also stops glibc adapting them)."""
        try:
            libc = ctypes.CDLL("libc.so.6")
            return (libc.mallopt(cls.M_MMAP_THRESHOLD, 2**30) == 1
                    and libc.mallopt(cls.M_TRIM_THRESHOLD, -1) == 1)   # -1: never trim the heap
        except (OSError, AttributeError):
            return False

    def use_mmap_for_large_allocations(self) -> bool:
        """Fixed 64 KiB mmap threshold and 128 KiB trim threshold: every tensor of 64 KiB or more is
        its own mapping, returned to the OS when freed, so RSS follows the live tensors."""
        if not self.available or not (self.libc.mallopt(self.M_MMAP_THRESHOLD, 64 * 1024) == 1
                                      and self.libc.mallopt(self.M_TRIM_THRESHOLD, 128 * 1024) == 1):
            self.available, self.why = False, "mallopt failed (not glibc?)"
        return self.available

    def measure(self, fn: Callable[[], Any]) -> float | None:
        if not self.available:
            return None
        gc.collect()
        self.libc.malloc_trim(0)   # free heap pages that are still resident go back to the OS first
        clear_rss_peak()
        base = proc_status_mb("VmRSS")
        fn()
        return proc_status_mb("VmHWM") - base


CPU_MEMORY_KIND = ("peak RSS growth during one call (VmHWM reset via /proc/self/clear_refs, minus VmRSS "
                   "before), measured in a forked child with glibc's mmap threshold at 64 KiB, after one "
                   "warm-up call")


def cpu_memory_pass(plan: list[tuple], args: argparse.Namespace) -> tuple[list, list, str]:
    """Peak RSS growth of one call of every option and of its vector-quantize-pytorch counterpart
    (None where there is none), measured in a forked child process so that the
    malloc settings it needs never touch the process that takes the timings. Call it before any
    torch work in the parent (fork after OpenMP has started threads is unsafe)."""
    none = [None] * len(plan)
    if not hasattr(os, "fork") or not Path("/proc/self/clear_refs").exists():
        return none, none, "n/a: needs Linux (fork, /proc/self/clear_refs)"
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:   # child: measure, send JSON, exit without running the parent's cleanup
        payload: dict[str, Any]
        try:
            os.close(rfd)
            mem = CpuPeakMemory()
            if not mem.use_mmap_for_large_allocations():
                payload = {"error": mem.why}
            else:
                peaks, reference = [], []
                for name, fields, size, levels in plan:
                    run = setup_option(name, fields, size, levels, args, torch.device("cpu"))
                    run["step"]()                          # warm-up: one-off allocations
                    peaks.append(mem.measure(run["step"]))
                    ref = reference_step({**vars(run["cfg"])}, run["q"].codebook_size, run["q"].dim,
                                         tuple(run["z"].shape), torch.device("cpu")) if args.reference else None
                    del run
                    if ref is not None:   # the counterpart's peak the same way, in the same process
                        ref()
                    reference.append(None if ref is None else mem.measure(ref))
                    del ref
                payload = {"peaks": peaks, "reference": reference}
        except BaseException as e:  # noqa: BLE001 - anything must reach the parent as a message
            payload = {"error": f"{type(e).__name__}: {e}"}
        try:
            with os.fdopen(wfd, "w") as f:
                json.dump(payload, f)
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd) as f:
        text = f.read()
    _, status = os.waitpid(pid, 0)
    try:
        payload = json.loads(text)
    except ValueError:
        return none, none, f"n/a: the measuring child process ended without a result (wait status {status})"
    if "error" in payload:
        return none, none, f"n/a: {payload['error']}"
    return payload["peaks"], payload["reference"], CPU_MEMORY_KIND


# ---- one option ------------------------------------------------------------------------------

def make_quantizer(fields: dict, size: int, levels: list[int], dim: int):
    f = dict(fields)
    if f["kind"] in ("fsq", "rfsq"):
        f["levels"] = levels
    elif f["kind"] in ("lfq", "bsq"):
        f["dim"] = size.bit_length() - 1   # 2^dim codes
    else:
        channels = f.get("channels", 1)
        # Every option sees the same N vectors of width `dim`; multichannel splits each into
        # `channels` chunks of dim / channels, so it makes channels x N lookups.
        f.update(codebook_size=size, dim=dim // channels)
    cfg = tagged_kinds(QuantizerConfig)[f["kind"]](**f)
    cfg.validate()
    return build_quantizer(cfg), cfg


def latent_shape(n: int, width: int) -> tuple[int, ...]:
    """(B, width, 32, 32) when n is a multiple of 1024 (an image-like grid), else (1, width, n)."""
    return (n // 1024, width, 32, 32) if n % 1024 == 0 else (1, width, n)


def setup_option(name: str, fields: dict, size: int, levels: list[int], args: argparse.Namespace,
                 device: torch.device) -> dict:
    """The quantiser, its input and `step`: one forward + backward in train mode."""
    torch.manual_seed(0)
    q, cfg = make_quantizer(fields, size, levels, args.dim)
    if cfg.kind == "vq" and args.distance_chunk is not None:
        q.cfg.distance_chunk = args.distance_chunk
    q.to(device).train()
    z = torch.randn(latent_shape(args.n, q.dim), device=device, requires_grad=True)
    restarted: list[float] = []

    def step() -> None:
        z.grad = None
        q.zero_grad(set_to_none=True)
        out = q(z)
        loss = out.z_q.square().mean() + out.loss
        loss.backward()
        if "restarted" in out.stats:
            restarted.append(float(out.stats["restarted"]))

    return {"q": q, "cfg": cfg, "z": z, "step": step, "restarted": restarted}


def bench_option(name: str, fields: dict, size: int, levels: list[int], args: argparse.Namespace,
                 device: torch.device) -> dict:
    run = setup_option(name, fields, size, levels, args, device)
    q, cfg, step, restarted = run["q"], run["cfg"], run["step"], run["restarted"]
    for _ in range(args.warmup):
        step()
    restarted.clear()
    c0, s0 = cpu_seconds(), sys_seconds()
    times = time_calls(step, device, args.repeats, args.repeat_budget, args.min_repeats)
    cpu_used, sys_used = cpu_seconds() - c0, sys_seconds() - s0
    med = statistics.median(times)
    r = {
        "option": name, "kind": cfg.kind, "codebook_size": q.codebook_size,
        "levels": getattr(cfg, "levels", None),
        "config": {k: v for k, v in vars(cfg).items() if k != "levels"},
        "n_vectors": args.n, "input_width": q.dim, "lookups": args.n * getattr(q, "tokens_per_position", 1),
        "params": count(q),
        "times_s": times, "repeats": len(times), "median_s": med, "min_s": min(times),
        "vectors_per_s": args.n / med,
        "cpu_utilisation": cpu_used / sum(times) / torch.get_num_threads() if device.type == "cpu" else None,
        "sys_fraction": sys_used / cpu_used if device.type == "cpu" and cpu_used > 0 else None,
    }
    if restarted:
        r["restarted_per_call_mean"] = statistics.mean(restarted)
    if args.reference:   # the same work by vector-quantize-pytorch, timed the same way in the same run
        shape = tuple(run["z"].shape)
        ref = reference_step({**vars(cfg)}, q.codebook_size, q.dim, shape, device)
        if ref is not None:
            for _ in range(args.warmup):
                ref()
            ref_times = time_calls(ref, device, args.repeats, args.repeat_budget, args.min_repeats)
            r["reference_median_s"] = statistics.median(ref_times)
            r["ratio_to_reference"] = med / r["reference_median_s"]
        # ours also computes usage statistics (a histogram over K codes); theirs do not. Where that is a
        # visible share (fsq, rfsq: well under 1 ms a call) theirs is also timed with the same statistics
        if ref is not None and cfg.kind in STATS_REFERENCE:
            ref = reference_step({**vars(cfg)}, q.codebook_size, q.dim, shape, device, with_stats=True)
            for _ in range(args.warmup):
                ref()
            ref_times = time_calls(ref, device, args.repeats, args.repeat_budget, args.min_repeats)
            r["reference_with_stats_median_s"] = statistics.median(ref_times)
            r["ratio_to_reference_with_stats"] = med / r["reference_with_stats_median_s"]
    if device.type == "cuda":
        r["peak_memory_mb"] = cuda_peak_mb(step, device)
        if args.reference and ref is not None:
            r["reference_peak_memory_mb"] = cuda_peak_mb(
                reference_step({**vars(cfg)}, q.codebook_size, q.dim, tuple(run["z"].shape), device), device)
    return r


def cuda_peak_mb(fn: Callable[[], None], device: torch.device) -> float:
    """One more call: the peak allocated beyond what was allocated before it."""
    gc.collect()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


# ---- main ------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=8 * 32 * 32,
                    help="latent vectors per call (default: %(default)s = 8 x 32 x 32)")
    ap.add_argument("--dim", type=int, default=32,
                    help="latent width for vq (default: %(default)s); fsq takes one dim per level")
    ap.add_argument("--sizes", choices=["small", "large", "both", "all"], default="all",
                    help="codebooks: small = vq 1024 / fsq [8,5,5,5]; large = vq 16384 / fsq [8,8,8,6,5]; all adds "
                         "65536 (fsq [8,8,8,8,4,4], lfq / bsq 16 bits) for the kinds without a lookup "
                         "(default: %(default)s)")
    ap.add_argument("--options", nargs="+", default=None, metavar="NAME",
                    help=f"subset of options by name (default: all: {'; '.join(n for n, _ in OPTIONS)})")
    ap.add_argument("--distance-chunk", type=int, default=None,
                    help="vq: latents per distance chunk (default: the config default, "
                         f"{VQConfig().distance_chunk})")
    ap.add_argument("--malloc", choices=["retain", "glibc"], default="retain",
                    help="CPU: retain = glibc keeps freed memory for reuse (mmap threshold 1 GiB, no heap "
                         "trimming), timings are compute and independent of order; glibc = leave glibc's "
                         "adaptive defaults, page faults included (default: %(default)s)")
    ap.add_argument("--no-reference", dest="reference", action="store_false",
                    help="skip the vector-quantize-pytorch counterparts (timed beside each option by default)")
    add_device_arg(ap)
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls first (default: %(default)s)")
    add_repeat_args(ap, "option", repeats=10, budget_s=2.0, repeats_help="timed calls, median")
    add_threads_out_args(ap, DEFAULT_OUT)
    args = ap.parse_args(argv)
    if args.n < 1 or args.dim < 1 or args.repeats < 1 or args.warmup < 0:
        ap.error("--n, --dim and --repeats must be >= 1, --warmup >= 0")
    args.min_repeats = max(1, min(args.min_repeats, args.repeats))
    if args.distance_chunk is not None and args.distance_chunk < 1:
        ap.error("--distance-chunk must be >= 1")
    options = OPTIONS
    if args.options:
        known = {n: f for n, f in OPTIONS}
        bad = [n for n in args.options if n not in known]
        if bad:
            ap.error(f"unknown option(s) {bad}; available: {list(known)}")
        options = [(n, known[n]) for n in args.options]
    for name, fields in options:
        if args.dim % fields.get("channels", 1):
            ap.error(f"--dim {args.dim} is not divisible by the {fields['channels']} channels of {name!r}")
    sizes = {"small": SIZES[:1], "large": SIZES[1:2], "both": SIZES[:2], "all": SIZES}[args.sizes]

    device = setup_device(args)
    malloc = "n/a (CUDA caching allocator)" if device.type == "cuda" else "glibc defaults (adaptive)"
    if device.type == "cpu" and args.malloc == "retain":
        malloc = ("retain: glibc mmap threshold 1 GiB, heap trimming off" if CpuPeakMemory.retain_freed_memory()
                  else "glibc defaults (retain failed: not glibc?)")
    started, load_before = start_run(device)
    chunk = args.distance_chunk or VQConfig().distance_chunk
    print(f"N = {args.n} latent vectors, vq dim {args.dim}, distance chunk {chunk}, float32, forward + backward "
          f"in train mode; malloc: {malloc}", flush=True)
    t_all = time.perf_counter()
    plan = [(name, fields, size, levels) for size, levels in sizes for name, fields in options
            if size <= 16384 or fields["kind"] in LOOKUP_FREE]
    if device.type == "cpu":
        print("peak memory: one call of each option in a forked child process ...", flush=True)
        peaks, ref_peaks, memory_kind = cpu_memory_pass(plan, args)
    else:
        peaks = ref_peaks = [None] * len(plan)
        memory_kind = "cuda max_memory_allocated during one call minus memory_allocated before it"
    results = []
    for (name, fields, size, levels), peak, ref_peak in zip(plan, peaks, ref_peaks):
        r = bench_option(name, fields, size, levels, args, device)
        if device.type == "cpu":
            r["peak_memory_mb"], r["reference_peak_memory_mb"] = peak, ref_peak
        results.append(r)
        ref = (f"  vector-quantize-pytorch {r['reference_median_s'] * 1000:.2f} ms"
               if "reference_median_s" in r else "")
        print(f"  {name:<22} K={r['codebook_size']:<6} {r['median_s'] * 1000:9.2f} ms "
              f"(median of {r['repeats']})  {r['vectors_per_s']:12.0f} vectors/s{ref}", flush=True)
    wall = time.perf_counter() - t_all
    load_after = loadavg()

    mem_col = mem_column(device)
    rows = [[r["option"], str(r["codebook_size"]), str(r["n_vectors"]), str(r["lookups"]),
             f"{r['median_s'] * 1000:.2f}", f"{r['vectors_per_s']:.3g}", fmt(r["peak_memory_mb"], ".1f"),
             fmt(r["cpu_utilisation"], ".2f"),
             fmt(None if r["sys_fraction"] is None else 100 * r["sys_fraction"], ".0f"),
             fmt(None if "reference_median_s" not in r else r["reference_median_s"] * 1000, ".2f"),
             fmt(r.get("ratio_to_reference"), ".2f"),
             fmt(r.get("ratio_to_reference_with_stats"), ".2f"),
             fmt(r.get("reference_peak_memory_mb"), ".1f")] for r in results]
    print_table(f"Quantiser forward + backward (float32, {device.type})",
                ["option", "K", "N", "lookups", "fwd+bwd ms", "vectors/s", mem_col, "CPU use", "sys %",
                 "vqp ms", "ours/vqp", "ours/(vqp+stats)", "vqp " + mem_col], rows)
    print(f"\nvqp: vector-quantize-pytorch {REFERENCE_VERSION or 'not installed (pip install -e .[bench])'}, "
          "the counterpart configured to do the same work on the same (B, C, ...) latents "
          "(benchmarks/reference_quantizers.py); vqp+stats: fsq / rfsq only, theirs plus vqkit's usage "
          "statistics of their indices, which ours computes every call")
    print(f"\n{mem_col}: {memory_kind}")
    print(wall_line(wall, load_before, load_after))

    write_report(args.out, "quantizers", started, device, load_before, load_after, wall, args,
                 peak_memory_kind=memory_kind, malloc=malloc, distance_chunk=chunk, notes=NOTES, results=results,
                 reference=f"vector-quantize-pytorch {REFERENCE_VERSION}" if REFERENCE_VERSION else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
