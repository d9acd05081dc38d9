"""Helpers shared by the benchmark scripts in this folder (not a benchmark itself).

The scripts run as `python benchmarks/NAME.py`, which puts this folder on sys.path; each also adds it
itself, so they import from the repository root too. Importing this module makes `vqkit` importable
from a checkout without `pip install -e .`.
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib.util
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

if importlib.util.find_spec("vqkit") is None:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(HERE.parent / "src"))


# ---- device and machine ------------------------------------------------------------------

def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    return torch.device(name)


def setup_device(args: argparse.Namespace) -> torch.device:
    """--threads (when given), then --device."""
    if args.threads:
        torch.set_num_threads(args.threads)
    return pick_device(args.device)


def resolve_precision(name: str, device: torch.device) -> str:
    """--precision: auto = bf16 on CUDA, fp32 on CPU."""
    return name if name != "auto" else ("bf16" if device.type == "cuda" else "fp32")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device, reset_peak: bool = True) -> None:
    """Collect garbage; on CUDA also empty the cache and (reset_peak) reset the peak statistics."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        if reset_peak:
            torch.cuda.reset_peak_memory_stats(device)


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


# ---- memory --------------------------------------------------------------------------------

def proc_status_mb(key: str) -> float:
    """A kB field of /proc/self/status (Linux) in MiB; OSError / ValueError where there is none."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024   # kB -> MiB
    raise ValueError(f"{key} not in /proc/self/status")


def _proc_status_mb_or_none(key: str) -> float | None:
    try:
        return proc_status_mb(key)
    except (OSError, ValueError):
        return None


def clear_rss_peak() -> None:
    """Reset VmHWM (peak RSS) to the current RSS (Linux >= 4.0); OSError elsewhere."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def reset_rss_peak() -> bool:
    """Linux: reset the process's peak RSS (VmHWM) to its current RSS, so each phase gets its own peak."""
    try:
        clear_rss_peak()
        return _proc_status_mb_or_none("VmHWM") is not None
    except OSError:
        return False


