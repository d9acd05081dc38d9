"""One residual-FSQ mel tokenizer, decoded from its first 1, 2, ... N stages: held-out quality per
bit rate from a single model (the Stable Codec idea: one model serves several rates).

Trains `mqgan-refiner-21-rfsq` (and, with --baseline, the single-FSQ `mqgan-refiner-21` beside it)
for the same wall-clock budget through the real command line (benchmarks/budget.py), then scores
every held-out clip decoded from k stages for each k: mel L1 against the original log-mel, and
PESQ-WB / STOI of the vocoded reconstruction against the vocoded original (the shipped HiFi-GAN when
it applies, else Griffin-Lim). Prints a table and writes JSON.

    python benchmarks/bench_rfsq_stages.py --minutes 4 --baseline

Needs the demo corpus (`vqkit data demo-speech data/demo-speech`) and idle cores.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from budget import BudgetRun, train_and_score  # noqa: E402
from common import RESULTS, fmt, loadavg, print_table, setup_device, start_run, write_report  # noqa: E402
from vqkit.evaluation.audio_metrics import audio_pair_metrics  # noqa: E402
from vqkit.frontends.audio_io import find_audio_files, load_audio  # noqa: E402
from vqkit.models.tokenizer import Tokenizer  # noqa: E402
from vqkit.vocoders import vocoder_for  # noqa: E402

HEADER = ["model", "stages", "bits/s", "steps", "mel L1", "PESQ-WB", "STOI"]


@torch.no_grad()
def score_by_stages(run_dir: Path, heldout: Path) -> list[dict]:
    """Per k: mean mel L1 and vocoded PESQ-WB / STOI of the held-out clips decoded from k stages."""
    tok = Tokenizer.from_pretrained(run_dir).eval()
    vocoder = vocoder_for(tok.config.model.mel)
    sr = tok.config.model.mel.sample_rate
    ks = list(range(1, (tok.stages or 1) + 1))
    sums: dict[int, dict[str, list[float]]] = {k: {"l1": [], "pesq_wb": [], "stoi": []} for k in ks}
    for path in find_audio_files(heldout):
        mel = tok.frontend(torch.from_numpy(load_audio(path, sr)))
        reference = vocoder(mel).numpy()
        tokens = tok.encode(mel)
        for k in ks:
            out = tok.decode(tokens, stages=k if tok.stages else None)
            frames = min(out.shape[-1], mel.shape[-1])
            sums[k]["l1"].append(float((out[..., :frames] - mel[..., :frames]).abs().mean()))
            m = audio_pair_metrics(vocoder(out).numpy(), reference, sr)
            for name in ("pesq_wb", "stoi"):
                if m[name] is not None:
                    sums[k][name].append(m[name])
    rates = tok.bits_per_second_by_stages() or {"1": tok.bits_per_second}   # one FSQ: one rate
    return [{"stages": k, "bits_per_second": rates[str(k)], "vocoder": vocoder.name,
             **{name: statistics.mean(v) if v else None for name, v in sums[k].items()}} for k in ks]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=4.0, help="training budget per model (wall clock)")
    ap.add_argument("--baseline", action="store_true", help="also train mqgan-refiner-21 (one FSQ) beside it")
    ap.add_argument("--corpus", type=Path, default=Path("data/demo-speech"), help="folder with train/ and heldout/")
    ap.add_argument("--runs", type=Path, default=Path("runs/bench-rfsq-stages"), help="where the runs go")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=RESULTS / "rfsq_stages.json")
    args = ap.parse_args()
    device = setup_device(args)
    started, load_before = start_run(device)
    t0 = time.perf_counter()
    runs = [BudgetRun("21-rfsq", "mqgan-refiner-21-rfsq")] + ([BudgetRun("21", "mqgan-refiner-21")] if args.baseline else [])
    results, rows = [], []
    for run in runs:
        print(f"[{time.strftime('%H:%M:%S')}] {run.name}: {run.preset}", flush=True)
        trained = train_and_score(run, args.minutes, args.corpus, args.runs, args.threads)
        by_stages = score_by_stages(args.runs / run.name, args.corpus / "heldout")
        results.append({**trained, "by_stages": by_stages})
        rows += [[run.preset, str(s["stages"]), fmt(s["bits_per_second"], ".0f"), str(trained["steps"]),
                  fmt(s["l1"], ".3f"), fmt(s["pesq_wb"], ".2f"), fmt(s["stoi"], ".3f")] for s in by_stages]
        print_table(f"decoding from k stages, {args.minutes:g} min of training each", HEADER, rows)
    write_report(args.out, "rfsq_stages", started, device, load_before, loadavg(), time.perf_counter() - t0, args,
                 results=results)


if __name__ == "__main__":
    main()
