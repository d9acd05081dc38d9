#!/usr/bin/env python
"""Forward + backward cost of each quantiser option on its own (a script, not a test).

For every option (FSQ and the codebook-VQ variants of vqkit.quantizers) at a small and a large
codebook, it times `quantizer(z)` followed by `backward()` of (mean z_q^2 + auxiliary loss) on N
random latent vectors in float32, in train mode (so the entropy term and the dead-code restart run),
and measures the peak extra memory of one such call:

  * CUDA: torch.cuda.max_memory_allocated during the call, minus what was allocated before it;
  * CPU: growth of the process's peak resident set size (VmHWM, reset through /proc/self/clear_refs
    before the call) over the resident size before it. Before each call, malloc_trim(0) hands free
    heap pages back to the OS, and glibc's malloc is told to serve new allocations of 64 KiB or more
    with mmap, so freed tensors leave RSS at once and reused memory is counted again. That mode is
    switched on only after all timings are taken. Where /proc or glibc is missing: n/a.

It prints a table and writes JSON (default benchmarks/results/quantizers.json).

    .venv/bin/python benchmarks/bench_quantizers.py                  # defaults: N = 8192, dim 32
    .venv/bin/python benchmarks/bench_quantizers.py --n 65536 --repeats 20
    python benchmarks/bench_quantizers.py --device cuda --n 262144

Random inputs and untrained codebooks: the numbers are speed and memory only.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime as dt
import gc
import importlib.util
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

if importlib.util.find_spec("vqkit") is None:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from vqkit.config import QuantizerConfig  # noqa: E402
from vqkit.quantizers import build_quantizer  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "quantizers.json"

# (name, QuantizerConfig fields). vq options take codebook_size and dim from the size / --dim.
OPTIONS: list[tuple[str, dict]] = [
    ("fsq", {"kind": "fsq"}),
    ("vq", {"kind": "vq"}),
    ("vq l2", {"kind": "vq", "l2_norm": True}),
    ("vq factorised-8 + l2", {"kind": "vq", "codebook_dim": 8, "l2_norm": True}),
    ("vq entropy 0.01", {"kind": "vq", "entropy_weight": 0.01}),
    ("vq multichannel 4", {"kind": "vq", "channels": 4}),
    ("vq restart dead codes", {"kind": "vq", "restart_dead_codes": True}),
]
# Small and large codebook: VQ sizes, and the FSQ levels of about the same size.
SIZES = [(1024, [8, 5, 5, 5]), (16384, [8, 8, 8, 6, 5])]


# ---- helpers -----------------------------------------------------------------------------

def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    return torch.device(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"{cpu_model()}, {os.cpu_count()} logical CPUs"


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(row[j]) for row in rows)) for j, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) if j == 0 else c.rjust(w)  # noqa: E731
                                    for j, (c, w) in enumerate(zip(cells, widths)))
    print(f"\n{title}")
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


# ---- CPU peak memory -------------------------------------------------------------------------

class CpuPeakMemory:
    """Peak RSS growth of one call, from /proc/self/status (Linux). `available` is False elsewhere."""

    M_MMAP_THRESHOLD = -3   # glibc mallopt parameter

    def __init__(self) -> None:
        self.available = False
        self.why = ""
        try:
            self._clear()
            self._status("VmHWM")
            libc = ctypes.CDLL("libc.so.6")
        except (OSError, ValueError, TypeError) as e:
            self.why = f"no /proc/self/clear_refs or glibc ({e})"
            return
        self.libc = libc
        self.available = True

    @staticmethod
    def _clear() -> None:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")   # reset VmHWM (peak RSS) to the current RSS (Linux >= 4.0)

    @staticmethod
    def _status(key: str) -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024   # kB -> MiB
        raise ValueError(f"{key} not in /proc/self/status")

    def use_mmap_for_large_allocations(self) -> bool:
        """Fixed 64 KiB mmap threshold: freed tensors go back to the OS at once. Slower allocations,
        so it is switched on only for the memory pass, after all timings."""
        if not self.available or self.libc.mallopt(self.M_MMAP_THRESHOLD, 64 * 1024) != 1:
            self.available, self.why = False, "mallopt(M_MMAP_THRESHOLD) failed (not glibc?)"
        return self.available

    def measure(self, fn: Callable[[], Any]) -> float | None:
        if not self.available:
            return None
        gc.collect()
        # Free heap memory that is still resident (from earlier calls) goes back to the OS, so that
        # reusing it during `fn` shows up as RSS growth.
        self.libc.malloc_trim(0)
        self._clear()
        base = self._status("VmRSS")
        fn()
        return self._status("VmHWM") - base


# ---- one option ------------------------------------------------------------------------------

def make_quantizer(fields: dict, size: int, levels: list[int], dim: int):
    f = dict(fields)
    if f["kind"] == "fsq":
        f["levels"] = levels
    else:
        channels = f.get("channels", 1)
        # Every option sees the same N vectors of width `dim`; multichannel splits each into
        # `channels` chunks of dim / channels, so it makes channels x N lookups.
        f.update(codebook_size=size, dim=dim // channels)
    cfg = QuantizerConfig(**f)
    cfg.validate()
    return build_quantizer(cfg), cfg


def latent_shape(n: int, width: int) -> tuple[int, ...]:
    """(B, width, 32, 32) when n is a multiple of 1024 (an image-like grid), else (1, width, n)."""
    return (n // 1024, width, 32, 32) if n % 1024 == 0 else (1, width, n)


def bench_option(name: str, fields: dict, size: int, levels: list[int], args: argparse.Namespace,
                 device: torch.device) -> dict:
    torch.manual_seed(0)
    q, cfg = make_quantizer(fields, size, levels, args.dim)
    q.to(device).train()
    width = q.dim
    z = torch.randn(latent_shape(args.n, width), device=device, requires_grad=True)
    lookups = args.n * getattr(q, "tokens_per_position", 1)
    restarted: list[float] = []

    def step() -> None:
        z.grad = None
        q.zero_grad(set_to_none=True)
        out = q(z)
        loss = out.z_q.square().mean() + out.loss
        loss.backward()
        if "restarted" in out.stats:
            restarted.append(float(out.stats["restarted"]))

    for _ in range(args.warmup):
        step()
    restarted.clear()
    times: list[float] = []
    c0 = cpu_seconds()
    while len(times) < args.repeats and (not times or sum(times) < args.repeat_budget):
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    cpu_used = cpu_seconds() - c0
    med = statistics.median(times)
    r = {
        "option": name, "kind": cfg.kind, "codebook_size": q.codebook_size,
        "levels": cfg.levels if cfg.kind == "fsq" else None,
        "config": {k: v for k, v in vars(cfg).items() if k != "levels"} if cfg.kind == "vq" else None,
        "n_vectors": args.n, "input_width": width, "lookups": lookups,
        "params": sum(p.numel() for p in q.parameters()),
        "times_s": times, "repeats": len(times), "median_s": med, "min_s": min(times),
        "vectors_per_s": args.n / med,
        "cpu_utilisation": cpu_used / sum(times) / torch.get_num_threads() if device.type == "cpu" else None,
    }
    if restarted:
        r["restarted_per_call_mean"] = statistics.mean(restarted)
    r["_step"] = step   # kept for the memory pass, dropped before writing JSON
    r["_keep"] = (q, z)
    return r


def measure_memory(results: list[dict], device: torch.device) -> str:
    """Peak extra memory of one more call of every option; returns how it was measured."""
    if device.type == "cuda":
        for r in results:
            gc.collect()
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            r["_step"]()
            torch.cuda.synchronize(device)
            r["peak_memory_mb"] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
        return "cuda max_memory_allocated during one call minus memory_allocated before it"
    mem = CpuPeakMemory()
    if not mem.use_mmap_for_large_allocations():
        for r in results:
            r["peak_memory_mb"] = None
        return f"n/a: {mem.why}"
    for r in results:
        mem.measure(r["_step"])                  # one call in the new malloc mode first
        r["peak_memory_mb"] = mem.measure(r["_step"])
    return ("peak RSS growth during one call (VmHWM reset via /proc/self/clear_refs, minus VmRSS before; "
            "malloc_trim(0) before the call, malloc mmap threshold fixed at 64 KiB)")


# ---- main ------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=8 * 32 * 32,
                    help="latent vectors per call (default: %(default)s = 8 x 32 x 32)")
    ap.add_argument("--dim", type=int, default=32,
                    help="latent width for vq (default: %(default)s); fsq takes one dim per level")
    ap.add_argument("--sizes", choices=["small", "large", "both"], default="both",
                    help="codebooks: small = vq 1024 / fsq [8,5,5,5]; large = vq 16384 / fsq [8,8,8,6,5] "
                         "(default: %(default)s)")
    ap.add_argument("--options", nargs="+", default=None, metavar="NAME",
                    help=f"subset of options by name (default: all: {'; '.join(n for n, _ in OPTIONS)})")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="auto = CUDA when available (default: %(default)s)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls first (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=10, help="timed calls, median (default: %(default)s)")
    ap.add_argument("--repeat-budget", type=float, default=2.0,
                    help="stop repeating an option once this many seconds are spent, at least 1 call "
                         "(default: %(default)s)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.n < 1 or args.dim < 1 or args.repeats < 1 or args.warmup < 0:
        ap.error("--n, --dim and --repeats must be >= 1, --warmup >= 0")
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
    sizes = {"small": SIZES[:1], "large": SIZES[1:], "both": SIZES}[args.sizes]

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    started = dt.datetime.now(dt.timezone.utc)
    load_before = loadavg()
    print(f"device: {device_description(device)}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"load average before: {load_before}", flush=True)
    print(f"N = {args.n} latent vectors, vq dim {args.dim}, float32, forward + backward in train mode", flush=True)
    t_all = time.perf_counter()
    results = []
    for size, levels in sizes:
        for name, fields in options:
            r = bench_option(name, fields, size, levels, args, device)
            results.append(r)
            print(f"  {name:<22} K={r['codebook_size']:<6} {r['median_s'] * 1000:9.2f} ms "
                  f"(median of {r['repeats']})  {r['vectors_per_s']:12.0f} vectors/s", flush=True)
    memory_kind = measure_memory(results, device)
    wall = time.perf_counter() - t_all
    load_after = loadavg()
    for r in results:
        r.pop("_step"); r.pop("_keep")

    mem_col = "peak GPU MB" if device.type == "cuda" else "peak RSS MB"
    rows = [[r["option"], str(r["codebook_size"]), str(r["n_vectors"]), str(r["lookups"]),
             f"{r['median_s'] * 1000:.2f}", f"{r['vectors_per_s']:.3g}", _fmt(r["peak_memory_mb"], ".1f"),
             _fmt(r["cpu_utilisation"], ".2f")] for r in results]
    print_table(f"Quantiser forward + backward (float32, {device.type})",
                ["option", "K", "N", "lookups", "fwd+bwd ms", "vectors/s", mem_col, "CPU use"], rows)
    print(f"\n{mem_col}: {memory_kind}")
    print(f"wall time {wall:.0f} s; load average (1, 5, 15 min) before {load_before}, after {load_after}")

    report = {
        "benchmark": "quantizers",
        "date": started.isoformat(timespec="seconds"),
        "device": device.type,
        "device_description": device_description(device),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "python_version": platform.python_version(),
        "cpu_model": cpu_model(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "wall_s": wall,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "peak_memory_kind": memory_kind,
        "notes": ["random N(0, 1) latents and untrained codebooks: speed and memory only",
                  "one call = quantizer(z) + backward of mean(z_q^2) + auxiliary loss, train mode, float32",
                  "multichannel splits each dim-wide vector into `channels` chunks: lookups = channels x N",
                  "fsq input width is the number of levels (4 or 5), not --dim",
                  "restart_dead_codes: the EMA usage update runs every call; codes are re-seeded only once "
                  "they are dead (see restarted_per_call_mean)"],
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
