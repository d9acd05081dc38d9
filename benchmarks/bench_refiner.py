"""Does the refiner earn its place? The same wall-clock budget on the demo corpus for: no refiner
(MQGAN before the Refiner: MSE + GAN on the decoder output), the isolated refiner (the base model
learns from the draft MSE alone, the refiner from the refined losses and the GAN) and the shared
refiner (the reference code: refined losses also train the base model), at 86 and 21.5 tokens/s;
then a search over the refiner's size and losses. Each run is scored on the held-out clips, draft
and refined side by side: mel L1, vocoded PESQ-WB and STOI, and the oversmoothing measures
(global variance ratio, spectral flux ratio, modulation spectrum distance; 1, 1, 0 = the original).

    python benchmarks/bench_refiner.py --minutes 5                   # modes at both rates
    python benchmarks/bench_refiner.py --minutes 5 --set search      # refiner size / loss search at 86
    python benchmarks/bench_refiner.py --only 86-isolated 86-fm      # some runs

Needs the demo corpus and idle cores (runs train on the clock, one after another).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from budget import BudgetRun, train_and_score  # noqa: E402
from common import RESULTS, fmt, loadavg, print_table, setup_device, start_run, write_report  # noqa: E402

RATES = {"86": "mqgan-refiner", "21": "mqgan-refiner-21"}
MODES = {"none": ["model.refiner=null"], "isolated": [], "shared": ["model.refiner.mode=shared"]}
SEARCH = {   # isolated refiner, one change each, beside the default in the same set
    "x1": [],
    "x0.5": ["model.refiner.base_channels=4"],
    "x4": ["model.refiner.base_channels=32"],
    "fm": ["loss.feature_matching=2.0"],
    "l1": ["loss.refined_mse=0.0", "loss.refined_l1=2.0"],
    "gan0.3": ["loss.gan=0.3"],
    "gan3": ["loss.gan=3.0"],
}


def runs(which: str, search_rate: str) -> list[BudgetRun]:
    if which == "modes":
        return [BudgetRun(f"{r}-{m}", p, o) for r, p in RATES.items() for m, o in MODES.items()]
    return [BudgetRun(f"{search_rate}-{name}", RATES[search_rate], o) for name, o in SEARCH.items()]


HEADER = ["run", "steps", "draft L1", "refined L1", "draft PESQ", "refined PESQ", "draft STOI", "refined STOI",
          "GV draft / refined", "flux draft / refined", "MS dB draft / refined"]


def row(r: dict) -> list[str]:
    def pair(key: str, spec: str, prefix: tuple[str, str] = ("draft_", "refined_")) -> str:
        a, b = r.get(prefix[0] + key), r.get(prefix[1] + key)
        return f"{fmt(a, spec)} / {fmt(b, spec)}" if b is not None else fmt(a, spec)

    refined = "refined_l1" in r
    return [r["name"], str(r["steps"]), fmt(r.get("draft_l1"), ".3f"), fmt(r.get("refined_l1"), ".3f"),
            fmt(r.get("draft_vocoded_pesq_wb", None if refined else r.get("vocoded_pesq_wb")), ".2f"),
            fmt(r.get("vocoded_pesq_wb") if refined else None, ".2f"),
            fmt(r.get("draft_vocoded_stoi", None if refined else r.get("vocoded_stoi")), ".3f"),
            fmt(r.get("vocoded_stoi") if refined else None, ".3f"),
            pair("gv_ratio", ".2f"), pair("flux_ratio", ".2f"), pair("ms_distance_db", ".2f")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--set", choices=["modes", "search"], default="modes")
    ap.add_argument("--search-rate", choices=sorted(RATES), default="86")
    ap.add_argument("--only", nargs="*", default=None, help="run names to keep (e.g. 86-isolated)")
    ap.add_argument("--corpus", type=Path, default=Path("data/demo-speech"))
    ap.add_argument("--runs", type=Path, default=Path("runs/bench-refiner"))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None, help="default: results/refiner_<set>.json")
    ap.add_argument("--reuse", action="store_true", help="collect runs that already finished instead of retraining")
    args = ap.parse_args()
    device = setup_device(args)
    started, load_before = start_run(device)
    t0 = time.perf_counter()
    todo = [r for r in runs(args.set, args.search_rate) if not args.only or r.name in args.only]
    results = []
    for run in todo:
        print(f"[{time.strftime('%H:%M:%S')}] {run.name}: {run.preset} {' '.join(run.overrides)}", flush=True)
        results.append(train_and_score(run, args.minutes, args.corpus, args.runs, args.threads,
                                       reuse=args.reuse))
        print_table(f"refiner at {args.minutes:g} min per run (held-out)", HEADER, [row(r) for r in results])
    write_report(args.out or RESULTS / f"refiner_{args.set}.json", "refiner", started, device, load_before, loadavg(),
                 time.perf_counter() - t0, args, results=results)


if __name__ == "__main__":
    main()
