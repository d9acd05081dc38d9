#!/usr/bin/env python
"""Throughput benchmark for the image tokenizer presets (a script, not a test).

For each preset it measures:
  * training: `Trainer.train_step` on the preset's own batch size and crop (data.image_size), with
    the GAN active from step 0 (loss.gan_start_step=0) and the perceptual loss off (loss.perceptual=0:
    its VGG16 / LPIPS weights are local files that are not assumed present), after warm-up steps
    -> steps/s, training images/s, peak memory, CPU use;
  * inference: `Tokenizer.encode` and `decode` at --size x --size (256), batch 1 and batch 8, in
    eval mode and float32 -> images/s;
  * sizes: parameter counts (generator = encoder + quantiser + decoder; discriminator), the token grid
    of one --size image and its bits (tokens x log2 codebook).

Images: the photographs bundled with scikit-image (no download), or synthetic smooth noise with
--data synthetic or when scikit-image is missing. It prints tables and writes JSON (default
benchmarks/results/image_tokenizer.json).

    .venv/bin/python benchmarks/bench_image_tokenizer.py                     # all six presets
    .venv/bin/python benchmarks/bench_image_tokenizer.py --presets vqgan vit-vq --train-steps 10
    python benchmarks/bench_image_tokenizer.py --device cuda --train-steps 50

The weights are random: the numbers are speed and size only, never quality.
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import importlib.util
import json
import math
import os
import platform
import resource
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
from vqkit.data.image_corpus import center_crop_batch  # noqa: E402
from vqkit.training.trainer import Trainer  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "image_tokenizer.json"
DEFAULT_PRESETS = ["vqgan", "vqgan-l2", "movq", "seqgan", "convnext-vq", "vit-vq"]

# Defaults chosen so that the script with no arguments finishes in about 3 minutes on 2 idle CPU cores.
CPU_TRAIN_STEPS = 10
CUDA_TRAIN_STEPS = 20
INFER_BATCHES = (1, 8)
PERCEPTUAL_NOTE = ("perceptual loss off (loss.perceptual=0): the VGG16 / LPIPS weights it needs are local "
                   "files that are not assumed to be present, so training steps omit a VGG16 forward+backward")

# Colour photographs bundled in the scikit-image wheel (skimage.data function, file in its data folder).
PHOTOS = (("astronaut", "astronaut.png"), ("chelsea", "chelsea.png"), ("coffee", "coffee.png"),
          ("rocket", "rocket.jpg"), ("immunohistochemistry", "ihc.png"), ("retina", "retina.jpg"),
          ("hubble_deep_field", "hubble_deep_field.jpg"))


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


def sys_seconds() -> float:
    """System (kernel) CPU time of this process so far: mostly page faults of freshly mapped memory."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def count(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def timed(fn: Callable[[], Any], device: torch.device, repeats: int, budget_s: float) -> dict:
    """Median wall time of `fn` over up to `repeats` calls (at least one; fewer once `budget_s` is spent).
    The caller warms up first."""
    times: list[float] = []
    c0 = cpu_seconds()
    while len(times) < repeats and (not times or sum(times) < budget_s):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    cpu = (cpu_seconds() - c0) / sum(times) / torch.get_num_threads() if device.type == "cpu" else None
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": len(times), "cpu_utilisation": cpu}


# ---- data ------------------------------------------------------------------------------------

def photographs() -> tuple[list[torch.Tensor], str] | None:
    """scikit-image's bundled colour photographs as (3, H, W) float32 in [-1, 1]; None without skimage."""
    if importlib.util.find_spec("skimage") is None:
        return None
    import numpy as np
    import skimage
    import skimage.data as data

    folder = Path(data.__file__).parent
    images, names = [], []
    for func, filename in PHOTOS:
        # Only files inside the wheel: skimage.data would otherwise download some of them with pooch.
        if not hasattr(data, func) or not (folder / filename).is_file():
            continue
        try:
            arr = np.asarray(getattr(data, func)())
        except Exception:   # a damaged install: use the rest
            continue
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] < 3:
            continue
        images.append(torch.from_numpy(arr[..., :3].copy()).permute(2, 0, 1).float() / 127.5 - 1.0)
        names.append(func)
    if not images:
        return None
    return images, f"scikit-image {skimage.__version__} photographs: {', '.join(names)}"


