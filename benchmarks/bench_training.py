#!/usr/bin/env python
"""Training throughput of one tokenizer preset (a script, not a test).

Each row is its own `Trainer` (GAN on from step 0, so every step runs the discriminator update, the
generator and the adversarial loss) timed over `--steps` calls of `Trainer.train_step` after `--warmup`:
  * eager fp32, the baseline; one extra step under FlopCounterMode gives the FLOPs per step;
  * torch.compile (`train.compile=true`, inductor): the warm-up steps' extra time is the compile time;
  * bf16 autocast, eager and compiled (CUDA; on CPU only with --bf16-on-cpu);
  * data: crops cut from clips held in memory vs from the memory-mapped feature cache
    (`data.feature_cache`), with the cutting and the copy to the device inside the timed step.
Before that it times loading the corpus: decoding every file into memory (`vqkit train` without the
cache), the first build of the feature cache, and reopening it.

    .venv/bin/python benchmarks/bench_training.py                    # mqgan-refiner on CPU, ~4 min idle
    .venv/bin/python benchmarks/bench_training.py --no-compile --max-files 100
    python benchmarks/bench_training.py --device cuda                # adds bf16 rows and MFU

It prints a table and writes JSON (default benchmarks/results/training.json). Weights are random:
the numbers are speed only, never quality.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# A fresh inductor (and triton) cache for this process, so "compile s" is a cold compile: inductor
# otherwise reuses kernels from earlier runs on disk. Set before torch is imported.
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    _COMPILE_CACHE = tempfile.mkdtemp(prefix="bench-inductor-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = _COMPILE_CACHE
    os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(_COMPILE_CACHE, "triton"))
    atexit.register(shutil.rmtree, _COMPILE_CACHE, True)

import argparse  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py, also when imported from elsewhere

from common import RESULTS, add_device_arg, add_threads_out_args, build_trainer, cpu_peak, cuda_peak  # noqa: E402
from common import fmt, free_memory, loadavg, print_table, setup_device, start_cpu_peak  # noqa: E402
from common import start_run, time_train_steps, wall_line, write_report  # noqa: E402
from vqkit.cli.shared import load_train_and_valid  # noqa: E402
from vqkit.config import load_config  # noqa: E402
from vqkit.training.trainer import Trainer  # noqa: E402

DEFAULT_OUT = RESULTS / "training.json"
REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = {"mel": REPO / "data" / "demo-speech" / "train", "image": REPO / "data" / "demo-images" / "train"}
STEPS = {"cpu": 20, "cuda": 50}
DEMO_FILES = 64   # files of the demo corpus built when there is none (make_demo_speech)
# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, matched against torch.cuda.get_device_name;
# first match wins. H100 NVL is left out on purpose: --peak-tflops.
PEAK_BF16_TFLOPS = ((r"H100.*PCIe", 756.0), (r"H100(?!.*NVL)", 989.0), (r"H200", 989.0),
                    (r"A100", 312.0), (r"\bL4\b", 121.0))
NOTES = ["random weights: speed only",
         "model rows: crops cut and copied to the device before timing; data rows: inside the timed step",
         "FLOPs: torch.utils.flop_counter.FlopCounterMode over one eager fp32 train_step (G and D forward "
         "and backward, matmuls and convolutions); every row uses that count",
         "MFU: achieved TFLOP/s over the device's dense bf16 peak, for fp32 rows too"]


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for pattern, peak in PEAK_BF16_TFLOPS if re.search(pattern, name)), None)


# ---- data ------------------------------------------------------------------------------------

def corpus_folder(args: argparse.Namespace, modality: str, tmp: Path, sample_rate: int) -> Path | None:
    """The folder to load (first --max-files files, as links), or None: synthetic images."""
    folder = args.data or (DEFAULT_DATA[modality] if DEFAULT_DATA[modality].is_dir() else None)
    if folder is None and modality == "mel":
        folder = demo_speech(tmp / "demo-speech", args.max_files or DEMO_FILES, sample_rate)
    if folder is None or not args.max_files:
        return folder
    from vqkit.frontends.audio_io import AUDIO_EXTENSIONS
    from vqkit.frontends.image import IMAGE_EXTENSIONS

    exts = set(AUDIO_EXTENSIONS if modality == "mel" else IMAGE_EXTENSIONS)
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in exts and p.is_file())[: args.max_files]
    out = tmp / "subset"
    for f in files:
        dst = out / f.relative_to(folder)
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            dst.symlink_to(f.resolve())
        except OSError:   # no symlinks here (some filesystems): copy
            shutil.copy2(f, dst)
    return out


def demo_speech(out: Path, n: int, sample_rate: int) -> Path:
    """vqkit's demo speech corpus (n clips); where no speech source is installed, noisy chirps."""
    from vqkit.data.demo import make_demo_speech

    try:
        make_demo_speech(out, limit=n, log=lambda s: None)
        return out / "train"
    except RuntimeError as e:
        print(f"note: no demo speech ({e}); using {n} synthetic chirps", flush=True)
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    folder = out / "synthetic"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        t = np.arange(int(sample_rate * rng.uniform(1.5, 4.0))) / sample_rate
        f0 = rng.uniform(100, 300)
        wav = 0.3 * np.sin(2 * np.pi * f0 * t * (1 + 0.5 * t)) + 0.02 * rng.standard_normal(t.size)
        sf.write(folder / f"chirp{i:03d}.wav", wav.astype(np.float32), sample_rate)
    return folder


