"""Held-out evaluation of an image tokenizer: PSNR / SSIM on [0, 255] (data range 255), MSE / L1 in
[-1, 1] units for the draft and the refined output, codebook usage and perplexity over all tokens,
token grid and bits per image."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from ..quantizers.base import usage_stats


def _center_crop(x: torch.Tensor, size: int | None, multiple: int) -> torch.Tensor:
    """Centre crop to at most `size` per side, rounded down to a multiple of the downsampling."""
    h, w = x.shape[-2:]
    th, tw = (min(h, size), min(w, size)) if size else (h, w)
    th, tw = max(multiple, th - th % multiple), max(multiple, tw - tw % multiple)
    top, left = max(0, (h - th) // 2), max(0, (w - tw) // 2)
    return x[..., top: top + th, left: left + tw]


@torch.no_grad()
def evaluate_images(model, images: list[torch.Tensor], crop: int | None = None) -> tuple[dict, list[dict]]:
    """Run `model` (eval mode) over images (C, H, W) in [-1, 1], centre-cropped to `crop` when given.
    Returns (metrics, examples); each example holds 'original', 'draft' and (with a refiner) 'refined'."""
    from .image_metrics import psnr, ssim

    if not images:
        raise ValueError("no held-out images to evaluate")
    device = model.norm_mean.device
    sums: dict[str, float] = {}
    tokens, examples, pixels, grids = [], [], 0, set()
    for img in images:
        x = _center_crop(img.float(), crop, model.downsample).unsqueeze(0).to(device)
        out = model(model.pad_to_multiple(x))
        h, w = x.shape[-2:]
        outputs = {"draft": out.draft}
        if out.refined is not None:
            outputs["refined"] = out.refined
        for name, y in outputs.items():
            y = model.denormalize(y)[..., :h, :w].clamp(-1, 1)
            outputs[name] = y[0].cpu()
            for metric, value in (("mse", float((y - x).pow(2).mean())), ("l1", float((y - x).abs().mean())),
                                  ("psnr", float(psnr(y[0].cpu(), x[0].cpu()))),
                                  ("ssim", float(ssim(y[0].cpu(), x[0].cpu())))):
                sums[f"{name}_{metric}"] = sums.get(f"{name}_{metric}", 0.0) + value
        tokens.append(out.indices.reshape(-1).cpu())
        grids.add(tuple(out.indices.shape[1:]))
        pixels += h * w
        examples.append({"original": x[0].cpu(), **outputs})
    n = len(images)
    metrics = {k: v / n for k, v in sums.items()}
    all_tokens = torch.cat(tokens)
    stats = usage_stats(all_tokens, model.codebook_size)
    grid = sorted(grids)[0]
    metrics.update(
        codebook_usage=float(stats["usage"]), perplexity=float(stats["perplexity"]),
        codes_used=int(torch.unique(all_tokens).numel()), codebook_size=model.codebook_size,
        token_grid=list(grid), tokens_per_image=math.prod(grid),
        bits_per_image=math.prod(grid) * model.bits_per_token, images=n,
        mean_pixels=pixels / n)
    return metrics, examples


def write_image_samples(out_dir: Path, examples: list[dict], metrics_log=None, step: int = 0,
                        max_images: int = 8) -> Path:
    """One PNG grid: originals, drafts and (with a refiner) refined outputs, one row each."""
    from ..frontends.image import save_grid

    examples = examples[:max_images]
    rows = [[ex[name] for ex in examples] for name in ("original", "draft", "refined") if name in examples[0]]
    path = Path(out_dir) / "reconstructions.png"
    save_grid(path, rows)
    if metrics_log is not None:
        import numpy as np
        from PIL import Image

        with Image.open(path) as im:
            metrics_log.image_array("reconstructions", np.asarray(im.convert("RGB")), step)
    return path
