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
import importlib.util
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py, also when imported from elsewhere

from common import RESULTS, add_preset_args, add_repeat_args, add_threads_out_args, build_trainer  # noqa: E402
from common import count, cpu_peak, cuda_peak, discriminator, drop_training_state, fmt  # noqa: E402
from common import free_memory, loadavg, mem_column, print_tables, resolve_precision, setup_device  # noqa: E402
from common import start_cpu_peak, start_run, time_train_steps, timed, train_table  # noqa: E402
from common import wall_line, write_report  # noqa: E402
from vqkit.config import Config, load_config  # noqa: E402
from vqkit.data.image_corpus import center_crop_batch  # noqa: E402
from vqkit.training.trainer import Trainer  # noqa: E402

DEFAULT_OUT = RESULTS / "image_tokenizer.json"
DEFAULT_PRESETS = ["vqgan", "vqgan-l2", "movq", "seqgan", "convnext-vq", "vit-vq"]

# Defaults chosen so that the script with no arguments finishes in about 3 minutes on 2 idle CPU cores.
CPU_TRAIN_STEPS = 10
CUDA_TRAIN_STEPS = 20
INFER_BATCHES = (1, 8)
PERCEPTUAL_NOTE = ("perceptual loss off (loss.perceptual=0): the VGG16 / LPIPS weights it needs are local "
                   "files that are not assumed to be present, so training steps omit a VGG16 forward+backward")
NOTES = ["random weights: speed and size only", PERCEPTUAL_NOTE,
         "train timings exclude crop cutting and host->device copies",
         "inference runs in float32 in eval mode without autocast, on centre crops"]

