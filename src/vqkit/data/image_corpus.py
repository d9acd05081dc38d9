"""A folder of images -> tensors in memory (bad files skipped and counted), and training crops.

Like the audio corpus, one broken file must never end a run that has been loading for minutes: every
problem becomes a counted, logged skip, and only a folder with nothing usable is an error.

`ImageCropBatches[step]` is a pure function of (seed, step), as MelCropBatches is: a resumed run sees
exactly the batches an uninterrupted one would, and DataLoader workers can build any step alone.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..frontends.image import IMAGE_EXTENSIONS, ImageError, find_image_files, load_image
from ..io.inputs import SkipLog, describe_skips, relative_paths, with_skips
from .step_batches import StepBatches

REASONS = ("unreadable", "too large", "too small", "non-finite")
# float16 keeps images in [-1, 1] at half the memory of float32 and is exact for 8-bit files
# (to_uint8 recovers every value); 16-bit files keep ~11 bits. uint8 would halve memory again but
# lose the [-1, 1] convention and 16-bit precision.
STORE_DTYPE = torch.float16


@dataclass
class ImageCorpus:
    images: list[torch.Tensor]   # (C, H, W) in [-1, 1], stored as STORE_DTYPE (call .float() to compute)
    paths: list[Path]
    skipped: dict[str, int]      # reason -> count
    root: Path
    channels: int = 3

    def __len__(self) -> int:
        return len(self.images)

    @property
    def total_pixels(self) -> int:
        return sum(int(im.shape[1]) * int(im.shape[2]) for im in self.images)

    def relative_paths(self) -> list[str]:
        """Paths relative to root ('/'-separated): stable keys for split_by_hash."""
        return relative_paths(self.paths, self.root)

    def summary(self) -> str:
        text = f"{len(self.images)} images, {self.total_pixels / 1e6:.1f} megapixels"
        return with_skips(text, self.skipped)


def load_one_image(path: Path, channels: int, min_size: int,
                   max_pixels: int | None = None) -> tuple[torch.Tensor | None, str | None, str]:
    try:
        img = load_image(path, channels, max_pixels)
    except ImageError as e:
        reason = e.reason if e.reason in REASONS else "unreadable"
        return None, reason, str(e)
    except Exception as e:  # anything else a decoder throws still must not end the run
        return None, "unreadable", f"{path}: {type(e).__name__}: {e}"
    h, w = img.shape[1:]
    if min(h, w) < min_size:
        return None, "too small", f"{path}: {w}x{h} pixels, a side < min_size={min_size}"
    return img.to(STORE_DTYPE), None, ""


def load_image_corpus(root: str | Path, channels: int = 3, min_size: int = 8,
                      files: Sequence[str | Path] | None = None, log: Callable[[str], None] = print,
                      workers: int = 2) -> ImageCorpus:
    """Load every image under `root` (or just `files`) as a (channels, H, W) tensor in [-1, 1].

    Unreadable (corrupt, truncated, empty, not an image), too large (decompression-bomb size) and
    too small (a side < min_size) files are skipped and counted by reason. Raises ImageError when no
    file is usable. Image order follows the (sorted) file order.
    """
    root = Path(root)
    paths = [Path(p) for p in files] if files is not None else find_image_files(root)
    if not paths:
        raise ImageError(f"{root}: no usable images: no files with extensions "
                         f"{', '.join(IMAGE_EXTENSIONS)} found", reason="empty")

    def job(p: Path):
        return load_one_image(p, channels, min_size)

    # Pillow's decoders release the GIL, so threads overlap well; map() keeps file order.
    if workers > 1 and len(paths) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(job, paths))
    else:
        results = [job(p) for p in paths]

    images, kept, skips = [], [], SkipLog(log)
    for p, (img, reason, detail) in zip(paths, results):
        if img is not None:
            images.append(img)
            kept.append(p)
            continue
        skips.add(reason, detail)
    skipped = skips.close()

    if not images:
        raise ImageError(f"{root}: no usable images: found {len(paths)} image files, all skipped "
                         f"({describe_skips(skipped)})", reason="empty")
    corpus = ImageCorpus(images=images, paths=kept, skipped=skipped, root=root, channels=channels)
    log(f"{root}: {corpus.summary()}")
    return corpus


# ---- crops ---------------------------------------------------------------------------------------

def _as_float(img: torch.Tensor) -> torch.Tensor:
    """Stored image -> float32 (C, H, W) in [-1, 1]; uint8 tensors in [0, 255] are accepted too."""
    if img.dtype == torch.uint8:
        return img.float() / 127.5 - 1.0
    return img.float()


def fit_min_side(img: torch.Tensor, size: int) -> torch.Tensor:
    """Upscale (bicubic, aspect kept) so the shorter side is at least `size`; larger images untouched."""
    img = _as_float(img)
    h, w = img.shape[1:]
    if min(h, w) >= size:
        return img
    scale = size / min(h, w)
    new = (max(size, round(h * scale)), max(size, round(w * scale)))
    out = F.interpolate(img[None], size=new, mode="bicubic", align_corners=False)[0]
    return out.clamp(-1.0, 1.0)  # bicubic overshoots at edges


class ImageCropBatches(StepBatches):
    """`batches[step]` -> (x (B, C, size, size) float32 in [-1, 1], mask (B, 1) of ones).

    Images are picked uniformly with replacement, cropped at uniform random positions and, with
    random_flip, mirrored left-right with probability 1/2. The mask only mirrors MelCropBatches'
    (data, mask) interface so one training loop and DataLoader collation serve both: every image
    crop is fully valid, so it is all ones.
    """

    def __init__(self, images: Sequence[torch.Tensor], size: int, batch_size: int, seed: int,
                 random_flip: bool = True):
        if not images:
            raise ValueError("no images to train on")
        if len({int(im.shape[0]) for im in images}) != 1:
            raise ValueError("all images must have the same number of channels")
        self.size = int(size)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.random_flip = bool(random_flip)
        # Small images are upscaled once here, so __getitem__ only slices. Large ones stay as stored.
        self.images = [im if min(im.shape[1:]) >= self.size else fit_min_side(im, self.size) for im in images]
        self.count = len(self.images)   # picked uniformly (weights None)

    def batch(self, picks: list[int], g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.size
        x = torch.empty(self.batch_size, self.images[0].shape[0], s, s)
        for row, i in enumerate(picks):
            img = self.images[i]
            h, w = img.shape[1:]
            top = int(torch.randint(0, h - s + 1, (1,), generator=g))
            left = int(torch.randint(0, w - s + 1, (1,), generator=g))
            # Drawn even without random_flip, so crop positions do not depend on that setting.
            flip = bool(torch.rand((), generator=g) < 0.5) and self.random_flip
            crop = _as_float(img[:, top: top + s, left: left + s])
            x[row] = crop.flip(-1) if flip else crop
        return x, torch.ones(self.batch_size, 1)
