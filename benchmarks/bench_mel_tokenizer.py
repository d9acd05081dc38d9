#!/usr/bin/env python
"""Throughput benchmark for the MQGAN Refiner mel tokenizer (a script, not a test).

For each preset it measures, on synthetic log-mel data:
  * training: `Trainer.train_step` with the GAN active (loss.gan_start_step=0), after warm-up steps
    -> steps/s, mel frames/s, seconds of training audio per second, peak memory;
  * inference: `Tokenizer.encode`, `decode` (refined and draft), the mel frontend (audio -> log-mel)
    and, where the preset's mels are HiFi-GAN V1's and the shipped weights are installed, the HiFi-GAN
    vocoder -> seconds of audio processed per wall-clock second (x real time);
  * sizes: parameter counts, tokens/s and bits/s.

It prints tables and writes JSON (default benchmarks/results/mel_tokenizer.json).

    .venv/bin/python benchmarks/bench_mel_tokenizer.py                      # both presets, defaults
    .venv/bin/python benchmarks/bench_mel_tokenizer.py --presets mqgan-refiner --train-steps 20
    python benchmarks/bench_mel_tokenizer.py --device cuda --precision bf16 --train-steps 50

The weights are random: the numbers are speed and size only, never quality.
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
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

if importlib.util.find_spec("vqkit") is None:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from vqkit.config import Config, load_config  # noqa: E402
from vqkit.training.trainer import Trainer  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "mel_tokenizer.json"
DEFAULT_PRESETS = ["mqgan-refiner", "mqgan-44k"]

# Defaults chosen so that `bench_mel_tokenizer.py` with no arguments finishes in about 3 minutes on
# 2 CPU cores. On CPU the reference preset (~32M generator params, 2D discriminators of 256-512
# channels) takes tens of seconds per step, so it runs fewer steps at a smaller batch there.
CPU_TRAIN_STEPS = {"mqgan-44k": 2}
CPU_TRAIN_STEPS_OTHER = 5
CUDA_TRAIN_STEPS = 20
CPU_BATCH = {"mqgan-44k": 1}      # presets not listed keep their own train.batch_size


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


def rss_peak_mb() -> float:
    """Process peak resident set size (ru_maxrss: KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def count(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def timed(fn: Callable[[], Any], device: torch.device, repeats: int, budget_s: float) -> dict:
    """Median wall time of `fn` over up to `repeats` calls (at least one; fewer once `budget_s` is spent).
    The caller warms up first."""
    times: list[float] = []
    while len(times) < repeats and (not times or sum(times) < budget_s):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": len(times)}


def synthetic_clips(n_mels: int, segment: int, n: int = 6, seed: int = 0) -> list[torch.Tensor]:
    """Log-mel-like clips: N(-5, 2) noise (the scale of natural log-mel), a few hundred frames each."""
    g = torch.Generator().manual_seed(seed)
    clips = []
    for _ in range(n):
        frames = max(2 * segment, int(torch.randint(400, 900, (1,), generator=g)))
        clips.append(torch.randn(n_mels, frames, generator=g) * 2.0 - 5.0)
    return clips


# ---- one preset ----------------------------------------------------------------------------

def bench_preset(preset: str, args: argparse.Namespace, device: torch.device, precision: str) -> dict:
    base = load_config(preset=preset)
    if args.batch_size is not None:
        batch = args.batch_size
    elif device.type == "cpu":
        batch = min(base.train.batch_size, CPU_BATCH.get(preset, base.train.batch_size))
    else:
        batch = base.train.batch_size
    if args.train_steps is not None:
        steps = args.train_steps
    elif device.type == "cpu":
        steps = CPU_TRAIN_STEPS.get(preset, CPU_TRAIN_STEPS_OTHER)
    else:
        steps = CUDA_TRAIN_STEPS
    cfg: Config = load_config(preset=preset, overrides=[
        "loss.gan_start_step=0",              # timed steps include both discriminator and GAN-G passes
        f"train.device={device.type}",
        f"train.precision={precision}",
        f"train.batch_size={batch}",
        "data.num_workers=0",
    ])
    mel_cfg = cfg.model.mel
    fps = mel_cfg.frames_per_second
    seg = cfg.data.segment_frames
    result: dict[str, Any] = {
        "preset": preset,
        "config": {"sample_rate": mel_cfg.sample_rate, "hop_length": mel_cfg.hop_length, "n_mels": mel_cfg.n_mels,
                   "frames_per_second": fps, "segment_frames": seg, "downsample": cfg.model.backbone.downsample,
                   "quantizer_levels": cfg.model.quantizer.levels},
    }
    print(f"\n== {preset}: batch {batch} (preset {base.train.batch_size}), segment {seg} frames, "
          f"{args.warmup_steps} warm-up + {steps} timed steps, precision {precision}", flush=True)

    # ---- training ----
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = rss_peak_mb()
    clips = synthetic_clips(mel_cfg.n_mels, seg)
    with tempfile.TemporaryDirectory(prefix=f"bench-{preset}-") as run_dir:
        t0 = time.perf_counter()
        trainer = Trainer(cfg, run_dir, clips, None, log=lambda s: None, progress=False)
        build_s = time.perf_counter() - t0
        model = trainer.raw_model
        disc = trainer.acc.unwrap_model(trainer.disc) if trainer.disc is not None else None
        result["params"] = {
            "generator": count(model), "encoder": count(model.encoder), "quantizer": count(model.quantizer),
            "decoder": count(model.decoder), "refiner": count(model.refiner), "discriminators": count(disc),
        }
        result["rates"] = {"tokens_per_second": model.tokens_per_second, "codebook_size": model.codebook_size,
                           "bits_per_second": model.bits_per_second}
        # Batches are cut and moved to the device before timing: the numbers are the step itself.
        total = args.warmup_steps + steps
        batches = [tuple(t.to(trainer.acc.device) for t in trainer.batches[i]) for i in range(total)]
        step_times, skipped, gan_seen, cpu_timed = [], 0, False, 0.0
        for i, (mel, mask) in enumerate(batches):
            c0 = cpu_seconds()
            sync(device)
            t = time.perf_counter()
            values = trainer.train_step(mel, mask)
            sync(device)
            dt_s = time.perf_counter() - t
            skipped += values is None
            gan_seen = gan_seen or (values is not None and "d" in values and "g_adv" in values)
            phase = "warm-up" if i < args.warmup_steps else "timed"
            print(f"  train step {i + 1}/{total} ({phase}): {dt_s:.3f} s", flush=True)
            if i >= args.warmup_steps:
                step_times.append(dt_s)
                cpu_timed += cpu_seconds() - c0
        timed_s = sum(step_times)
        sps = steps / timed_s if timed_s > 0 else float("nan")
        train = {
            "batch_size": batch, "batch_size_preset": base.train.batch_size, "segment_frames": seg,
            "precision": precision, "warmup_steps": args.warmup_steps, "timed_steps": steps,
            "gan_active": gan_seen, "skipped_nonfinite_steps": skipped, "build_s": build_s,
            "step_times_s": step_times,
            "step_s_mean": timed_s / steps if steps else None,
            "step_s_median": statistics.median(step_times) if step_times else None,
            # CPU seconds this process used per wall second of the timed steps, divided by torch's
            # thread count: well below 1 on CPU means the cores were shared with other work.
            "cpu_utilisation": cpu_timed / timed_s / torch.get_num_threads() if timed_s > 0 else None,
            "steps_per_s": sps, "frames_per_s": sps * batch * seg, "audio_s_per_s": sps * batch * seg / fps,
        }
        if device.type == "cuda":
            train["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
            train["peak_memory_kind"] = "cuda max_memory_allocated"
        else:
            after = rss_peak_mb()
            train["peak_memory_mb"] = after
            train["peak_memory_delta_mb"] = after - rss_before
            train["peak_memory_kind"] = "process RSS peak (ru_maxrss); delta = growth during this preset"
        result["train"] = train
        print(f"  -> {sps:.3f} steps/s, {train['frames_per_s']:.0f} frames/s, "
              f"{train['audio_s_per_s']:.2f} s audio/s, GAN active: {gan_seen}", flush=True)

        # ---- inference ----
        model.eval()
        disc = None
        trainer.opt_g = trainer.opt_d = trainer.disc = None   # free optimiser state and discriminators
        del batches, trainer
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        result["inference"] = bench_inference(model, args, device)
        del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def bench_inference(model, args: argparse.Namespace, device: torch.device) -> dict:
    mel_cfg = model.config.model.mel
    seconds = args.seconds
    frames = max(model.downsample, round(seconds * mel_cfg.frames_per_second))
    audio_s = frames / mel_cfg.frames_per_second
    g = torch.Generator().manual_seed(1)
    log_mel = (torch.randn(mel_cfg.n_mels, frames, generator=g) * 2.0 - 5.0).to(device)
    samples = frames * mel_cfg.hop_length
    audio = (torch.randn(samples, generator=g) * 0.1).clamp(-1, 1).to(device)
    out: dict[str, Any] = {"audio_seconds": audio_s, "frames": frames, "precision": "float32"}

    def run(name: str, fn: Callable[[], Any], warm: Callable[[], Any]) -> None:
        warm()   # first call pays one-off costs (lazy init, allocator, kernel selection)
        r = timed(fn, device, args.repeats, args.repeat_budget)
        r["x_realtime"] = audio_s / r["median_s"]
        out[name] = r
        print(f"  {name:<15} {r['median_s'] * 1000:9.1f} ms (median of {r['repeats']})  "
              f"{r['x_realtime']:8.1f} x real time", flush=True)

    short = log_mel[:, : max(model.downsample, min(frames, round(mel_cfg.frames_per_second)))]
    tokens = model.encode(log_mel)
    out["tokens"] = int(tokens.numel())
    c0, w0 = cpu_seconds(), time.perf_counter()
    run("encode", lambda: model.encode(log_mel), lambda: model.encode(short))
    run("decode_refined", lambda: model.decode(tokens, refined=True), lambda: model.decode(model.encode(short)))
    run("decode_draft", lambda: model.decode(tokens, refined=False),
        lambda: model.decode(model.encode(short), refined=False))
    with torch.no_grad():
        run("frontend", lambda: model.frontend(audio), lambda: model.frontend(audio[: mel_cfg.sample_rate]))
    out["vocoder"] = None
    try:
        from vqkit.vocoders import HiFiGANVocoder, vocoder_for
        voc = vocoder_for(mel_cfg, device=device)
        if isinstance(voc, HiFiGANVocoder):
            decoded = model.decode(tokens)
            run("vocoder", lambda: voc(decoded), lambda: voc(decoded[:, : short.shape[-1]]))
            out["vocoder"]["name"] = voc.name
            out["vocoder"]["note"] = "includes the copy of the waveform back to CPU"
        else:
            out["vocoder_skipped"] = f"vocoder_for returns {voc.name} for these mel settings (HiFi-GAN V1 only)"
    except (ImportError, FileNotFoundError, ValueError) as e:
        out["vocoder_skipped"] = f"HiFi-GAN unavailable: {e}"
    out["cpu_utilisation"] = (cpu_seconds() - c0) / (time.perf_counter() - w0) / torch.get_num_threads()
    if "vocoder_skipped" in out:
        print(f"  vocoder         skipped: {out['vocoder_skipped']}", flush=True)
    if device.type == "cuda":
        out["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


# ---- report ---------------------------------------------------------------------------------

def _fmt(v: Any, spec: str) -> str:
    if v is None:
        return "-"
    return format(v, spec)


def tables(results: list[dict], device: torch.device) -> list[tuple[str, list[str], list[list[str]]]]:
    mem = "peak GPU MB" if device.type == "cuda" else "peak RSS MB"
    train_rows, inf_rows, size_rows = [], [], []
    for r in results:
        t, i, p, q = r["train"], r["inference"], r["params"], r["rates"]
        train_rows.append([r["preset"], str(t["batch_size"]), str(t["segment_frames"]), str(t["timed_steps"]),
                           _fmt(t["step_s_mean"], ".3f"), _fmt(t["step_s_median"], ".3f"),
                           _fmt(t["steps_per_s"], ".3f"),
                           _fmt(t["frames_per_s"], ".0f"), _fmt(t["audio_s_per_s"], ".2f"),
                           _fmt(t["peak_memory_mb"], ".0f"), _fmt(t["cpu_utilisation"], ".2f"),
                           "yes" if t["gan_active"] else "NO"])
        x = lambda k: _fmt(i[k]["x_realtime"], ".1f") if i.get(k) else "-"  # noqa: E731
        inf_rows.append([r["preset"], f"{i['audio_seconds']:.1f}", x("encode"), x("decode_refined"),
                         x("decode_draft"), x("frontend"), x("vocoder")])
        size_rows.append([r["preset"], f"{p['generator'] / 1e6:.2f}", f"{p['encoder'] / 1e6:.2f}",
                          f"{p['decoder'] / 1e6:.2f}", f"{p['refiner'] / 1e6:.2f}",
                          f"{p['discriminators'] / 1e6:.2f}", f"{q['tokens_per_second']:.2f}",
                          str(q["codebook_size"]), f"{q['bits_per_second']:.0f}"])
    return [
        ("Training (GAN active)", ["preset", "batch", "seg", "steps", "s/step", "median", "steps/s",
                                   "frames/s", "audio s/s", mem, "CPU use", "GAN"], train_rows),
        ("Inference (x real time = audio seconds per wall second)",
         ["preset", "audio s", "encode", "decode", "draft", "mel frontend", "HiFi-GAN"], inf_rows),
        ("Size", ["preset", "G params M", "enc M", "dec M", "refiner M", "D params M", "tokens/s",
                  "codebook", "bits/s"], size_rows),
    ]


def print_tables(specs) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        Console = None
    for title, header, rows in specs:
        if Console is not None:
            table = Table(title=title)
            for j, h in enumerate(header):
                table.add_column(h, justify="left" if j == 0 else "right", no_wrap=True)
            for row in rows:
                table.add_row(*row)
            # Wide enough never to truncate cells, also when stdout is a pipe (rich assumes 80 columns).
            Console(width=max(160, shutil.get_terminal_size().columns)).print(table)
            continue
        widths = [max(len(h), *(len(row[j]) for row in rows)) for j, h in enumerate(header)]
        line = lambda cells: "  ".join(c.ljust(w) if j == 0 else c.rjust(w)  # noqa: E731
                                        for j, (c, w) in enumerate(zip(cells, widths)))
        print(f"\n{title}")
        print(line(header))
        print("  ".join("-" * w for w in widths))
        for row in rows:
            print(line(row))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="+", default=DEFAULT_PRESETS, help="presets to benchmark (default: %(default)s)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="auto = CUDA when available (default: %(default)s)")
    ap.add_argument("--train-steps", type=int, default=None,
                    help=f"timed training steps after warm-up (default: CPU {CPU_TRAIN_STEPS_OTHER}, "
                         f"mqgan-44k on CPU {CPU_TRAIN_STEPS['mqgan-44k']}; CUDA {CUDA_TRAIN_STEPS})")
    ap.add_argument("--warmup-steps", type=int, default=2, help="untimed training steps first (default: %(default)s)")
    ap.add_argument("--seconds", type=float, default=10.0,
                    help="audio length for encode/decode throughput (default: %(default)s)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="training batch for every preset (default: the preset's; mqgan-44k on CPU: "
                         f"{CPU_BATCH['mqgan-44k']})")
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="training autocast; auto = bf16 on CUDA, no on CPU "
                         "(bf16 on CPU works but is slow; default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=5,
                    help="timed repeats per inference measurement, median (default: %(default)s)")
    ap.add_argument("--repeat-budget", type=float, default=3.0,
                    help="stop repeating an inference measurement once this many seconds are spent, "
                         "at least 1 repeat (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.train_steps is not None and args.train_steps < 1:
        ap.error("--train-steps must be >= 1")
    if args.warmup_steps < 0 or args.repeats < 1 or args.seconds <= 0:
        ap.error("--warmup-steps must be >= 0, --repeats >= 1 and --seconds > 0")
    if args.batch_size is not None and args.batch_size < 1:
        ap.error("--batch-size must be >= 1")

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    precision = args.precision if args.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    if device.type == "cpu" and precision == "bf16":
        print("note: bf16 autocast on CPU is supported but usually slower than float32", flush=True)
    warnings.filterwarnings("ignore", category=UserWarning, module="accelerate")

    started = dt.datetime.now(dt.timezone.utc)
    load_before = loadavg()
    print(f"device: {device_description(device)}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"load average before: {load_before}", flush=True)
    t_all = time.perf_counter()
    results = [bench_preset(p, args, device, precision) for p in args.presets]
    wall = time.perf_counter() - t_all
    load_after = loadavg()

    specs = tables(results, device)
    print_tables(specs)
    print(f"\nwall time {wall:.0f} s; load average (1, 5, 15 min) before {load_before}, after {load_after}")

    report = {
        "benchmark": "mel_tokenizer",
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
        "notes": ["random weights and synthetic N(-5, 2) log-mel: speed and size only",
                  "train timings exclude batch cutting and host->device copies",
                  "inference runs in float32 in eval mode, batch 1, without autocast"],
        "presets": {r["preset"]: r for r in results},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
