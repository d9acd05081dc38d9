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
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py, also when imported from elsewhere

from common import RESULTS, add_preset_args, add_repeat_args, add_threads_out_args, build_trainer  # noqa: E402
from common import count, cpu_seconds, cuda_peak, discriminator, drop_training_state, fmt  # noqa: E402
from common import free_memory, loadavg, print_tables, resolve_precision, ru_maxrss_mb  # noqa: E402
from common import setup_device, start_run, time_train_steps, timed, train_table  # noqa: E402
from common import wall_line, write_report  # noqa: E402
from vqkit.config import Config, load_config  # noqa: E402
from vqkit.training.trainer import Trainer  # noqa: E402

DEFAULT_OUT = RESULTS / "mel_tokenizer.json"
DEFAULT_PRESETS = ["mqgan-refiner", "mqgan-44k"]

# Defaults chosen so that `bench_mel_tokenizer.py` with no arguments finishes in about 3 minutes on
# 2 CPU cores. On CPU the reference preset (~32M generator params, 2D discriminators of 256-512
# channels) takes tens of seconds per step, so it runs fewer steps at a smaller batch there.
CPU_TRAIN_STEPS = {"mqgan-44k": 2}
CPU_TRAIN_STEPS_OTHER = 5
CUDA_TRAIN_STEPS = 20
CPU_BATCH = {"mqgan-44k": 1}      # presets not listed keep their own train.batch_size
NOTES = ["random weights and synthetic N(-5, 2) log-mel: speed and size only",
         "train timings exclude batch cutting and host->device copies",
         "inference runs in float32 in eval mode, batch 1, without autocast"]


# ---- data ------------------------------------------------------------------------------------

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
    free_memory(device)
    rss_before = ru_maxrss_mb()
    clips = synthetic_clips(mel_cfg.n_mels, seg)
    with tempfile.TemporaryDirectory(prefix=f"bench-{preset}-") as run_dir:
        trainer, build_s = build_trainer(Trainer, cfg, run_dir, clips)
        model, disc = trainer.raw_model, discriminator(trainer)
        result["params"] = {
            "generator": count(model), "encoder": count(model.encoder), "quantizer": count(model.quantizer),
            "decoder": count(model.decoder), "refiner": count(model.refiner), "discriminators": count(disc),
        }
        result["rates"] = {"tokens_per_second": model.tokens_per_second, "codebook_size": model.codebook_size,
                           "bits_per_second": model.bits_per_second}
        # Batches are cut and moved to the device before timing: the numbers are the step itself.
        total = args.warmup_steps + steps
        batches = [tuple(t.to(trainer.acc.device) for t in trainer.batches[i]) for i in range(total)]
        timing = time_train_steps(trainer, batches, args.warmup_steps, device)   # batches: (mel, mask)
        sps, gan_seen = timing.steps_per_s, timing.gan_seen
        result["train"] = train = {
            "batch_size": batch, "batch_size_preset": base.train.batch_size, "segment_frames": seg,
            "precision": precision, "warmup_steps": args.warmup_steps, "timed_steps": steps,
            "gan_active": gan_seen, "skipped_nonfinite_steps": timing.skipped, "build_s": build_s,
            **timing.summary(),   # step times, their mean and median, CPU use (also on CUDA)
            "steps_per_s": sps, "frames_per_s": sps * batch * seg, "audio_s_per_s": sps * batch * seg / fps,
        }
        if device.type == "cuda":
            train.update(cuda_peak(device))
        else:
            after = ru_maxrss_mb()
            train["peak_memory_mb"] = after
            train["peak_memory_delta_mb"] = after - rss_before
            train["peak_memory_kind"] = "process RSS peak (ru_maxrss); delta = growth during this preset"
        print(f"  -> {sps:.3f} steps/s, {train['frames_per_s']:.0f} frames/s, "
              f"{train['audio_s_per_s']:.2f} s audio/s, GAN active: {gan_seen}", flush=True)

        # ---- inference ----
        drop_training_state(trainer)   # eval mode; optimiser state and discriminators freed
        del batches, trainer, disc
        free_memory(device)
        result["inference"] = bench_inference(model, args, device)
        del model
    free_memory(device, reset_peak=False)
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
        r = timed(fn, device, args.repeats, args.repeat_budget, cpu_use=False)
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