# Colour photographs bundled in the scikit-image wheel (skimage.data function, file in its data folder).
PHOTOS = (("astronaut", "astronaut.png"), ("chelsea", "chelsea.png"), ("coffee", "coffee.png"),
          ("rocket", "rocket.jpg"), ("immunohistochemistry", "ihc.png"), ("retina", "retina.jpg"),
          ("hubble_deep_field", "hubble_deep_field.jpg"))


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
    free_memory(device)
    cpu_mem = start_cpu_peak() if device.type == "cpu" else None
    with tempfile.TemporaryDirectory(prefix=f"bench-{preset}-") as run_dir:
        trainer, build_s = build_trainer(Trainer, cfg, run_dir, images)
        model, disc = trainer.raw_model, discriminator(trainer)
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
        batches = [(trainer.batches[i][0].to(trainer.acc.device), None) for i in range(total)]   # images: no mask
        timing = time_train_steps(trainer, batches, args.warmup_steps, device)
        sps, gan_seen, on_cpu = timing.steps_per_s, timing.gan_seen, device.type == "cpu"
        result["train"] = train = {
            "batch_size": batch, "batch_size_preset": base.train.batch_size, "crop": crop,
            "precision": precision, "warmup_steps": args.warmup_steps, "timed_steps": steps,
            "gan_active": gan_seen, "perceptual": False, "skipped_nonfinite_steps": timing.skipped,
            "build_s": build_s,
            **timing.summary(cpu_use=on_cpu),   # step times, their mean and median, CPU use (CPU only)
            "sys_fraction": timing.sys_s / timing.cpu_s if timing.cpu_s > 0 and on_cpu else None,
            "steps_per_s": sps, "images_per_s": sps * batch,
        }
        if device.type == "cuda":
            train.update(cuda_peak(device))
        else:
            train.update(cpu_peak(cpu_mem))
        print(f"  -> {sps:.3f} steps/s, {train['images_per_s']:.1f} images/s ({crop}x{crop}), "
              f"GAN active: {gan_seen}", flush=True)

        # ---- inference ----
        drop_training_state(trainer)   # eval mode; optimiser state and discriminator freed
        del batches, trainer, disc
        free_memory(device)
        cpu_mem = start_cpu_peak() if device.type == "cpu" else None
        result["inference"] = bench_inference(model, images, args, device)
        if cpu_mem is not None:
            result["inference"].update(cpu_peak(cpu_mem))
        del model
    free_memory(device, reset_peak=False)
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
        enc = timed(lambda: model.encode(x), device, args.repeats, args.repeat_budget, args.min_repeats)
        dec = timed(lambda: model.decode(tokens), device, args.repeats, args.repeat_budget, args.min_repeats)
        for name, r in (("encode", enc), ("decode", dec)):
            r["images_per_s"] = b / r["median_s"]
            out[f"{name}_b{b}"] = r
            print(f"  {name} batch {b}: {r['median_s'] * 1000:9.1f} ms (median of {r['repeats']})  "
                  f"{r['images_per_s']:8.2f} images/s", flush=True)
    if device.type == "cuda":
        out["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


# ---- report ---------------------------------------------------------------------------------

def tables(results: list[dict], device: torch.device, size: int) -> list[tuple[str, list[str], list[list[str]]]]:
    inf_rows, size_rows = [], []
    for r in results:
        i, p, k = r["inference"], r["params"], r["tokens"]
        ips = lambda key: fmt(i[key]["images_per_s"], ".2f")  # noqa: E731
        inf_rows.append([r["preset"]] + [ips(f"{n}_b{b}") for n in ("encode", "decode") for b in INFER_BATCHES]
                        + [fmt(i.get("peak_memory_mb"), ".0f")])
        grid = "x".join(str(g) for g in k["grid"])
        size_rows.append([r["preset"], f"{p['generator'] / 1e6:.2f}", f"{p['encoder'] / 1e6:.2f}",
                          f"{p['quantizer'] / 1e6:.3f}", f"{p['decoder'] / 1e6:.2f}",
                          f"{p['discriminator'] / 1e6:.2f}", grid, str(k["tokens_per_image"]),
                          str(k["codebook_size"]), f"{k['bits_per_image']:.0f}"])
    return [
        train_table(results, device, "Training (GAN active, perceptual loss off)", ("crop", "crop"),
                    [("images_per_s", "images/s", ".1f")]),
        (f"Inference at {size}x{size}, float32 (images/s)",
         ["preset"] + [f"{n} b{b}" for n in ("encode", "decode") for b in INFER_BATCHES] + [mem_column(device)],
         inf_rows),
        (f"Size (tokens and bits per {size}x{size} image)",
         ["preset", "G params M", "enc M", "quant M", "dec M", "D params M", "grid", "tokens", "codebook",
          "bits"], size_rows),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_preset_args(ap, DEFAULT_PRESETS, f"CPU {CPU_TRAIN_STEPS}, CUDA {CUDA_TRAIN_STEPS}")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="training batch for every preset (default: the preset's)")
    ap.add_argument("--size", type=int, default=256,
                    help="image side for encode/decode throughput and the token grid (default: %(default)s)")
    ap.add_argument("--data", choices=["photos", "synthetic"], default="photos",
                    help="scikit-image's bundled photographs (synthetic when missing) or synthetic images "
                         "(default: %(default)s)")
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="training autocast; auto = bf16 on CUDA, fp32 on CPU (default: %(default)s)")
    add_repeat_args(ap, "inference measurement", repeats=5, budget_s=2.0)
    add_threads_out_args(ap, DEFAULT_OUT)
    args = ap.parse_args(argv)
    if args.train_steps is not None and args.train_steps < 1:
        ap.error("--train-steps must be >= 1")
    if args.warmup_steps < 0 or args.repeats < 1 or args.size < 8:
        ap.error("--warmup-steps must be >= 0, --repeats >= 1 and --size >= 8")
    if args.batch_size is not None and args.batch_size < 1:
        ap.error("--batch-size must be >= 1")
    args.min_repeats = max(1, min(args.min_repeats, args.repeats))

    device = setup_device(args)
    precision = resolve_precision(args.precision, device)
    warnings.filterwarnings("ignore", category=UserWarning, module="accelerate")

    started, load_before = start_run(device)
    images, data_note = load_images(args.data)
    print(f"data: {data_note}", flush=True)
    print(f"note: {PERCEPTUAL_NOTE}", flush=True)
    t_all = time.perf_counter()
    results = [bench_preset(p, images, args, device, precision) for p in args.presets]
    wall = time.perf_counter() - t_all
    load_after = loadavg()

    print_tables(tables(results, device, args.size))
    print(f"\nnote: {PERCEPTUAL_NOTE}")
    print(wall_line(wall, load_before, load_after))

    write_report(args.out, "image_tokenizer", started, device, load_before, load_after, wall, args,
                 data=data_note, notes=NOTES, presets={r["preset"]: r for r in results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