def load_corpora(args: argparse.Namespace, folder: Path | None, cache_dir: Path) -> tuple[list, list[dict]]:
    """[(name, items)] and the loading rows: decode into memory, cache build, cache reuse, each through
    `load_train_and_valid` as `vqkit train` calls it."""
    if folder is None:   # image preset without a folder: bench_image_tokenizer's synthetic images
        from bench_image_tokenizer import synthetic_images
        return [("synthetic images", synthetic_images())], []
    files = sorted(f for f in folder.rglob("*") if f.is_file())
    for f in files:   # warm the page cache: every variant below then decodes, none reads disk
        f.read_bytes()
    # One file loaded untimed first: imports and one-off set-up (decoders, resampler, filterbank) would
    # otherwise all land on whichever variant runs first.
    warm = cache_dir.parent / "warm-up"
    warm.mkdir()
    shutil.copy2(files[0], warm / files[0].name)
    load_train_and_valid(load_config(preset=args.preset, overrides=args.base_overrides), str(warm), None)
    variants = [("decode into memory", None)]
    if load_config(preset=args.preset).model.modality == "mel":
        variants += [("feature cache: first build", cache_dir), ("feature cache: reuse", cache_dir)]
    loaded, rows = [], []
    for name, cache in variants:
        cfg = load_config(preset=args.preset, overrides=args.base_overrides +
                          ([f"data.feature_cache={cache}"] if cache else []))
        t0 = time.perf_counter()
        items, _, _ = load_train_and_valid(cfg, str(folder), None)   # held-out files split off as in training
        seconds = time.perf_counter() - t0
        mb = items.nbytes if cache else sum(x.numel() * x.element_size() for x in items)
        rows.append({"source": name, "seconds": seconds, "items": len(items), "data_mb": mb / 2**20,
                     "where": f"memory-mapped store under {cache}" if cache else "process memory"})
        print(f"  {name}: {seconds:.2f} s, {len(items)} items", flush=True)
        if name != "feature cache: first build":
            loaded.append((name, items))
    return loaded, rows


class Fetched:
    """trainer.batches[i] cut and copied to the device when indexed, i.e. inside the timed step."""

    def __init__(self, trainer: Trainer, total: int, image: bool):
        self.trainer, self.total, self.image = trainer, total, image

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, i: int) -> tuple:
        return to_device(self.trainer.batches[i], self.trainer.acc.device, self.image)


def to_device(batch: tuple, device: torch.device, image: bool) -> tuple:
    x = batch[0].to(device)
    return (x, None) if image else (x, batch[1].to(device))   # images: no mask


# ---- one row -----------------------------------------------------------------------------------

