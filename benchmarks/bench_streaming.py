"""Streaming and long files: real-time factor and latency of chunk-by-chunk tokenization, and the
peak memory of encoding a one-hour file.

1. Streaming, batch 1: audio in chunks of --chunk-ms -> mel frontend stream -> encoder stream ->
   decoder stream (refined mel), for the causal preset (chunk by chunk) and, for comparison, a
   non-causal preset (window by window). Reports x real time (audio seconds per wall second), the
   compute time per chunk (median and 95th percentile) and the model's algorithmic latency. The
   vocoder is not part of the tokenizer and not timed here (bench_mel_tokenizer.py times it).
2. One hour: writes a one-hour WAV (the demo corpus' clips repeated), then runs
   `vqkit encode CKPT hour.wav -o hour.npy` and `vqkit decode CKPT hour.npy --vocoder griffin-lim`,
   each in its own child process; reports each one's peak RSS and wall time.

    python benchmarks/bench_streaming.py                   # random weights: speed only
    python benchmarks/bench_streaming.py --checkpoint RUN  # a trained causal run

The weights do not change the speed; they are random unless --checkpoint is given.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, fmt, loadavg, print_table, setup_device, start_run, write_report  # noqa: E402

from vqkit.config import load_config  # noqa: E402
from vqkit.models.tokenizer import Tokenizer  # noqa: E402


def model(preset: str, checkpoint: str | None) -> Tokenizer:
    if checkpoint:
        return Tokenizer.from_pretrained(checkpoint)
    torch.manual_seed(0)
    return Tokenizer(load_config(preset=preset)).eval()


def speech(seconds: float, sr: int, corpus: Path) -> np.ndarray:
    """Real speech from the demo corpus (repeated to length), or noise when it is missing."""
    from vqkit.frontends.audio_io import find_audio_files, load_audio

    files = find_audio_files(corpus) if corpus.is_dir() else []
    if not files:
        return (np.random.default_rng(0).standard_normal(int(seconds * sr)) * 0.1).astype(np.float32)
    parts, total = [], 0
    while total < seconds * sr:
        for f in files:
            parts.append(load_audio(f, sr))
            total += parts[-1].size
            if total >= seconds * sr:
                break
    return np.concatenate(parts)[: int(seconds * sr)]


@torch.no_grad()
def stream(tok: Tokenizer, audio: np.ndarray, chunk_ms: float) -> dict:
    sr = tok.config.model.mel.sample_rate
    step = max(1, int(sr * chunk_ms / 1000))
    fe, enc, dec = tok.frontend.stream(), tok.stream_encoder(), tok.stream_decoder()
    x = torch.from_numpy(audio)
    per_chunk, frames = [], 0
    t0 = time.perf_counter()
    for i in range(0, x.numel(), step):
        c0 = time.perf_counter()
        frames += dec.push(enc.push(fe.push(x[i:i + step]))).shape[-1]
        per_chunk.append(time.perf_counter() - c0)
    frames += dec.push(enc.push(fe.flush())).shape[-1] + dec.push(enc.flush()).shape[-1] + dec.flush().shape[-1]
    wall = time.perf_counter() - t0
    ms = np.array(per_chunk) * 1000
    return {"chunk_ms": chunk_ms, "chunks": len(per_chunk), "x_real_time": audio.size / sr / wall,
            "chunk_compute_ms_median": float(np.median(ms)), "chunk_compute_ms_p95": float(np.percentile(ms, 95)),
            "frames": frames}


def hour_file(path: Path, seconds: float, sr: int, corpus: Path) -> None:
    import soundfile as sf

    clip = speech(min(seconds, 120.0), sr, corpus)
    with sf.SoundFile(str(path), "w", samplerate=sr, channels=1, subtype="PCM_16") as f:
        written = 0
        while written < seconds * sr:
            n = min(clip.size, int(seconds * sr) - written)
            f.write(clip[:n])
            written += n


# A fresh Python runs the command and prints its one child's peak RSS (ru_maxrss of RUSAGE_CHILDREN
# is a maximum over every child ever waited for, so measuring from this process would mix verbs).
_PEAK = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
         "print('PEAK_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)")


def child_peak(cmd: list[str]) -> dict:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PEAK, *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("PEAK_KB ")]
    return {"cmd": " ".join(cmd[2:]), "returncode": done.returncode, "wall_s": wall,
            "peak_rss_mb": int(peak[-1]) / 1024 if peak else None, "output": (done.stdout + done.stderr)[-400:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="mqgan-refiner-21-causal")
    ap.add_argument("--compare-preset", default="mqgan-refiner-21", help="a non-causal preset, window by window")
    ap.add_argument("--checkpoint", default=None, help="a trained run of --preset (default: random weights)")
    ap.add_argument("--seconds", type=float, default=60.0, help="audio streamed per measurement")
    ap.add_argument("--chunk-ms", type=float, nargs="*", default=[20, 46.4, 92.9, 185.8, 500],
                    help="chunk sizes (46.4 ms = one token at 21.5 tokens/s)")
    ap.add_argument("--hour-seconds", type=float, default=3600.0, help="length of the long-file test (0 = skip)")
    ap.add_argument("--corpus", type=Path, default=Path("data/demo-speech/train"))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=RESULTS / "streaming.json")
    args = ap.parse_args()
    device = setup_device(args)
    started, load_before = start_run(device)
    t0 = time.perf_counter()
    causal, windowed = model(args.preset, args.checkpoint), model(args.compare_preset, None)
    audio = speech(args.seconds, causal.config.model.mel.sample_rate, args.corpus)
    rows, results = [], []
    for name, tok in ((args.preset, causal), (args.compare_preset + " (windowed)", windowed)):
        stream(tok, audio[: audio.size // 10], 40)   # warm-up
        for chunk in args.chunk_ms:
            r = {"model": name, "latency_ms": tok.latency_ms, **stream(tok, audio, chunk)}
            results.append(r)
            rows.append([name, fmt(chunk, ".0f"), fmt(r["latency_ms"], ".1f"), fmt(r["x_real_time"], ".1f"),
                         fmt(r["chunk_compute_ms_median"], ".2f"), fmt(r["chunk_compute_ms_p95"], ".2f")])
            print_table("streaming, batch 1 (audio -> tokens -> refined mel)",
                        ["model", "chunk ms", "algorithmic latency ms", "x real time", "ms/chunk median",
                         "ms/chunk p95"], rows)
    long_file = {}
    if args.hour_seconds > 0:
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = Path(tmp) / "ckpt"
            causal.save_pretrained(ckpt)
            wav = Path(tmp) / "hour.wav"
            hour_file(wav, args.hour_seconds, causal.config.model.mel.sample_rate, args.corpus)
            vq = [sys.executable, "-m", "vqkit"]
            long_file["encode"] = child_peak([*vq, "encode", str(ckpt), str(wav), "-o", str(Path(tmp) / "hour.npy")])
            long_file["decode"] = child_peak([*vq, "decode", str(ckpt), str(Path(tmp) / "hour.npy"), "-o",
                                              str(Path(tmp) / "hour-out.wav"), "--vocoder", "griffin-lim"])
        print_table(f"{args.hour_seconds / 60:.0f} min file, one child process per verb",
                    ["verb", "exit", "wall s", "peak RSS MB"],
                    [[k, str(v["returncode"]), fmt(v["wall_s"], ".0f"), fmt(v["peak_rss_mb"], ".0f")]
                     for k, v in long_file.items()])
    write_report(args.out, "streaming", started, device, load_before, loadavg(), time.perf_counter() - t0, args,
                 streaming=results, long_file=long_file)


if __name__ == "__main__":
    main()