def synthetic_images(n: int = 6, size: int = 512, seed: int = 0) -> list[torch.Tensor]:
    """Smooth colour noise in [-1, 1]: bilinearly upsampled 16x16 noise plus a little pixel noise."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        low = torch.randn(1, 3, 16, 16, generator=g)
        img = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)[0]
        img = img + 0.1 * torch.randn(3, size, size, generator=g)
        out.append(img.tanh())
    return out


def load_images(kind: str) -> tuple[list[torch.Tensor], str]:
    if kind == "photos":
        got = photographs()
        if got is not None:
            return got
        print("note: scikit-image (or its bundled photographs) not available: using synthetic images", flush=True)
    return synthetic_images(), "synthetic smooth colour noise (6 images, 512x512)"


# ---- one preset ----------------------------------------------------------------------------

def bench_preset(preset: str, images: list[torch.Tensor], args: argparse.Namespace, device: torch.device,
                 precision: str) -> dict:
    base = load_config(preset=preset)
    if base.model.modality != "image":
        raise SystemExit(f"{preset}: not an image preset (modality {base.model.modality!r})")
    steps = args.train_steps if args.train_steps is not None else (
        CPU_TRAIN_STEPS if device.type == "cpu" else CUDA_TRAIN_STEPS)
    overrides = [
        "loss.gan_start_step=0",              # timed steps include both discriminator and GAN-G passes
        "loss.perceptual=0.0",
        f"train.device={device.type}",
        f"train.precision={precision}",
        "data.num_workers=0",
    ]
    if args.batch_size is not None:
        overrides.append(f"train.batch_size={args.batch_size}")
    cfg: Config = load_config(preset=preset, overrides=overrides)
    batch, crop = cfg.train.batch_size, cfg.data.image_size
    q = cfg.model.quantizer
    result: dict[str, Any] = {
        "preset": preset,
        "config": {"backbone": cfg.model.backbone.kind, "channels": cfg.model.backbone.channels,
                   "downsample": cfg.model.backbone.downsample, "quantizer": q.kind,
                   "codebook_size": q.codebook_size, "dim": q.dim, "codebook_dim": q.codebook_dim,
                   "l2_norm": q.l2_norm, "entropy_weight": q.entropy_weight, "vq_channels": q.channels,
                   "discriminator": cfg.discriminator.kind, "gan_loss": cfg.loss.gan_loss,
                   "adaptive_gan_weight": cfg.loss.adaptive_gan_weight, "perceptual": cfg.loss.perceptual},
    }
    print(f"\n== {preset}: batch {batch}, crop {crop}x{crop}, {args.warmup_steps} warm-up + {steps} timed steps, "
          f"precision {precision}, perceptual loss off", flush=True)

    # ---- training ----
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = rss_peak_mb()
    with tempfile.TemporaryDirectory(prefix=f"bench-{preset}-") as run_dir:
        t0 = time.perf_counter()
        trainer = Trainer(cfg, run_dir, images, None, log=lambda s: None, progress=False)
        build_s = time.perf_counter() - t0
        model = trainer.raw_model
        disc = trainer.acc.unwrap_model(trainer.disc) if trainer.disc is not None else None
        result["params"] = {"generator": count(model), "encoder": count(model.encoder),
                            "quantizer": count(model.quantizer), "decoder": count(model.decoder),
                            "refiner": count(model.refiner), "discriminator": count(disc)}
        grid = model.token_grid(args.size, args.size)
        tokens = math.prod(grid)
        result["tokens"] = {"image_size": args.size, "grid": list(grid), "tokens_per_image": tokens,
                            "codebook_size": model.codebook_size, "bits_per_token": model.bits_per_token,
                            "bits_per_image": tokens * model.bits_per_token,
                            "bits_per_pixel": tokens * model.bits_per_token / args.size ** 2}
        # Crops are cut and moved to the device before timing: the numbers are the step itself.
        total = args.warmup_steps + steps
        batches = [trainer.batches[i][0].to(trainer.acc.device) for i in range(total)]
        step_times, skipped, gan_seen, cpu_timed, sys_timed = [], 0, False, 0.0, 0.0
        for i, x in enumerate(batches):
            c0, s0 = cpu_seconds(), sys_seconds()
            sync(device)
            t = time.perf_counter()
            values = trainer.train_step(x, None)   # images: no mask
            sync(device)
            dt_s = time.perf_counter() - t
            skipped += values is None
            gan_seen = gan_seen or (values is not None and "d" in values and "g_adv" in values)
            phase = "warm-up" if i < args.warmup_steps else "timed"
            print(f"  train step {i + 1}/{total} ({phase}): {dt_s:.3f} s", flush=True)
            if i >= args.warmup_steps:
                step_times.append(dt_s)
                cpu_timed += cpu_seconds() - c0
                sys_timed += sys_seconds() - s0
        timed_s = sum(step_times)
        sps = steps / timed_s if timed_s > 0 else float("nan")
        train = {
            "batch_size": batch, "batch_size_preset": base.train.batch_size, "crop": crop,
            "precision": precision, "warmup_steps": args.warmup_steps, "timed_steps": steps,
            "gan_active": gan_seen, "perceptual": False, "skipped_nonfinite_steps": skipped, "build_s": build_s,
            "step_times_s": step_times,
            "step_s_mean": timed_s / steps if steps else None,
            "step_s_median": statistics.median(step_times) if step_times else None,
            # CPU seconds this process used per wall second of the timed steps, divided by torch's
            # thread count: well below 1 on CPU means the cores were shared with other work.
            "cpu_utilisation": cpu_timed / timed_s / torch.get_num_threads()
            if timed_s > 0 and device.type == "cpu" else None,
            "sys_fraction": sys_timed / cpu_timed if cpu_timed > 0 and device.type == "cpu" else None,
            "steps_per_s": sps, "images_per_s": sps * batch,
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
        print(f"  -> {sps:.3f} steps/s, {train['images_per_s']:.1f} images/s ({crop}x{crop}), "
              f"GAN active: {gan_seen}", flush=True)

        # ---- inference ----
        model.eval()
        disc = None
        trainer.opt_g = trainer.opt_d = trainer.disc = None   # free optimiser state and discriminator
        del batches, trainer
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        result["inference"] = bench_inference(model, images, args, device)
        del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def bench_inference(model, images: list[torch.Tensor], args: argparse.Namespace, device: torch.device) -> dict:
    size = args.size
    # Centre crops of the photographs (upscaled when smaller), cycled to fill the largest batch.
    crops = center_crop_batch(images, size)
    big = max(INFER_BATCHES)
    x_all = crops[torch.arange(big) % crops.shape[0]].to(device)
    out: dict[str, Any] = {"image_size": size, "precision": "float32"}
    for b in INFER_BATCHES:
        x = x_all[:b]
        tokens = model.encode(x)          # warm-up (lazy init, allocator, kernel selection)
        model.decode(tokens)
        enc = timed(lambda: model.encode(x), device, args.repeats, args.repeat_budget)
        dec = timed(lambda: model.decode(tokens), device, args.repeats, args.repeat_budget)
        for name, r in (("encode", enc), ("decode", dec)):
            r["images_per_s"] = b / r["median_s"]
            out[f"{name}_b{b}"] = r
            print(f"  {name} batch {b}: {r['median_s'] * 1000:9.1f} ms (median of {r['repeats']})  "
                  f"{r['images_per_s']:8.2f} images/s", flush=True)
    if device.type == "cuda":
        out["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


# ---- report ---------------------------------------------------------------------------------

def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def tables(results: list[dict], device: torch.device, size: int) -> list[tuple[str, list[str], list[list[str]]]]:
    mem = "peak GPU MB" if device.type == "cuda" else "peak RSS MB"
    train_rows, inf_rows, size_rows = [], [], []
    for r in results:
        t, i, p, k = r["train"], r["inference"], r["params"], r["tokens"]
        train_rows.append([r["preset"], str(t["batch_size"]), str(t["crop"]), str(t["timed_steps"]),
                           _fmt(t["step_s_mean"], ".3f"), _fmt(t["step_s_median"], ".3f"),
                           _fmt(t["steps_per_s"], ".3f"), _fmt(t["images_per_s"], ".1f"),
                           _fmt(t["peak_memory_mb"], ".0f"), _fmt(t["cpu_utilisation"], ".2f"),
                           "yes" if t["gan_active"] else "NO"])
        ips = lambda key: _fmt(i[key]["images_per_s"], ".2f")  # noqa: E731
        inf_rows.append([r["preset"]] + [ips(f"{n}_b{b}") for n in ("encode", "decode") for b in INFER_BATCHES])
        grid = "x".join(str(g) for g in k["grid"])
        size_rows.append([r["preset"], f"{p['generator'] / 1e6:.2f}", f"{p['encoder'] / 1e6:.2f}",
                          f"{p['quantizer'] / 1e6:.3f}", f"{p['decoder'] / 1e6:.2f}",
                          f"{p['discriminator'] / 1e6:.2f}", grid, str(k["tokens_per_image"]),
                          str(k["codebook_size"]), f"{k['bits_per_image']:.0f}"])
    return [
        ("Training (GAN active, perceptual loss off)",
         ["preset", "batch", "crop", "steps", "s/step", "median", "steps/s", "images/s", mem, "CPU use", "GAN"],
         train_rows),
        (f"Inference at {size}x{size}, float32 (images/s)",
         ["preset"] + [f"{n} b{b}" for n in ("encode", "decode") for b in INFER_BATCHES], inf_rows),
        (f"Size (tokens and bits per {size}x{size} image)",
         ["preset", "G params M", "enc M", "quant M", "dec M", "D params M", "grid", "tokens", "codebook",
          "bits"], size_rows),
    ]


def print_tables(specs) -> None:
    for title, header, rows in specs:
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
                    help=f"timed training steps after warm-up "
                         f"(default: CPU {CPU_TRAIN_STEPS}, CUDA {CUDA_TRAIN_STEPS})")
    ap.add_argument("--warmup-steps", type=int, default=2, help="untimed training steps first (default: %(default)s)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="training batch for every preset (default: the preset's)")
    ap.add_argument("--size", type=int, default=256,
                    help="image side for encode/decode throughput and the token grid (default: %(default)s)")
    ap.add_argument("--data", choices=["photos", "synthetic"], default="photos",
                    help="scikit-image's bundled photographs (synthetic when missing) or synthetic images "
                         "(default: %(default)s)")
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="training autocast; auto = bf16 on CUDA, fp32 on CPU (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=5,
                    help="timed repeats per inference measurement, median (default: %(default)s)")
    ap.add_argument("--repeat-budget", type=float, default=2.0,
                    help="stop repeating an inference measurement once this many seconds are spent, "
                         "at least 1 repeat (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.train_steps is not None and args.train_steps < 1:
        ap.error("--train-steps must be >= 1")
    if args.warmup_steps < 0 or args.repeats < 1 or args.size < 8:
        ap.error("--warmup-steps must be >= 0, --repeats >= 1 and --size >= 8")
    if args.batch_size is not None and args.batch_size < 1:
        ap.error("--batch-size must be >= 1")

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    precision = args.precision if args.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    warnings.filterwarnings("ignore", category=UserWarning, module="accelerate")

    started = dt.datetime.now(dt.timezone.utc)
    load_before = loadavg()
    print(f"device: {device_description(device)}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"load average before: {load_before}", flush=True)
    images, data_note = load_images(args.data)
    print(f"data: {data_note}", flush=True)
    print(f"note: {PERCEPTUAL_NOTE}", flush=True)
    t_all = time.perf_counter()
    results = [bench_preset(p, images, args, device, precision) for p in args.presets]
    wall = time.perf_counter() - t_all
    load_after = loadavg()

    print_tables(tables(results, device, args.size))
    print(f"\nnote: {PERCEPTUAL_NOTE}")
    print(f"wall time {wall:.0f} s; load average (1, 5, 15 min) before {load_before}, after {load_after}")

    report = {
        "benchmark": "image_tokenizer",
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
        "data": data_note,
        "notes": ["random weights: speed and size only", PERCEPTUAL_NOTE,
                  "train timings exclude crop cutting and host->device copies",
                  "inference runs in float32 in eval mode without autocast, on centre crops"],
        "presets": {r["preset"]: r for r in results},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