def tables(results: list[dict], device: torch.device) -> list[tuple[str, list[str], list[list[str]]]]:
    inf_rows, size_rows = [], []
    for r in results:
        i, p, q = r["inference"], r["params"], r["rates"]
        x = lambda k: fmt(i[k]["x_realtime"], ".1f") if i.get(k) else "-"  # noqa: E731
        inf_rows.append([r["preset"], f"{i['audio_seconds']:.1f}", x("encode"), x("decode_refined"),
                         x("decode_draft"), x("frontend"), x("vocoder")])
        size_rows.append([r["preset"], f"{p['generator'] / 1e6:.2f}", f"{p['encoder'] / 1e6:.2f}",
                          f"{p['decoder'] / 1e6:.2f}", f"{p['refiner'] / 1e6:.2f}",
                          f"{p['discriminators'] / 1e6:.2f}", f"{q['tokens_per_second']:.2f}",
                          str(q["codebook_size"]), f"{q['bits_per_second']:.0f}"])
    return [
        train_table(results, device, "Training (GAN active)", ("segment_frames", "seg"),
                    [("frames_per_s", "frames/s", ".0f"), ("audio_s_per_s", "audio s/s", ".2f")]),
        ("Inference (x real time = audio seconds per wall second)",
         ["preset", "audio s", "encode", "decode", "draft", "mel frontend", "HiFi-GAN"], inf_rows),
        ("Size", ["preset", "G params M", "enc M", "dec M", "refiner M", "D params M", "tokens/s",
                  "codebook", "bits/s"], size_rows),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_preset_args(ap, DEFAULT_PRESETS, f"CPU {CPU_TRAIN_STEPS_OTHER}, mqgan-44k on CPU "
                                         f"{CPU_TRAIN_STEPS['mqgan-44k']}; CUDA {CUDA_TRAIN_STEPS}")
    ap.add_argument("--seconds", type=float, default=10.0,
                    help="audio length for encode/decode throughput (default: %(default)s)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="training batch for every preset (default: the preset's; mqgan-44k on CPU: "
                         f"{CPU_BATCH['mqgan-44k']})")
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                    help="training autocast; auto = bf16 on CUDA, no on CPU "
                         "(bf16 on CPU works but is slow; default: %(default)s)")
    add_repeat_args(ap, "inference measurement", repeats=5, budget_s=3.0, min_repeats=None)
    add_threads_out_args(ap, DEFAULT_OUT)
    args = ap.parse_args(argv)
    if args.train_steps is not None and args.train_steps < 1:
        ap.error("--train-steps must be >= 1")
    if args.warmup_steps < 0 or args.repeats < 1 or args.seconds <= 0:
        ap.error("--warmup-steps must be >= 0, --repeats >= 1 and --seconds > 0")
    if args.batch_size is not None and args.batch_size < 1:
        ap.error("--batch-size must be >= 1")

    device = setup_device(args)
    precision = resolve_precision(args.precision, device)
    if device.type == "cpu" and precision == "bf16":
        print("note: bf16 autocast on CPU is supported but usually slower than float32", flush=True)
    warnings.filterwarnings("ignore", category=UserWarning, module="accelerate")

    started, load_before = start_run(device)
    t_all = time.perf_counter()
    results = [bench_preset(p, args, device, precision) for p in args.presets]
    wall = time.perf_counter() - t_all
    load_after = loadavg()

    print_tables(tables(results, device), use_rich=True)
    print(f"\n{wall_line(wall, load_before, load_after)}")

    write_report(args.out, "mel_tokenizer", started, device, load_before, load_after, wall, args,
                 notes=NOTES, presets={r["preset"]: r for r in results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
