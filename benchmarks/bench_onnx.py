"""ONNX export: onnxruntime against PyTorch on the CPU, for encode, decode (refined) and, for mels, the
frontend (audio -> log-mel).

For each preset: a tokenizer with random weights (the weights do not change the speed), exported
with `vqkit.export.export_onnx` into a temporary folder (the export time is reported), then each
step timed in PyTorch (`Tokenizer.encode` / `decode`, `MelFrontend`) and in onnxruntime
(CPUExecutionProvider, intra-op threads = torch's thread count), batch --batch, float32: the median
of up to --repeats calls after one warm-up call. Mels: --seconds of audio, reported as x real time
(audio seconds per wall second); images: --image-size square images, reported as images/s. Each
row also checks that both give the same tokens and says how far the decoded outputs differ.

    python benchmarks/bench_onnx.py                                   # mqgan-refiner and vqgan
    python benchmarks/bench_onnx.py --threads 2 --seconds 30
    python benchmarks/bench_onnx.py --presets mqgan-refiner --seconds 1 --overrides model.backbone.channels=[24]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (RESULTS, add_repeat_args, add_threads_out_args, fmt, loadavg, print_table,  # noqa: E402
                    setup_device, start_run, timed, write_report)

from vqkit.config import load_config  # noqa: E402
from vqkit.models.tokenizer import Tokenizer  # noqa: E402


def sessions(folder: Path, graphs: list[str], threads: int) -> dict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return {g: ort.InferenceSession(str(folder / f"{g}.onnx"), opts, providers=["CPUExecutionProvider"])
            for g in graphs}


def steps(tok: Tokenizer, s: dict, args) -> tuple[list[tuple[str, object, object]], dict, float]:
    """[(step, PyTorch call, onnxruntime call)], the input's facts, and its seconds of audio (mels) or 0."""
    g = torch.Generator().manual_seed(0)
    if tok.frontend is not None:
        sr = tok.config.model.mel.sample_rate
        audio = 0.1 * torch.randn(args.batch, int(args.seconds * sr), generator=g)
        mel = tok.frontend(audio)
        x, signal = mel, "mel"
        facts = {"seconds": args.seconds, "samples": audio.shape[-1], "frames": mel.shape[-1]}
    else:
        x = torch.rand(args.batch, tok.config.model.image.channels, args.image_size, args.image_size, generator=g) * 2 - 1
        signal = "image"
        facts = {"image_size": args.image_size}
    ids = tok.encode(x)
    xn, idn = x.numpy(), ids.numpy()
    out = [("encode", lambda: tok.encode(x), lambda: s["encoder"].run(None, {signal: xn})),
           ("decode", lambda: tok.decode(ids), lambda: s["decoder"].run(None, {"tokens": idn}))]
    if tok.frontend is not None:
        an = audio.numpy()
        out.append(("frontend", lambda: tok.frontend(audio), lambda: s["frontend"].run(None, {"audio": an})))
    facts["tokens_equal"] = bool((s["encoder"].run(None, {signal: xn})[0] == idn).all())
    facts["decode_max_abs_diff"] = float(np.abs(s["decoder"].run(None, {"tokens": idn})[0] - tok.decode(ids).numpy()).max())
    facts["tokens_shape"] = list(ids.shape)
    return out, facts, args.seconds * args.batch if tok.frontend is not None else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="+", default=["mqgan-refiner", "vqgan"])
    ap.add_argument("--overrides", nargs="*", default=[], help="config overrides for every preset (e.g. a tiny model)")
    ap.add_argument("--seconds", type=float, default=10.0, help="mels: audio per call (default: %(default)s)")
    ap.add_argument("--image-size", type=int, default=256, help="images: side of the square input (default: %(default)s)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--device", default="cpu", choices=["cpu"], help="onnxruntime's CPU provider against PyTorch's CPU")
    add_repeat_args(ap, "step", repeats=10, budget_s=5.0)
    add_threads_out_args(ap, RESULTS / "onnx.json")
    args = ap.parse_args()
    device = setup_device(args)
    started, load_before = start_run(device)
    t_start = time.perf_counter()
    threads = torch.get_num_threads()
    results, rows = [], []
    import onnxruntime
    from vqkit.export import export_onnx

    for preset in args.presets:
        torch.manual_seed(0)
        tok = Tokenizer(load_config(preset=preset, overrides=args.overrides)).eval()
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            meta = export_onnx(tok, Path(tmp))
            export_s = time.perf_counter() - t0
            s = sessions(Path(tmp), list(meta["graphs"]), threads)
            calls, facts, audio_s = steps(tok, s, args)
            r = {"preset": preset, "modality": tok.modality, "export_s": export_s, **facts, "steps": {}}
            for name, torch_call, ort_call in calls:
                with torch.no_grad():
                    torch_call(), ort_call()   # warm-up
                    pt = timed(torch_call, device, args.repeats, args.repeat_budget, args.min_repeats)
                    rt = timed(ort_call, device, args.repeats, args.repeat_budget, args.min_repeats, cpu_use=False)
                step = {"torch": pt, "onnxruntime": rt, "speedup": pt["median_s"] / rt["median_s"]}
                if audio_s:
                    step.update(torch_x_real_time=audio_s / pt["median_s"], ort_x_real_time=audio_s / rt["median_s"])
                else:
                    step.update(torch_images_per_s=args.batch / pt["median_s"], ort_images_per_s=args.batch / rt["median_s"])
                r["steps"][name] = step
                rate = (step["torch_x_real_time"], step["ort_x_real_time"]) if audio_s else \
                       (step["torch_images_per_s"], step["ort_images_per_s"])
                rows.append([preset, name, fmt(pt["median_s"] * 1000, ".1f"), fmt(rt["median_s"] * 1000, ".1f"),
                             fmt(step["speedup"], ".2f"), fmt(rate[0], ".1f"), fmt(rate[1], ".1f"),
                             "x real time" if audio_s else "images/s",
                             "yes" if facts["tokens_equal"] else "NO", fmt(facts["decode_max_abs_diff"], ".1e")])
        results.append(r)
        print_table(f"onnxruntime {onnxruntime.__version__} vs PyTorch {torch.__version__}, CPU, {threads} threads, "
                    f"batch {args.batch}",
                    ["preset", "step", "torch ms", "ort ms", "ort speed-up", "torch rate", "ort rate", "rate unit",
                     "same tokens", "decode diff"], rows)
    write_report(args.out, "onnx", started, device, load_before, loadavg(), time.perf_counter() - t_start, args,
                 onnxruntime_version=onnxruntime.__version__, results=results)


if __name__ == "__main__":
    main()
