"""Held-out evaluation of an image tokenizer: PSNR / SSIM on [0, 255] (data range 255), MSE / L1 in
[-1, 1] units for the draft and the refined output, codebook usage and perplexity over all tokens,
token grid and bits per image."""
from __future__ import annotations

import math
from pathlib import Path

import torch

from ..quantizers.base import usage_from_counts



def _center_crop(x: torch.Tensor, size: int | None, multiple: int) -> torch.Tensor:
    """Centre crop to at most `size` per side, rounded down to a multiple of the downsampling."""
    h, w = x.shape[-2:]
    th, tw = (min(h, size), min(w, size)) if size else (h, w)
    th, tw = max(multiple, th - th % multiple), max(multiple, tw - tw % multiple)
    top, left = max(0, (h - th) // 2), max(0, (w - tw) // 2)
    return x[..., top: top + th, left: left + tw]


class ImageAccumulator:
    """Adds images (compute in batches, then add_computed one by one; or add); memory stays bounded.
    Optional extras: `lpips` (a module taking two image batches in [-1, 1]) and `fid` = (inception
    network, FeatureStats real, FeatureStats recon)."""

    def __init__(self, model, crop: int | None = None, lpips=None, inception=None):
        self.model, self.crop, self.lpips, self.inception = model, crop, lpips, inception
        self.sums: dict[str, float] = {}
        self.n = 0
        self.pixels = 0
        self.grids: set = set()
        self.code_counts = torch.zeros(model.codebook_size, dtype=torch.long)
        self.fid_stats = None
        if inception is not None:
            from .fid import FeatureStats

            self.fid_stats = (FeatureStats(), FeatureStats())

    def _add(self, key: str, value: float) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + value

    def add(self, img: torch.Tensor) -> dict:
        return self.add_computed(self.compute([img])[0])

    @torch.no_grad()
    def compute(self, imgs: list[torch.Tensor]) -> list[dict]:
        """The model's outputs for images, centre crops of one size batched together (as many as
        encode_batch puts in a batch on this device); nothing is counted until add_computed."""
        from ..models.batched import default_batch_images, same_size

        model = self.model
        xs = [_center_crop(img.float(), self.crop, model.downsample).to(model.norm_mean.device) for img in imgs]

        def run(xb: torch.Tensor):
            out = model(model.pad_to_multiple(xb))
            return out.draft, out.refined, out.indices

        outs = same_size(xs, default_batch_images(model), run)
        return [{"x": x, "draft": d, "refined": r, "indices": i} for x, (d, r, i) in zip(xs, outs)]

    def add_computed(self, r: dict) -> dict:
        """Count one image's computed outputs (from compute); returns its example."""
        from .image_metrics import psnr, ssim

        model, x = self.model, r["x"][None]
        h, w = x.shape[-2:]
        outputs = {"draft": r["draft"][None]}
        if r["refined"] is not None:
            outputs["refined"] = r["refined"][None]
        for name, y in outputs.items():
            y = model.denormalize(y)[..., :h, :w].clamp(-1, 1)
            outputs[name] = y[0].cpu()
            self._add(f"{name}_mse", float((y - x).pow(2).mean()))
            self._add(f"{name}_l1", float((y - x).abs().mean()))
            self._add(f"{name}_psnr", float(psnr(y[0].cpu(), x[0].cpu())))
            self._add(f"{name}_ssim", float(ssim(y[0].cpu(), x[0].cpu())))
        final = outputs.get("refined", outputs["draft"])[None].to(x.device)
        if self.lpips is not None:
            self._add("lpips", float(self.lpips(final, x)))
        if self.fid_stats is not None:
            self.fid_stats[0].update(self.inception(x).double().cpu().numpy())
            self.fid_stats[1].update(self.inception(final).double().cpu().numpy())
        indices = r["indices"]
        self.code_counts += torch.bincount(indices.reshape(-1).cpu(), minlength=model.codebook_size)
        self.grids.add(tuple(indices.shape))
        self.pixels += h * w
        self.n += 1
        return {"original": x[0].cpu(), **outputs}

    def result(self) -> dict:
        if not self.n:
            raise ValueError("no held-out images to evaluate")
        metrics = {k: v / self.n for k, v in self.sums.items()}
        if self.fid_stats is not None:
            from .fid import frechet_distance

            real, fake = self.fid_stats
            metrics["rfid"] = (frechet_distance(real.mean, real.cov, fake.mean, fake.cov)
                               if self.n >= 2 else float("nan"))
        metrics.update(usage_from_counts(self.code_counts))
        grid = sorted(self.grids)[0]
        metrics.update(token_grid=list(grid), tokens_per_image=math.prod(grid),
                       bits_per_image=math.prod(grid) * self.model.bits_per_token, images=self.n,
                       mean_pixels=self.pixels / self.n)
        return metrics


def evaluate_images(model, images: list[torch.Tensor], crop: int | None = None) -> tuple[dict, list[dict]]:
    """Run `model` (eval mode) over images (C, H, W) in [-1, 1], centre-cropped to `crop` when given.
    Returns (metrics, examples); each example holds 'original', 'draft' and (with a refiner) 'refined'."""
    acc = ImageAccumulator(model, crop)
    examples = [acc.add(img) for img in images]
    return acc.result(), examples


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


class ImageExamples:
    """Keeps the first examples for one grid picture, and writes each as its own PNG too."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.kept: list[dict] = []
        self.examples: list[dict] = []

    def add(self, i: int, rel: str, path: Path, ex: dict, keep: bool, whole: bool = True) -> None:
        if not keep:
            return
        from ..frontends.image import save_grid

        name = f"example{i:02d}.png"
        save_grid(self.out_dir / name, [[ex[k] for k in ("original", "draft", "refined") if k in ex]])
        self.kept.append(ex)
        self.examples.append({"title": rel, "images": [{"src": name, "caption": "original | draft"
                                                       + (" | refined" if "refined" in ex else "")}], "audio": []})

    def result(self) -> dict:
        if self.kept:
                write_image_samples(self.out_dir, self.kept, max_images=len(self.kept))
        return {}


def write_image_example(out_dir: Path, stem: str, signals: dict[str, torch.Tensor], title: str) -> dict:
    """One report example from named decoded images, side by side (a single one at its own size)."""
    from ..frontends.image import save_grid, save_image

    images = [s.clamp(-1, 1) for s in signals.values()]
    if len(images) == 1:   # a sample: the decoded image itself, at its size
        save_image(out_dir / f"{stem}.png", images[0])
    else:
        save_grid(out_dir / f"{stem}.png", [images])
    return {"title": title, "images": [{"src": f"{stem}.png", "caption": " | ".join(signals)}], "audio": []}
