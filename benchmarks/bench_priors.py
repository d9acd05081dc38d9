#!/usr/bin/env python
"""Sampling cost of the token priors (a script, not a test): autoregressive GPT with and without
its KV cache against MaskGIT at a few step counts, on the same transformer size.

For each sequence length L (default 256 = a 16x16 grid and 1024 = 32x32) it times `generate` of
--batch samples in eval mode, float32:

  * gpt + KV cache: L forward passes, each over the one new position (attention reads the cache);
  * gpt full recompute (`use_cache=False`): L forward passes over the whole prefix, L(L+1)/2
    positions in all. Quadratic, so by default only up to --full-max-len (256) positions;
  * maskgit, --maskgit-steps S (default 8 16 32): S bidirectional forward passes over all L + 1
    positions (label/start prefix included).

The forward-pass count is the model's own `forward_passes`. Each measurement has one untimed call
first (warm-up at the same size). Then the median of up to --repeats calls, stopping once
--repeat-budget seconds are spent (at least --min-repeats calls). It prints a table and writes JSON
(default benchmarks/results/priors.json).

    .venv/bin/python benchmarks/bench_priors.py                       # defaults, ~40 s on 2 idle CPU cores
    .venv/bin/python benchmarks/bench_priors.py --lengths 256 --channels 4 --full-max-len 0
    python benchmarks/bench_priors.py --device cuda --batch 16 --full-max-len 1024

Random weights: the numbers are speed only, never sample quality.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py, also when imported from elsewhere

from common import RESULTS, add_device_arg, add_repeat_args, add_threads_out_args, count, fmt  # noqa: E402
from common import loadavg, print_table, setup_device, start_run, timed, wall_line, write_report  # noqa: E402
from vqkit.config import tagged_kinds  # noqa: E402
from vqkit.config.prior_schema import PriorModelConfig  # noqa: E402
from vqkit.priors import build_prior  # noqa: E402

DEFAULT_OUT = RESULTS / "priors.json"
NOTES = ["random weights: speed only, never sample quality",
         "one call = generate(batch, L) in eval mode, float32, temperature 1, no top-k / top-p",
         "positions computed = transformer positions over all forward passes of one call, per sample",
         "gpt full recompute is the reference path (use_cache=False), not a way to sample"]


def methods(length: int, args: argparse.Namespace) -> list[tuple[str, str, dict]]:
    """(label, prior kind, generate kwargs) for one length."""
    out = [("gpt + KV cache", "gpt", {"use_cache": True})]
    if length <= args.full_max_len:
        out.append(("gpt full recompute", "gpt", {"use_cache": False}))
    out += [(f"maskgit {s} steps", "maskgit", {"steps": s}) for s in args.maskgit_steps]
    return out


def positions_computed(kind: str, kwargs: dict, length: int) -> int:
    if kind == "maskgit":
        return kwargs["steps"] * (length + 1)
    return length if kwargs["use_cache"] else length * (length + 1) // 2


def bench_one(model: torch.nn.Module, label: str, kind: str, kwargs: dict, length: int,
              args: argparse.Namespace, device: torch.device) -> dict:
    gen = torch.Generator(device=device)

    def call() -> None:
        gen.manual_seed(0)
        model.generate(args.batch, length, generator=gen, **kwargs)

    call()   # warm-up at the same size (allocator, kernel choices)
    t = timed(call, device, args.repeats, args.repeat_budget, args.min_repeats)
    per_sample = t["median_s"] / args.batch
    return {"method": label, "kind": kind, "length": length, "channels": args.channels, "batch": args.batch,
            "generate_kwargs": kwargs, "forward_passes": model.forward_passes,
            "positions_computed": positions_computed(kind, kwargs, length),
            "median_s": t["median_s"], "min_s": t["min_s"], "repeats": t["repeats"],
            "s_per_sample": per_sample, "positions_per_s": length * args.batch / t["median_s"],
            "cpu_utilisation": t["cpu_utilisation"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 1024],
                    help="sequence lengths in positions (default: %(default)s = 16x16 and 32x32 grids)")
    ap.add_argument("--channels", type=int, default=1, help="indices per position (MoVQ: 4) (default: %(default)s)")
    ap.add_argument("--codebook", type=int, default=1024, help="codebook size K (default: %(default)s)")
    ap.add_argument("--dim", type=int, default=256, help="transformer width (default: %(default)s)")
    ap.add_argument("--depth", type=int, default=6, help="transformer blocks (default: %(default)s)")
    ap.add_argument("--heads", type=int, default=4, help="attention heads (default: %(default)s)")
    ap.add_argument("--batch", type=int, default=1, help="samples per generate call (default: %(default)s)")
    ap.add_argument("--maskgit-steps", type=int, nargs="+", default=[8, 16, 32],
                    help="MaskGIT decoding steps to time (default: %(default)s)")
    ap.add_argument("--full-max-len", type=int, default=256,
                    help="time gpt without KV cache only up to this length; its cost grows with L^2 "
                         "(default: %(default)s; 0 = never)")
    add_device_arg(ap)
    add_repeat_args(ap, "measurement", repeats=3, budget_s=4.0, min_repeats=1, repeats_help="timed calls, median")
    add_threads_out_args(ap, DEFAULT_OUT)
    args = ap.parse_args(argv)
    if min(args.lengths) < 1 or args.channels < 1 or args.codebook < 2 or args.batch < 1 or args.repeats < 1:
        ap.error("--lengths, --channels, --batch and --repeats must be >= 1, --codebook >= 2")
    if min(args.maskgit_steps) < 1:
        ap.error("--maskgit-steps must be >= 1")
    args.min_repeats = max(1, min(args.min_repeats, args.repeats))

    device = setup_device(args)
    started, load_before = start_run(device)
    t_all = time.perf_counter()
    results, params = [], {}
    for length in args.lengths:
        models = {}
        for kind in ("gpt", "maskgit"):
            torch.manual_seed(0)
            cfg = tagged_kinds(PriorModelConfig)[kind](dim=args.dim, depth=args.depth, heads=args.heads).validate()
            models[kind] = build_prior(cfg, args.codebook, args.channels, max_len=length).to(device).eval()
            params[kind] = count(models[kind])
        for label, kind, kwargs in methods(length, args):
            r = bench_one(models[kind], label, kind, kwargs, length, args, device)
            results.append(r)
            print(f"  L={length:<5} {label:<20} {r['forward_passes']:5d} passes  {r['s_per_sample']:8.3f} s/sample "
                  f"(median of {r['repeats']})", flush=True)
    wall = time.perf_counter() - t_all
    load_after = loadavg()

    rows = []
    for r in results:
        ar = next(x for x in results if x["length"] == r["length"] and x["method"] == "gpt + KV cache")
        rows.append([r["method"], str(r["length"]), str(r["forward_passes"]), str(r["positions_computed"]),
                     f"{r['s_per_sample']:.3f}", f"{r['s_per_sample'] / ar['s_per_sample']:.2f}",
                     f"{r['positions_per_s']:.0f}", fmt(r["cpu_utilisation"], ".2f")])
    print_table(f"Prior sampling, batch {args.batch}, c = {args.channels}, K = {args.codebook}, dim {args.dim}, "
                f"depth {args.depth} (float32, {device.type})",
                ["method", "L", "passes", "positions computed", "s/sample", "x AR+cache", "positions/s", "CPU use"],
                rows)
    print(f"\nparameters: gpt {params['gpt'] / 1e6:.2f} M, maskgit {params['maskgit'] / 1e6:.2f} M")
    print(wall_line(wall, load_before, load_after))
    write_report(args.out, "priors", started, device, load_before, load_after, wall, args,
                 parameters=params, notes=NOTES, results=results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