def train_row(setting: str, precision: str, backend: str | None, items, data: str, fetch: bool,
              args: argparse.Namespace, device: torch.device, steps: int, count_flops: bool = False) -> dict:
    overrides = ["loss.gan_start_step=0",   # every timed step runs D, G and the adversarial G loss
                 f"train.device={device.type}", f"train.precision={precision}", "data.num_workers=0",
                 f"train.compile={'true' if backend else 'false'}"] + args.base_overrides
    if backend:
        overrides.append(f"train.compile_backend={backend}")
    cfg = load_config(preset=args.preset, overrides=overrides)
    image = cfg.model.modality == "image"
    row: dict[str, Any] = {"setting": setting, "precision": precision, "compile": backend or "no", "data": data,
                           "batch_in_timing": fetch, "batch_size": cfg.train.batch_size * cfg.train.grad_accum_steps,
                           "warmup_steps": args.warmup, "timed_steps": steps}
    print(f"\n== {setting}: {precision}, compile {backend or 'no'}, data {data}", flush=True)
    if backend:
        torch._dynamo.reset()   # a fresh compile per row, never a graph from the previous one
    free_memory(device)
    mem = start_cpu_peak() if device.type == "cpu" else None
    with tempfile.TemporaryDirectory(prefix="bench-training-") as run_dir:
        trainer, row["build_s"] = build_trainer(Trainer, cfg, run_dir, items)
        total = args.warmup + steps
        if fetch:
            batches = Fetched(trainer, total, image)
        else:
            batches = [to_device(trainer.batches[i], trainer.acc.device, image) for i in range(total)]
        graphs0 = dynamo_graphs()
        try:
            timing = time_train_steps(trainer, batches, args.warmup, device)
        except Exception as e:   # e.g. inductor without a C++ compiler: a row with the error, not a crash
            if not backend:
                raise
            row["error"] = f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"
            print(f"  compile failed: {row['error']}", flush=True)
            torch._dynamo.reset()
            return row
        summary = timing.summary(cpu_use=device.type == "cpu")
        sps = timing.steps_per_s
        row.update(summary, steps_per_s=sps, samples_per_s=sps * row["batch_size"],
                   warmup_times_s=timing.warmup_times, gan_active=timing.gan_seen,
                   skipped_nonfinite_steps=timing.skipped)
        if backend:
            # Warm-up time beyond steady-state steps: the compile (and any recompiles in warm-up).
            med = summary["step_s_median"]
            row["compile_s"] = max(0.0, sum(timing.warmup_times) - len(timing.warmup_times) * med)
            row["dynamo_graphs_compiled"] = dynamo_graphs() - graphs0
        row.update(cuda_peak(device) if device.type == "cuda" else cpu_peak(mem))
        if count_flops:
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False) as counter:   # one more, untimed step
                trainer.train_step(*batches[total - 1])
            row["flops_per_step"] = counter.get_total_flops()
        print(f"  -> {sps:.3f} steps/s, {row['samples_per_s']:.1f} samples/s, median "
              f"{summary['step_s_median'] * 1000:.0f} ms" +
              (f", compile {row['compile_s']:.1f} s" if backend else ""), flush=True)
        del trainer, batches
    free_memory(device, reset_peak=False)
    return row


def dynamo_graphs() -> int:
    try:
        from torch._dynamo.utils import counters
        return int(counters["stats"]["unique_graphs"])
    except Exception:   # a private counter: absent or renamed in some torch versions
        return 0


# ---- report --------------------------------------------------------------------------------

