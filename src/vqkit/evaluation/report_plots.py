"""Figures for the report page (matplotlib, headless): codebook usage and training curves."""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..quantizers.base import usage_from_counts
from .plots import plain_text, save_figure

# Bookkeeping, not losses or quality: never plotted by default.
IGNORED = {"step", "time", "lr", "steps_per_s", "codebook_size", "tokens_per_image", "bits_per_image",
           "tokens_per_second", "bits_per_second", "images", "clips", "frames", "mean_pixels", "gan_weight"}
# The training log calls it "usage", the held-out evaluation "codebook_usage": one panel.
ALIASES = {"codebook_usage": "usage"}
# Most relevant first; anything else numeric fills the remaining panels.
PRIORITY = ["g", "d", "draft_mse", "refined_mse", "perceptual", "g_adv", "usage", "perplexity",
            "refined_psnr", "draft_psnr", "refined_ssim", "draft_ssim"]
MAX_PANELS = 8
SPLIT_STYLE = {"train": dict(color="tab:blue", lw=1.2), "heldout": dict(color="tab:orange", lw=1.6, marker="o", ms=3)}


def usage_histogram(counts: np.ndarray, path: Path) -> Path:
    """How often each code is used, codes sorted by count (descending), log y axis."""
    c = np.sort(np.asarray(counts, dtype=np.float64).reshape(-1))[::-1]
    u = usage_from_counts(torch.from_numpy(c.copy()))
    s = {"used": u["codes_used"], "size": u["codebook_size"], "usage": u["codebook_usage"], "perplexity": u["perplexity"]}
    with plain_text():
        fig = _usage_figure(c, s)
    return save_figure(fig, path)


def _usage_figure(c: np.ndarray, s: dict):
    fig, ax = plt.subplots(figsize=(9, 3.2))
    used = c[c > 0]
    if used.size:
        x = np.arange(used.size)
        ax.fill_between(x, used, 0.8, step="post", color="tab:blue", alpha=0.35)
        ax.step(x, used, where="post", color="tab:blue", lw=1)
        ax.set_ylim(0.8, used.max() * 1.5)
    else:
        ax.text(0.5, 0.5, "no codes used", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylim(0.8, 10)
    # The unused tail, shaded; when it is most of a large codebook it is cut short (not to scale)
    # so that the used codes stay readable.
    right = c.size if s["used"] >= 0.3 * c.size else max(2, math.ceil(1.25 * s["used"]))
    if s["used"] < c.size:
        ax.axvspan(s["used"], right, color="0.85", lw=0)
        note = f"{c.size - s['used']:,} unused" + ("" if right == c.size else "\n(not to scale)")
        ax.text((s["used"] + right) / 2, 0.5, note, ha="center", va="center",
                transform=ax.get_xaxis_transform(), color="0.35", fontsize=8)
    ax.set_yscale("log")
    ax.set_xlim(0, max(1, right))
    ax.set_xlabel("codes, sorted by count")
    ax.set_ylabel("count")
    ax.set_title(f"codebook usage: {s['used']:,} / {s['size']:,} codes used ({100 * s['usage']:.1f}%), "
                 f"perplexity {s['perplexity']:.1f}", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    return fig


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _rank(key: str) -> tuple[int, str]:
    if key in PRIORITY:
        return PRIORITY.index(key), key
    if key.startswith(("draft_", "refined_")):
        return len(PRIORITY), key
    return len(PRIORITY) + 1, key


def curve_keys(records: list[dict], max_panels: int = MAX_PANELS) -> list[str]:
    """The panels to draw by default: numeric keys (aliases merged), most relevant first, constants
    (e.g. a codebook size logged every time) left out."""
    values: dict[str, set] = {}
    for r in records:
        for k, v in r.items():
            if k not in IGNORED and k != "split" and _is_number(v):
                values.setdefault(ALIASES.get(k, k), set()).add(float(v))
    keys = [k for k, vs in values.items() if len(vs) > 1 or k in PRIORITY]
    return sorted(keys, key=_rank)[:max_panels]


def _series(records: list[dict], key: str, split: str) -> tuple[list[float], list[float]]:
    names = [key] + [a for a, k in ALIASES.items() if k == key]
    xs, ys = [], []
    for r in records:
        if r.get("split", "train") != split or "step" not in r:
            continue
        for n in names:
            if _is_number(r.get(n)):
                xs.append(float(r["step"]))
                ys.append(float(r[n]))
                break
    return xs, ys


def training_curves(records: list[dict], path: Path, keys: list[str] | None = None) -> Path | None:
    """One panel per loss/metric, train and heldout splits as separate lines against the step.
    None when there is nothing to plot."""
    records = [r for r in records or [] if isinstance(r, dict)]
    keys = curve_keys(records) if keys is None else list(keys)
    panels = [(k, {s: _series(records, k, s) for s in ("train", "heldout")}) for k in keys]
    panels = [(k, d) for k, d in panels if any(xs for xs, _ in d.values())]
    if not panels:
        return None
    with plain_text():
        fig = _curves_figure(panels)
    return save_figure(fig, path)


def _curves_figure(panels: list):
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.6 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (key, data) in zip(axes.flat, panels):
        for split, (xs, ys) in data.items():
            if xs:
                ax.plot(xs, ys, label=split, **SPLIT_STYLE[split])
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
    handles = {}
    for ax in axes.flat[:len(panels)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="upper right", fontsize=8, ncol=len(handles))
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig
