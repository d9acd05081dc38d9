"""Quality versus token rate at a fixed compute budget.

Trains each rate's preset (86 / 43 / 21.5 / 10.8 tokens/s) for the same wall-clock budget on the demo
corpus, one after another, and scores each on the held-out clips: mel L1 (draft and refined),
vocoded PESQ-WB and STOI, codebook usage (held-out and over the training corpus). Prints a table,
writes JSON and a PNG plot against tokens/s and bits/s.

    python benchmarks/bench_token_rate.py --minutes 6
    # an FSQ level study: extra variants of a preset (name=preset:override;override)
    python benchmarks/bench_token_rate.py --presets mqgan-refiner-21 \
        --variant "21-15360=mqgan-refiner-21:model.quantizer.levels=[8,8,8,6,5];loss.gan=0.5"

Needs the demo corpus (`vqkit data demo-speech data/demo-speech`) and idle cores: every run trains
on the clock, so anything else running makes the runs unequal.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from budget import BudgetRun, train_and_score  # noqa: E402
from common import RESULTS, fmt, print_table, setup_device, start_run, loadavg, write_report  # noqa: E402

PRESETS = ["mqgan-refiner", "mqgan-refiner-43", "mqgan-refiner-21", "mqgan-refiner-11"]


def parse_variant(text: str) -> BudgetRun:
    """NAME=PRESET:key=value;key=value"""
    name, _, rest = text.partition("=")
    preset, _, overrides = rest.partition(":")
    if not name or not preset:
        raise SystemExit(f"--variant {text!r}: expected NAME=PRESET[:key=value;key=value]")
    return BudgetRun(name, preset, [o for o in overrides.split(";") if o])


def row(r: dict) -> list[str]:
    return [r["name"], fmt(r["tokens_per_second"], ".1f"), str(r["codebook_size"]), fmt(r["bits_per_second"], ".0f"),
            str(r["steps"]), fmt(r.get("draft_l1"), ".3f"), fmt(r.get("refined_l1"), ".3f"),
            fmt(r.get("vocoded_pesq_wb"), ".2f"), fmt(r.get("vocoded_stoi"), ".3f"),
            f"{r['codebook_usage']:.1%} ({r['heldout_usage_bound']:.0%})",
            f"{r['train_usage']:.1%} ({r['train_usage_bound']:.0%})", fmt(r["train_perplexity"], ".0f")]


HEADER = ["run", "tokens/s", "codes", "bits/s", "steps", "draft L1", "refined L1", "PESQ-WB", "STOI",
          "usage held-out (bound)", "usage train (bound)", "train perplexity"]


def plot(results: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("refined_l1", "held-out mel L1 (refined)"), ("vocoded_pesq_wb", "PESQ-WB (vocoded)"),
              ("vocoded_stoi", "STOI (vocoded)"), ("train_usage", "codebook usage (training corpus)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4))
    value = lambda r, key: r.get(key, r.get("draft_l1"))  # noqa: E731 (no refiner: the draft is the output)
    for ax, (key, title) in zip(axes, panels):
        presets = [r for r in results if not r["overrides"]]       # the presets: one line
        variants = [r for r in results if r["overrides"]]          # level variants: markers
        ax.plot([r["tokens_per_second"] for r in presets], [value(r, key) for r in presets], "o-", label="presets")
        if variants:
            ax.plot([r["tokens_per_second"] for r in variants], [value(r, key) for r in variants], "x",
                    color="tab:red", label="variants")
        for r in results:
            ax.annotate(f"{r['codebook_size']} codes, {r['bits_per_second']:.0f} bit/s",
                        (r["tokens_per_second"], value(r, key)), textcoords="offset points", xytext=(4, 3),
                        fontsize=6)
        xs = sorted({r["tokens_per_second"] for r in results})
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [f"{x:.1f}" for x in xs])
        ax.set_xlabel("tokens per second")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=6.0, help="training budget per run (wall clock)")
    ap.add_argument("--presets", nargs="*", default=PRESETS)
    ap.add_argument("--variant", action="append", default=[], help="NAME=PRESET:key=value;key=value (repeatable)")
    ap.add_argument("--corpus", type=Path, default=Path("data/demo-speech"), help="folder with train/ and heldout/")
    ap.add_argument("--runs", type=Path, default=Path("runs/bench-token-rate"), help="where the runs go")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=RESULTS / "token_rate.json")
    ap.add_argument("--plot", type=Path, default=RESULTS / "token_rate.png")
    ap.add_argument("--replot", type=Path, default=None, help="only redraw the plot from this JSON report")
    args = ap.parse_args()
    if args.replot:
        plot(json.loads(args.replot.read_text())["results"], args.plot)
        return
    device = setup_device(args)
    started, load_before = start_run(device)
    t0 = time.perf_counter()
    runs = [BudgetRun(p.removeprefix("mqgan-refiner-") if p != "mqgan-refiner" else "86", p) for p in args.presets]
    runs += [parse_variant(v) for v in args.variant]
    results = []
    for run in runs:
        print(f"[{time.strftime('%H:%M:%S')}] {run.name}: {run.preset} {' '.join(run.overrides)}", flush=True)
        results.append(train_and_score(run, args.minutes, args.corpus, args.runs, args.threads))
        print_table(f"token rate at {args.minutes:g} min per run", HEADER, [row(r) for r in results])
    results.sort(key=lambda r: -r["tokens_per_second"])
    plot(results, args.plot)
    print_table(f"token rate at {args.minutes:g} min per run", HEADER, [row(r) for r in results])
    write_report(args.out, "token_rate", started, device, load_before, loadavg(), time.perf_counter() - t0, args,
                 results=results)


if __name__ == "__main__":
    main()
