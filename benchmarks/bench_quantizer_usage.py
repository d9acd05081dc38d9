"""Codebook usage and quality of each quantiser at 16384 codes and the same wall-clock budget.

Every variant is the `vqgan-l2` image preset with another quantiser (the rest of the model, the data
and the losses stay), trained one after another for the same minutes on the demo photographs and
scored on the held-out ones: PSNR, SSIM, held-out usage and perplexity, and usage over the training
set (`vqkit encode` of train/: the held-out set holds few tokens, so its usage is bounded; the table
says the bound). Prints a table and writes JSON.

    python benchmarks/bench_quantizer_usage.py --minutes 2
    python benchmarks/bench_quantizer_usage.py --only vq simvq lfq

Needs the demo photographs (`vqkit data demo-images data/demo-images`) and idle cores.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from budget import BudgetRun, train_and_score  # noqa: E402
from common import RESULTS, fmt, loadavg, print_table, setup_device, start_run, write_report  # noqa: E402

PRESET = "vqgan-l2"
PLAIN = ["model.quantizer.codebook_dim=null", "model.quantizer.l2_norm=false"]   # vq with dim-32 codes
# name -> overrides of the preset; every codebook has 16384 codes
VARIANTS: dict[str, list[str]] = {
    "vq": PLAIN,
    # the preset re-seeds dead codes from the batch's latents (since 2026-12-02, fourth session); 2048
    # latents a step over 16384 codes is 0.125 per code a step on average, so "dead" = under a tenth
    # of that (the config default 0.1 is most of the average)
    "vq l2 (preset)": [],
    "vq l2, no restarts": ["model.quantizer.restart_dead_codes=false"],
    "vq l2 + restarts": ["model.quantizer.restart_dead_codes=true", "model.quantizer.dead_code_threshold=0.01"],
    "simvq": ["model.quantizer={kind: simvq, codebook_size: 16384, dim: 32}"],
    "simvq + restarts": ["model.quantizer={kind: simvq, codebook_size: 16384, dim: 32, restart_dead_codes: true, "
                         "dead_code_threshold: 0.01}"],
    "vq rotation trick": PLAIN + ["model.quantizer.gradient=rotation"],
    "vq index backprop": PLAIN + ["model.quantizer.gradient=index_backprop"],
    "lfq": ["model.quantizer={kind: lfq, dim: 14}"],
    "lfq entropy 0.5": ["model.quantizer={kind: lfq, dim: 14, entropy_weight: 0.5}"],   # 5x MAGVIT-v2's weight
    "bsq": ["model.quantizer={kind: bsq, dim: 14}"],
    "fsq": ["model.quantizer={kind: fsq, levels: [8, 8, 8, 8, 4]}"],
}
HEADER = ["quantiser", "codes", "steps", "PSNR", "SSIM", "usage held-out (bound)", "perplexity held-out",
          "usage train (bound)", "perplexity train"]


def row(r: dict) -> list[str]:
    psnr = r.get("refined_psnr", r.get("draft_psnr"))   # no refiner: the draft is the output
    ssim = r.get("refined_ssim", r.get("draft_ssim"))
    return [r["name"], str(r["codebook_size"]), str(r["steps"]), fmt(psnr, ".2f"), fmt(ssim, ".3f"),
            f"{r['codebook_usage']:.1%} ({r['heldout_usage_bound']:.0%})", fmt(r.get("perplexity"), ".0f"),
            f"{r['train_usage']:.1%} ({r['train_usage_bound']:.0%})", fmt(r["train_perplexity"], ".0f")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=2.0, help="training budget per variant (wall clock)")
    ap.add_argument("--only", nargs="*", default=None, metavar="NAME", help=f"variants: {', '.join(VARIANTS)}")
    ap.add_argument("--corpus", type=Path, default=Path("data/demo-images"), help="folder with train/ and heldout/")
    ap.add_argument("--runs", type=Path, default=Path("runs/bench-quantizer-usage"), help="where the runs go")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=RESULTS / "quantizer_usage.json")
    args = ap.parse_args()
    names = args.only or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; available: {', '.join(VARIANTS)}")
    device = setup_device(args)
    started, load_before = start_run(device)
    t0 = time.perf_counter()
    results = []
    for name in names:
        run = BudgetRun(name.replace(" ", "-").replace("(", "").replace(")", ""), PRESET, VARIANTS[name])
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {PRESET} {' '.join(run.overrides)}", flush=True)
        results.append({**train_and_score(run, args.minutes, args.corpus, args.runs, args.threads), "name": name})
        print_table(f"quantisers at 16384 codes, {args.minutes:g} min each", HEADER, [row(r) for r in results])
    write_report(args.out, "quantizer_usage", started, device, load_before, loadavg(), time.perf_counter() - t0,
                 args, preset=PRESET, results=results)


if __name__ == "__main__":
    main()