def table_rows(rows: list[dict], device: torch.device, flops: int | None, peak: float | None) -> list[list[str]]:
    out = []
    for r in rows:
        if "error" in r:
            out.append([r["setting"], device.type, r["precision"], r["compile"], "failed", *["-"] * 7])
            continue
        tflops = flops * r["steps_per_s"] / 1e12 if flops else None
        r["tflops_per_s"] = tflops
        r["mfu"] = tflops / peak if tflops is not None and peak else None
        out.append([r["setting"], device.type, r["precision"], r["compile"], fmt(r["steps_per_s"], ".2f"),
                    fmt(r["samples_per_s"], ".1f"), fmt(r["step_s_median"] * 1000, ".0f"),
                    fmt(r.get("compile_s"), ".1f"), fmt(tflops, ".3f"),
                    f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a", fmt(r["peak_memory_mb"], ".0f"),
                    fmt(r["cpu_utilisation"], ".2f")])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="mqgan-refiner", help="tokenizer preset, mel or image (default: %(default)s)")
    add_device_arg(ap)
    ap.add_argument("--steps", type=int, default=None, help=f"timed steps per row (default: CPU {STEPS['cpu']}, "
                                                          f"CUDA {STEPS['cuda']})")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first; they hold the compile "
                                                          "(default: %(default)s)")
    ap.add_argument("--batch-size", type=int, default=None, help="train.batch_size (default: the preset's)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    ap.add_argument("--compile-backend", default="inductor", choices=["inductor", "aot_eager"],
                    help="train.compile_backend of the compiled rows (default: %(default)s)")
    ap.add_argument("--bf16-on-cpu", action="store_true", help="also the bf16 rows on CPU (slow there)")
    ap.add_argument("--data", type=Path, default=None, help="corpus folder (default: data/demo-speech/train, "
                    "data/demo-images/train for image presets; else a small demo corpus is built)")
    ap.add_argument("--max-files", type=int, default=None, help="use the first N files of --data (default: all)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's peak for MFU (default: "
                    "the dense bf16 peak of known GPUs; none on CPU)")
    add_threads_out_args(ap, DEFAULT_OUT)
    args = ap.parse_args(argv)
    if (args.steps is not None and args.steps < 1) or args.warmup < 1:
        ap.error("--steps and --warmup must be >= 1 (the warm-up holds the compile)")
    if (args.batch_size is not None and args.batch_size < 1) or (args.max_files is not None and args.max_files < 1):
        ap.error("--batch-size and --max-files must be >= 1")

    device = setup_device(args)
    steps = args.steps or STEPS[device.type]
    warnings.filterwarnings("ignore", category=UserWarning, module="accelerate")
    base = load_config(preset=args.preset)
    modality = base.model.modality
    # The perceptual loss needs local VGG16 / LPIPS weight files, not assumed present (as in
    # bench_image_tokenizer.py).
    args.base_overrides = (["loss.perceptual=0.0"] if modality == "image" else []) + \
        ([f"train.batch_size={args.batch_size}"] if args.batch_size else [])
    bf16 = device.type == "cuda" or args.bf16_on_cpu
    data_precision = "bf16" if device.type == "cuda" else "fp32"   # what one would train with there
    peak = peak_tflops(device, args.peak_tflops)

    started, load_before = start_run(device)
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-training-data-") as tmp:
        tmp = Path(tmp)
        folder = corpus_folder(args, modality, tmp, base.model.mel.sample_rate)
        print(f"\n== corpus: {folder or 'synthetic images'}", flush=True)
        loaded, loading = load_corpora(args, folder, tmp / "feature-cache")
        data = dict(loaded)
        memory_items = loaded[0][1]
        rows = [train_row("eager", "fp32", None, memory_items, loaded[0][0], False, args, device, steps,
                          count_flops=True)]
        flops = rows[0].get("flops_per_step")
        if not args.no_compile:
            rows.append(train_row("torch.compile", "fp32", args.compile_backend, memory_items, loaded[0][0],
                                  False, args, device, steps))
        if bf16:
            rows.append(train_row("eager", "bf16", None, memory_items, loaded[0][0], False, args, device, steps))
            if not args.no_compile:
                rows.append(train_row("torch.compile", "bf16", args.compile_backend, memory_items, loaded[0][0],
                                      False, args, device, steps))
        held = "images" if modality == "image" else "clips"
        for name, label in (("decode into memory", f"data: {held} in memory"),
                            ("feature cache: reuse", "data: feature cache (mmap)")):
            if name in data and folder is not None:
                rows.append(train_row(label, data_precision, None, data[name], name, True, args, device, steps))
        del loaded, data, memory_items
    wall = time.perf_counter() - t_all
    load_after = loadavg()

    batch = rows[0]["batch_size"]
    title = (f"Training throughput: {args.preset}, batch {batch}, {args.warmup} warm-up + {steps} timed steps, "
             f"GAN on; {fmt(flops and flops / 1e9, '.1f')} GFLOP per step")
    header = ["setting", "device", "precision", "compile", "steps/s", "samples/s", "step ms (median)",
              "compile s", "TFLOP/s", "MFU", "peak mem MB", "CPU use"]
    print_table(title, header, table_rows(rows, device, flops, peak))
    for r in rows:
        if "error" in r:
            print(f"{r['setting']} {r['precision']}: {r['error']}")
    if loading:
        print_table("Corpus loading", ["source", "seconds", "items", "data MB"],
                    [[r["source"], f"{r['seconds']:.2f}", str(r["items"]), f"{r['data_mb']:.1f}"] for r in loading])
    print(f"\n{wall_line(wall, load_before, load_after)}")
    write_report(args.out, "training", started, device, load_before, load_after, wall, args,
                 notes=NOTES, preset=args.preset, modality=modality, batch_size=batch,
                 data=str(folder) if folder else "synthetic images", flops_per_step=flops,
                 peak_tflops_bf16=peak, compile_cache=os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
                 rows=rows, loading=loading)
    return 0


if __name__ == "__main__":
    sys.exit(main())