def ru_maxrss_mb() -> float:
    """Process peak resident set size since it started (ru_maxrss: KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def rss_peak_mb() -> float:
    """Peak resident set size: VmHWM (since the last reset) on Linux, else ru_maxrss (whole process)."""
    hwm = _proc_status_mb_or_none("VmHWM")
    return hwm if hwm is not None else ru_maxrss_mb()


def rss_now_mb() -> float | None:
    return _proc_status_mb_or_none("VmRSS")


def start_cpu_peak() -> tuple[bool, float]:
    """(per-phase peak available, baseline MB) at the start of a phase."""
    gc.collect()
    if reset_rss_peak():
        return True, rss_now_mb() or 0.0
    return False, rss_peak_mb()


def cpu_peak(started: tuple[bool, float]) -> dict:
    per_phase, base = started
    peak = rss_peak_mb()
    kind = ("process peak RSS during this phase (VmHWM reset via /proc/self/clear_refs at its start); "
            "delta = peak minus RSS at the start" if per_phase else
            "process peak RSS so far (ru_maxrss, includes earlier presets); delta = growth during this phase")
    return {"peak_memory_mb": peak, "peak_memory_delta_mb": peak - base, "peak_memory_kind": kind}


def cuda_peak(device: torch.device) -> dict:
    return {"peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2**20,
            "peak_memory_kind": "cuda max_memory_allocated"}


# ---- time ----------------------------------------------------------------------------------

def cpu_seconds() -> float:
    """User + system CPU time of this process so far (all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def sys_seconds() -> float:
    """System (kernel) CPU time of this process so far: mostly page faults of freshly mapped memory,
    mmap/munmap."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def count(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def time_calls(fn: Callable[[], Any], device: torch.device, repeats: int, budget_s: float,
               min_repeats: int = 1) -> list[float]:
    """Wall times of up to `repeats` calls of `fn` (at least `min_repeats`; no more once `budget_s`
    is spent), each between device synchronisations. The caller warms up first."""
    times: list[float] = []
    while len(times) < repeats and (len(times) < min_repeats or sum(times) < budget_s):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def timed(fn: Callable[[], Any], device: torch.device, repeats: int, budget_s: float, min_repeats: int = 1,
          cpu_use: bool = True) -> dict:
    """Median wall time of `fn` over `time_calls`; with cpu_use also "cpu_utilisation" (CPU seconds
    per wall second over torch's threads, on CPU; None on CUDA). The caller warms up first."""
    c0 = cpu_seconds()
    times = time_calls(fn, device, repeats, budget_s, min_repeats)
    r: dict[str, Any] = {"median_s": statistics.median(times), "min_s": min(times), "repeats": len(times)}
    if cpu_use:
        r["cpu_utilisation"] = (cpu_seconds() - c0) / sum(times) / torch.get_num_threads() \
            if device.type == "cpu" else None
    return r


@dataclass
class TrainTimes:
    """The timed steps of `time_train_steps` (warm-up steps excluded)."""
    step_times: list[float] = field(default_factory=list)
    warmup_times: list[float] = field(default_factory=list)   # the untimed first steps (compiles show here)
    skipped: int = 0            # steps that returned None (non-finite loss), warm-up included
    gan_seen: bool = False      # a step returned both discriminator and adversarial-generator losses
    cpu_s: float = 0.0          # process CPU seconds during the timed steps
    sys_s: float = 0.0          # of which in the kernel

    @property
    def timed_s(self) -> float:
        return sum(self.step_times)

    @property
    def steps_per_s(self) -> float:
        return len(self.step_times) / self.timed_s if self.timed_s > 0 else float("nan")

    def summary(self, cpu_use: bool = True) -> dict:
        """step_times_s, step_s_mean, step_s_median and cpu_utilisation (None unless cpu_use)."""
        timed_s, steps = self.timed_s, len(self.step_times)
        return {
            "step_times_s": self.step_times,
            "step_s_mean": timed_s / steps if steps else None,
            "step_s_median": statistics.median(self.step_times) if self.step_times else None,
            # CPU seconds this process used per wall second of the timed steps, divided by torch's
            # thread count: well below 1 on CPU means the cores were shared with other work.
            "cpu_utilisation": self.cpu_s / timed_s / torch.get_num_threads() if timed_s > 0 and cpu_use else None,
        }


def time_train_steps(trainer: Any, batches: Sequence[tuple], warmup: int, device: torch.device) -> TrainTimes:
    """`trainer.train_step(*batches[i])` for every batch, printing each step's time; the first `warmup`
    steps are not timed. `batches[i]` is read inside the timed region: a list of ready batches adds
    nothing, a lazy sequence (crops cut and copied when indexed) is timed together with the step."""
    r = TrainTimes()
    total = len(batches)
    for i in range(total):
        c0, s0 = cpu_seconds(), sys_seconds()
        sync(device)
        t = time.perf_counter()
        values = trainer.train_step(*batches[i])
        sync(device)
        dt_s = time.perf_counter() - t
        r.skipped += values is None
        r.gan_seen = r.gan_seen or (values is not None and "d" in values and "g_adv" in values)
        phase = "warm-up" if i < warmup else "timed"
        print(f"  train step {i + 1}/{total} ({phase}): {dt_s:.3f} s", flush=True)
        if i < warmup:
            r.warmup_times.append(dt_s)
        else:
            r.step_times.append(dt_s)
            r.cpu_s += cpu_seconds() - c0
            r.sys_s += sys_seconds() - s0
    return r


def build_trainer(trainer_cls: type, cfg: Any, run_dir: str, data: list[torch.Tensor]) -> tuple[Any, float]:
    """A quiet `trainer_cls` (vqkit's Trainer, which the script imports up front so that the import is
    not inside any measurement) on `data`, no validation set, and the seconds its construction took."""
    t0 = time.perf_counter()
    trainer = trainer_cls(cfg, run_dir, data, None, log=lambda s: None, progress=False)
    return trainer, time.perf_counter() - t0


def discriminator(trainer: Any) -> torch.nn.Module | None:
    return trainer.acc.unwrap_model(trainer.disc) if trainer.disc is not None else None


def drop_training_state(trainer: Any) -> None:
    """Before timing inference: the generator in eval mode, optimiser state and discriminators freed."""
    trainer.raw_model.eval()
    trainer.opt_g = trainer.opt_d = trainer.disc = trainer.d_pair = None


# ---- command line ----------------------------------------------------------------------------

def add_preset_args(ap: argparse.ArgumentParser, presets: list[str], train_steps_defaults: str) -> None:
    """--presets, --device, --train-steps, --warmup-steps (the tokenizer benchmarks)."""
    ap.add_argument("--presets", nargs="+", default=presets, help="presets to benchmark (default: %(default)s)")
    add_device_arg(ap)
    ap.add_argument("--train-steps", type=int, default=None,
                    help=f"timed training steps after warm-up (default: {train_steps_defaults})")
    ap.add_argument("--warmup-steps", type=int, default=2, help="untimed training steps first (default: %(default)s)")


def add_device_arg(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="auto = CUDA when available (default: %(default)s)")


def add_repeat_args(ap: argparse.ArgumentParser, what: str, repeats: int, budget_s: float,
                    repeats_help: str | None = None, min_repeats: int | None = 3) -> None:
    """--repeats, --repeat-budget and, unless min_repeats is None, --min-repeats, for timing each `what`
    ("option", "inference measurement")."""
    an = "an" if what[:1].lower() in "aeiou" else "a"
    ap.add_argument("--repeats", type=int, default=repeats,
                    help=f"{repeats_help or f'timed repeats per {what}, median'} (default: %(default)s)")
    until = "at least 1 repeat" if min_repeats is None else "--min-repeats calls are timed"
    ap.add_argument("--repeat-budget", type=float, default=budget_s,
                    help=f"stop repeating {an} {what} once this many seconds are spent"
                         f"{',' if min_repeats is None else ' and'} {until} (default: %(default)s)")
    if min_repeats is not None:
        ap.add_argument("--min-repeats", type=int, default=min_repeats,
                        help=f"timed calls per {what} even past --repeat-budget (default: %(default)s)")


def add_threads_out_args(ap: argparse.ArgumentParser, default_out: Path) -> None:
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=default_out, help="JSON output path (default: %(default)s)")


# ---- report ----------------------------------------------------------------------------------

def fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def mem_column(device: torch.device) -> str:
    return "peak GPU MB" if device.type == "cuda" else "peak RSS MB"


def train_table(results: list[dict], device: torch.device, title: str, size: tuple[str, str],
                rates: list[tuple[str, str, str]]) -> tuple[str, list[str], list[list[str]]]:
    """The training table of the tokenizer benchmarks. size: (train key, column) of the crop or segment;
    rates: (train key, column, format) of the throughputs after steps/s."""
    rows = []
    for r in results:
        t = r["train"]
        rows.append([r["preset"], str(t["batch_size"]), str(t[size[0]]), str(t["timed_steps"]),
                     fmt(t["step_s_mean"], ".3f"), fmt(t["step_s_median"], ".3f"), fmt(t["steps_per_s"], ".3f"),
                     *(fmt(t[key], spec) for key, _, spec in rates),
                     fmt(t["peak_memory_mb"], ".0f"), fmt(t["cpu_utilisation"], ".2f"),
                     "yes" if t["gan_active"] else "NO"])
    header = ["preset", "batch", size[1], "steps", "s/step", "median", "steps/s", *(col for _, col, _ in rates),
              mem_column(device), "CPU use", "GAN"]
    return title, header, rows


def print_table(title: str, header: list[str], rows: list[list[str]], use_rich: bool = False) -> None:
    """Left-aligned first column, right-aligned others; with use_rich, a rich table where rich is
    installed."""
    if use_rich:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            pass
        else:
            table = Table(title=title)
            for j, h in enumerate(header):
                table.add_column(h, justify="left" if j == 0 else "right", no_wrap=True)
            for row in rows:
                table.add_row(*row)
            # Wide enough never to truncate cells, also when stdout is a pipe (rich assumes 80 columns).
            Console(width=max(160, shutil.get_terminal_size().columns)).print(table)
            return
    widths = [max(len(h), *(len(row[j]) for row in rows)) for j, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) if j == 0 else c.rjust(w)  # noqa: E731
                                    for j, (c, w) in enumerate(zip(cells, widths)))
    print(f"\n{title}")
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


def print_tables(specs: list[tuple[str, list[str], list[list[str]]]], use_rich: bool = False) -> None:
    for title, header, rows in specs:
        print_table(title, header, rows, use_rich)


def start_run(device: torch.device) -> tuple[dt.datetime, list[float] | None]:
    """(start time, load average before), after printing the device line."""
    started = dt.datetime.now(dt.timezone.utc)
    load_before = loadavg()
    print(f"device: {device_description(device)}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"load average before: {load_before}", flush=True)
    return started, load_before


def wall_line(wall: float, load_before: list[float] | None, load_after: list[float] | None) -> str:
    return f"wall time {wall:.0f} s; load average (1, 5, 15 min) before {load_before}, after {load_after}"


def write_report(out: Path, benchmark: str, started: dt.datetime, device: torch.device,
                 load_before: list[float] | None, load_after: list[float] | None, wall: float,
                 args: argparse.Namespace, **fields: Any) -> None:
    """Writes the JSON report: the fields every benchmark shares, then the script's own `fields` in order."""
    report = {
        "benchmark": benchmark,
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
        **fields,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
