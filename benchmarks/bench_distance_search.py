"""Where plain VQ's forward time goes at 1024 x 256 on 16384 vectors, and whether a lower-precision
nearest-code search would pay: the float32 search vqkit runs (one fused addmm, then argmin), its
GEMM alone, and bfloat16 searches (the GEMM in bf16; its argmin; its best k candidates re-scored in
float32), each with the share of ids that equal the float32 search's. Prints a table, writes JSON.

    python benchmarks/bench_distance_search.py
    python benchmarks/bench_distance_search.py --n 65536 --k 16384 --dim 32

Not a vqkit code path: it measures whether one would be worth adding (see benchmarks/README.md).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from common import (RESULTS, add_device_arg, fmt, loadavg, print_table, setup_device, start_run, sync,  # noqa: E402
                    timed, write_report)


def rescored(h, e, e_sq, scores, k: int) -> torch.Tensor:
    """The exact float32 nearest among each row's k best low-precision candidates."""
    top = scores.float().topk(k, dim=-1, largest=False).indices                  # (N, k)
    exact = e_sq[top] - 2 * torch.einsum("nkd,nd->nk", e[top], h)
    return top.gather(1, exact.argmin(-1, keepdim=True)).squeeze(1)


def ways(h: torch.Tensor, e: torch.Tensor) -> dict:
    e_sq = (e * e).sum(-1)
    hb, eb, eb_sq = h.bfloat16(), e.bfloat16(), e_sq.bfloat16()

    def bf16_scores():
        return torch.addmm(eb_sq, h.bfloat16(), eb.t(), alpha=-2)

    return {
        "float32 addmm + argmin (vqkit)": lambda: torch.addmm(e_sq, h, e.t(), alpha=-2).argmin(-1),
        "float32 addmm alone": lambda: torch.addmm(e_sq, h, e.t(), alpha=-2),
        "cdist + argmin": lambda: torch.cdist(h, e).argmin(-1),
        "bf16 matmul alone (inputs already bf16)": lambda: hb @ eb.t(),
        "bf16 addmm, argmin in bf16": lambda: bf16_scores().argmin(-1),
        "bf16 addmm, argmin in float32": lambda: bf16_scores().float().argmin(-1),
        "bf16 addmm, best 2 re-scored in float32": lambda: rescored(h, e, e_sq, bf16_scores(), 2),
        "bf16 addmm, best 4 re-scored in float32": lambda: rescored(h, e, e_sq, bf16_scores(), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=16384, help="latent vectors")
    ap.add_argument("--k", type=int, default=1024, help="codebook size")
    ap.add_argument("--dim", type=int, default=256, help="vector width")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None)
    add_device_arg(ap)
    ap.add_argument("--out", type=Path, default=RESULTS / "distance_search.json")
    args = ap.parse_args()
    device = setup_device(args)
    started, load_before = start_run(device)
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(0)
    h = torch.randn(args.n, args.dim, generator=g).to(device)
    e = torch.randn(args.k, args.dim, generator=g).to(device)
    exact = torch.addmm((e * e).sum(-1), h, e.t(), alpha=-2).argmin(-1)
    rows, results = [], []
    base = None
    for name, fn in ways(h, e).items():
        fn(), fn()   # warm-up
        sync(device)
        t = timed(fn, device, args.repeats, budget_s=3.0, min_repeats=3)
        out = fn()
        same = float((out == exact).float().mean()) if out.dim() == 1 else None
        base = base or t["median_s"]
        results.append({"way": name, **t, "ids_equal_float32": same})
        rows.append([name, fmt(t["median_s"] * 1e3, ".1f"), fmt(t["median_s"] / base, ".2f"),
                     "-" if same is None else f"{same:.2%}"])
    print_table(f"nearest-code search, N={args.n} K={args.k} d={args.dim}", ["way", "ms", "x vqkit's", "ids equal"],
                rows)
    write_report(args.out, "distance_search", started, device, load_before, loadavg(), time.perf_counter() - t0,
                 args, results=results)


if __name__ == "__main__":
    main()
