"""Inference throughput over many files: one at a time against padded batches (models/batched.py).

Mels: the held-out demo speech (real clips, 2-7 s), log-mels computed once; each way of running the
tokenizer encodes (and, for encode+decode, decodes to the refined log-mel) every clip, interleaved
over --repeats rounds; the table gives the median x real time (audio seconds per wall second):
- files, a model copy per stream: the command line's loop one file at a time as it was before this
  benchmark (read block by block, encode_file + the decoder stream, each stream deep-copying the model);
- files, one at a time: the same loop now (the streams share one folded copy; `--batch-frames 0`);
- files, batched F: the command line's batched loop (`vqkit encode --batch-frames F`): files read
  whole, 16 at a time, then Tokenizer.encode_batch / decode_batch;
- ..., N workers: the same loops on N threads (`--workers N`), each with its share of torch's threads;
- in memory, one at a time / batched F: encode_batch / decode_batch of one clip at a time, or of
  all, on log-mels computed beforehand (the model alone).
The last column compares each way with one at a time from the same input (files or memory).
Images: four demo photographs as files one at a time (`vqkit encode` of a folder, 1 or N workers),
and 256 px crops in memory, one at a time against batches of N of one size.
The vocoder is not timed (bench_mel_tokenizer.py times it). Weights are random: speed only.

    python benchmarks/bench_batch_inference.py
    python benchmarks/bench_batch_inference.py --presets mqgan-refiner-21 --budgets 2048 8192

Needs the demo corpora (`vqkit data demo-speech data/demo-speech`, `vqkit data demo-images
data/demo-images`) and idle cores.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, loadavg, print_table, setup_device, start_run, write_report  # noqa: E402

from vqkit.config import load_config  # noqa: E402
from vqkit.models.tokenizer import Tokenizer  # noqa: E402

# name -> (preset, overrides): the demo-size 21.5 tokens/s preset and a 2.2M-parameter one
MEL_MODELS = {"mqgan-refiner-21": ("mqgan-refiner-21", []),
              "mqgan-refiner-21 x2.2M": ("mqgan-refiner-21", ["model.backbone.channels=[160,224]"])}
IMAGE_MODELS = {"vqgan": ("vqgan", [])}


def build(preset: str, overrides: list[str]) -> Tokenizer:
    torch.manual_seed(0)
    return Tokenizer(load_config(preset=preset, overrides=overrides)).eval()


def mel_ways(tok: Tokenizer, files: list[Path], mels: list[torch.Tensor], budgets: list[int], decode: bool,
             workers: list[int]) -> dict:
    """The ways to run, each over every clip. `files` ways go through the command line's own loops
    (cli/files.py run_files / run_batched, reading every file, writing nothing), on 1 or more worker
    threads (`--workers`)."""
    from vqkit.cli.files import run_batched, run_files
    from vqkit.models import streaming
    from vqkit.models.audio_files import _frames, encode_file
    from vqkit.modalities import modality_of

    pairs = [(f, None) for f in files]
    modality = modality_of(tok)

    def one_file(copy_each: bool, n: int = 1):
        def one(src, dst):
            if copy_each:
                streaming.forget_inference_copies()
            t = encode_file(tok, src)
            if decode:
                if copy_each:
                    streaming.forget_inference_copies()
                torch.cat(list(_frames(tok, t, True, None)), -1)
            return ""
        return lambda: run_files(pairs, one, quiet=True, workers=n)

    def files_batched(f: int, n: int):
        def many(signals):
            t = tok.encode_batch(signals, batch_frames=f)
            return tok.decode_batch(t, batch_frames=f) if decode else t
        return lambda: run_batched(pairs, lambda src: modality.read_signal(tok, src, None), many,
                                   lambda src, dst, r: "", None, quiet=True, workers=n)

    ways = {"files, a model copy per stream (before)": one_file(True), "files, one at a time": one_file(False)}
    ways.update({f"files, one at a time, {n} workers": one_file(False, n) for n in workers if n > 1})
    ways.update({f"files, batched {f} frames{_workers(n)}": files_batched(f, n) for n in workers for f in budgets})
    return {**ways, **memory_ways(tok, mels, "batch_frames", budgets, decode, "in memory, batched {} frames")}


def _workers(n: int) -> str:
    return f", {n} workers" if n > 1 else ""


def image_file_ways(tok: Tokenizer, files: list[Path], workers: list[int], decode: bool) -> dict:
    """`vqkit encode` (+ decode) of an image folder one file at a time, on 1 or more worker threads."""
    from vqkit.cli.files import run_files
    from vqkit.modalities import modality_of

    modality = modality_of(tok)

    def one(src, dst):
        tokens, _ = modality.encode_file(tok, src, None)
        if decode:
            tok.decode(torch.from_numpy(tokens).long())
        return ""
    return {f"files, one at a time{_workers(n)}": (lambda n=n: run_files([(f, None) for f in files], one, True, n))
            for n in workers}


def memory_ways(tok: Tokenizer, signals: list[torch.Tensor], option: str, sizes: list[int], decode: bool,
                label: str) -> dict:
    """Signals already in memory: encode_batch (+ decode_batch) one at a time, and in batches of each
    size (`option`: batch_frames or batch_images)."""
    tokens = [tok.encode(x) for x in signals]

    def run(items: list[list[int]], size: dict):
        def go():
            for idx in items:
                tok.encode_batch([signals[i] for i in idx], **size)
                if decode:
                    tok.decode_batch([tokens[i] for i in idx], **size)
        return go

    every = list(range(len(signals)))
    return {"in memory, one at a time": run([[i] for i in every], {}),
            **{label.format(n): run([every], {option: n}) for n in sizes}}


def image_ways(tok: Tokenizer, images: list[torch.Tensor], sizes: list[int], decode: bool) -> dict:
    return memory_ways(tok, images, "batch_images", sizes, decode, "in memory, batched {} images")


def measure(ways: dict, repeats: int) -> dict[str, list[float]]:
    """Wall seconds of each way, interleaved round by round; every timed call follows an untimed
    call of the same way. (Timed right after another way, the first call paid for the switch: after
    the 2-worker ways the next way ran 1.5-1.8x slower, which made its neighbours look faster;
    a user runs one way all along, so the steady state is what counts.)"""
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(repeats):
        for name, fn in ways.items():
            fn()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def demo_images(folder: Path, n: int) -> list[torch.Tensor]:
    from vqkit.frontends.image import find_image_files, load_image

    out = []
    for p in find_image_files(folder)[:n]:
        x = load_image(p, channels=3)
        h, w = x.shape[-2:]
        if min(h, w) >= 256:
            out.append(x[:, (h - 256) // 2: (h - 256) // 2 + 256, (w - 256) // 2: (w - 256) // 2 + 256])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", nargs="*", default=list(MEL_MODELS), help=f"mel models: {', '.join(MEL_MODELS)}")
    ap.add_argument("--budgets", nargs="*", type=int, default=[1024, 2048, 8192], help="batch sizes in frames")
    ap.add_argument("--image-batches", nargs="*", type=int, default=[4, 8])
    ap.add_argument("--workers", nargs="*", type=int, default=[1, 2], help="worker threads of the files ways")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--speech", type=Path, default=Path("data/demo-speech/heldout"))
    ap.add_argument("--images", type=Path, default=Path("data/demo-images/train"))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=RESULTS / "batch_inference.json")
    args = ap.parse_args()
    device = setup_device(args)
    started, load_before = start_run(device)
    t0 = time.perf_counter()
    from vqkit.frontends.audio_io import find_audio_files
    from vqkit.models.audio_files import whole_mel

    results, rows = [], []
    files = find_audio_files(args.speech)
    for name in args.presets:
        tok = build(*MEL_MODELS[name])
        mels = [whole_mel(tok, f) for f in files]
        seconds = sum(m.shape[-1] for m in mels) / tok.config.model.mel.frames_per_second
        params = sum(p.numel() for p in tok.parameters()) / 1e6
        for decode in (False, True):
            task = "encode + decode" if decode else "encode"
            times = measure(mel_ways(tok, files, mels, args.budgets, decode, args.workers), args.repeats)
            for way, ts in times.items():
                med = statistics.median(ts)
                alone = statistics.median(times[way.split(",")[0] + ", one at a time"])
                results.append({"model": name, "params_m": params, "task": task, "way": way, "seconds_audio": seconds,
                                "median_s": med, "times_s": ts, "x_real_time": seconds / med})
                rows.append([name, f"{params:.2f}", task, way, f"{seconds / med:.0f}", f"{alone / med:.2f}"])
            print_table(f"mels: {len(mels)} held-out clips, {seconds:.0f} s of speech", HEADER, rows)
    images = demo_images(args.images, 8)
    from vqkit.frontends.image import find_image_files
    image_files = find_image_files(args.images)[:4]
    image_rows = []
    for name, (preset, overrides) in IMAGE_MODELS.items():
        tok = build(preset, overrides)
        for decode in (False, True):
            task = "encode + decode" if decode else "encode"
            ways = {**image_file_ways(tok, image_files, args.workers, decode),
                    **image_ways(tok, images, args.image_batches, decode)}
            times = measure(ways, args.repeats)
            for way, ts in times.items():
                med = statistics.median(ts)
                alone = statistics.median(times[way.split(",")[0] + ", one at a time"])   # same input
                count = len(image_files) if way.startswith("files") else len(images)
                results.append({"model": name, "task": task, "way": way, "images": count, "median_s": med,
                                "times_s": ts, "images_per_s": count / med})
                image_rows.append([name, task, way, f"{count / med:.1f}", f"{alone / med:.2f}"])
    print_table(f"images: {len(image_files)} photographs (files), {len(images)} crops of 256 px (in memory)", ["model", "task", "way", "images/s", "vs one at a time"],
                image_rows)
    write_report(args.out, "batch_inference", started, device, load_before, loadavg(), time.perf_counter() - t0,
                 args, results=results)


HEADER = ["model", "params M", "task", "way", "x real time", "vs one at a time"]

if __name__ == "__main__":
    main()
