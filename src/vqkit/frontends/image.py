"""Reading and writing images robustly: any common file -> float32 (C, H, W) in [-1, 1].

Every Pillow mode a real folder of images contains is handled (palette, alpha, 1-bit, 16-bit, 32-bit
int, float, CMYK, EXIF-rotated JPEGs), and every failure becomes an ImageError naming the file, so a
bad file in a large corpus can be found. Loading is strict: a truncated file is an error rather than
an image with a grey band, and Pillow's decompression-bomb limit (Image.MAX_IMAGE_PIXELS) is kept.
"""
from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps

from ..data.files import InputError, find_files, write_atomically

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


class ImageError(InputError):
    """An image file that cannot be used. `reason` is a short machine-readable tag: "unreadable",
    "empty" (0 bytes), "too large" (decompression-bomb size), "non-finite", "too small" (corpus
    minimum) or "not-a-directory" (find_image_files)."""



def find_image_files(root: str | Path) -> list[Path]:
    """All files under `root` (recursively) whose suffix, in any case, is in IMAGE_EXTENSIONS, sorted."""
    return find_files(root, IMAGE_EXTENSIONS, "images", ImageError)


# ---- decoding ----------------------------------------------------------------------------------

# catch_warnings swaps the process-wide filter list; the lock keeps our own threads from restoring
# each other's filters. Only Image.open runs under it (header parsing), not the decoding.
_OPEN_LOCK = threading.Lock()
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601-2, as Pillow's convert("L")


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def _open(path: Path) -> Image.Image:
    """Open and fully decode the first frame, turning every failure into an ImageError."""
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{path}: image too large, possible decompression bomb ({e})", reason="too large") from None
    except Exception as e:  # UnidentifiedImageError, OSError, SyntaxError (bad PNG chunks), ...
        raise ImageError(f"{path}: cannot decode image, corrupt or not an image ({_short(e)})") from None
    w, h = im.size
    if limit and w * h > limit:  # in case a filter elsewhere silenced the warning
        im.close()
        raise ImageError(f"{path}: image too large ({w}x{h} = {w * h} pixels > Image.MAX_IMAGE_PIXELS "
                         f"= {limit}), possible decompression bomb", reason="too large")
    # Strict on purpose (this is also Pillow's default, re-asserted in case other code relaxed it):
    # with LOAD_TRUNCATED_IMAGES a cut-off file decodes "successfully" with a filled-in band.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        im.load()
        upright = ImageOps.exif_transpose(im)  # camera JPEGs store rotation in EXIF, not in the pixels
    except Exception as e:
        im.close()
        raise ImageError(f"{path}: cannot decode image, truncated or corrupt ({_short(e)})") from None
    if upright is not im:  # a copy: close the original, which keeps multi-frame files (GIF, TIFF) open
        im.close()
    im = upright
    if im.width < 1 or im.height < 1:
        raise ImageError(f"{path}: image has no pixels ({im.width}x{im.height})", reason="empty")
    return im


def _over_white(rgba: np.ndarray) -> np.ndarray:
    """Composite (H, W, K+1) float [0, 1] with a trailing alpha channel over a white background:
    transparent regions become white, as they appear in browsers and viewers."""
    alpha = rgba[..., -1:]
    return rgba[..., :-1] * alpha + (1.0 - alpha)


def _to_unit(im: Image.Image, path: Path) -> np.ndarray:
    """Pillow image -> float64 (H, W, 1 or 3) in [0, 1], scaled by the mode's full-scale value."""
    mode = im.mode
    if mode == "P":  # palette: transparency lives in info, not in a channel
        mode, im = ("RGBA", im.convert("RGBA")) if "transparency" in im.info else ("RGB", im.convert("RGB"))
    elif mode == "PA":
        mode, im = "RGBA", im.convert("RGBA")
    elif mode in ("RGBa", "La"):  # premultiplied alpha: let Pillow un-premultiply
        mode = mode.replace("a", "A")
        im = im.convert(mode)
    if mode == "1":
        arr = np.asarray(im.convert("L"), dtype=np.float64) / 255.0
    elif mode in ("L", "RGB"):
        arr = np.asarray(im, dtype=np.float64) / 255.0
    elif mode in ("LA", "RGBA"):
        arr = _over_white(np.asarray(im, dtype=np.float64) / 255.0)
    elif mode.startswith("I;16"):  # 16-bit grayscale (PNG, TIFF): full scale is 65535, not 255
        arr = np.asarray(im).astype(np.float64) / 65535.0
    elif mode == "I":
        # 32-bit signed int. Pillow also uses it for 16-bit sources, so values that fit 16 bits are
        # scaled by 65535; otherwise the full int32 range maps to [0, 1].
        raw = np.asarray(im).astype(np.float64)
        if raw.min() >= 0 and raw.max() <= 65535:
            arr = raw / 65535.0
        else:
            arr = (raw + 2.0 ** 31) / (2.0 ** 32 - 1)
    elif mode == "F":
        raw = np.asarray(im).astype(np.float64)
        if not np.isfinite(raw).all():
            raise ImageError(f"{path}: float image has non-finite pixels (NaN or Inf)", reason="non-finite")
        lo, hi = float(raw.min()), float(raw.max())
        # Float images have no standard full scale: [0, 1] is kept, anything else is min-max scaled.
        arr = raw if lo >= 0 and hi <= 1 else (raw - lo) / max(hi - lo, 1e-12)
    else:  # CMYK, YCbCr, LAB, HSV, RGBX, I;16 variants Pillow converts itself, ...
        try:
            arr = np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0
        except Exception as e:
            raise ImageError(f"{path}: unsupported image mode {im.mode!r} ({_short(e)})") from None
    if arr.ndim == 2:
        arr = arr[..., None]
    return arr


def load_image(path: str | Path, channels: int = 3) -> torch.Tensor:
    """Decode `path` to float32 (channels, H, W) in [-1, 1].

    Alpha (RGBA, LA, palette transparency) is composited over white. channels=1 converts colour to
    ITU-R 601-2 luma (like Pillow's "L"); channels=3 repeats grayscale. Multi-frame files (GIF,
    TIFF) give their first frame. Raises ImageError for missing, empty, truncated, corrupt or
    decompression-bomb-size files.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)", reason="empty")
    im = _open(path)
    try:
        arr = _to_unit(im, path)
    finally:
        im.close()
    if channels == 1 and arr.shape[-1] == 3:
        arr = arr @ _LUMA[:, None]
    elif channels == 3 and arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    out = np.clip(arr, 0.0, 1.0) * 2.0 - 1.0
    return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32))


# ---- writing -----------------------------------------------------------------------------------

def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) (or (H, W)) tensor in [-1, 1] -> (H, W, C) uint8, rounded to nearest and clipped.

    Exact inverse of load_image for 8-bit files: v/255*2-1 maps back to v.
    """
    x = x.detach().float().cpu()
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"expected an image tensor (C, H, W), got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():  # NaN would silently become 0 (black): refuse loudly
        raise ImageError("refusing to convert an image with non-finite values", reason="non-finite")
    arr = ((x.double() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return arr.permute(1, 2, 0).contiguous().numpy()


def _pil_image(x) -> Image.Image:
    arr = to_uint8(x) if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.dtype != np.uint8:
        raise TypeError(f"expected a tensor in [-1, 1] or a uint8 array, got dtype {arr.dtype}")
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))):
        raise ValueError(f"cannot write an image of shape {arr.shape}; need (H, W), (H, W, 3) or (H, W, 4)")
    return Image.fromarray(arr)


def save_image(path: str | Path, x) -> None:
    """Write a tensor (C, H, W) in [-1, 1] (C = 1 or 3) or a uint8 array (H, W[, C]) as PNG, atomically."""
    path = Path(path)
    im = _pil_image(x)
    write_atomically(path, lambda tmp: im.save(tmp, format="PNG"), ".png")


def save_grid(path: str | Path, rows: list[list[torch.Tensor]], pad: int = 2, pad_value: float = 1.0) -> None:
    """Write rows of (C, H, W) tensors in [-1, 1] as one PNG, e.g. [originals, reconstructions].

    Cells are top-left aligned in a grid of the largest height per row and width per column, with
    `pad` pixels of `pad_value` (white by default) between and around them. Grayscale images are
    repeated to RGB when any image in the grid has colour.
    """
    rows = [list(r) for r in rows if len(r)]
    if not rows:
        raise ValueError("save_grid needs at least one non-empty row")
    cells = [[t.detach().float().cpu() for t in r] for r in rows]
    if any(t.ndim != 3 for r in cells for t in r):
        raise ValueError("save_grid expects (C, H, W) tensors")
    channels = max(t.shape[0] for r in cells for t in r)
    n_cols = max(len(r) for r in cells)
    heights = [max(t.shape[1] for t in r) for r in cells]
    widths = [max((r[j].shape[2] for r in cells if j < len(r)), default=0) for j in range(n_cols)]
    grid = torch.full((channels, sum(heights) + pad * (len(cells) + 1), sum(widths) + pad * (n_cols + 1)),
                      float(pad_value))
    y = pad
    for r, h in zip(cells, heights):
        x = pad
        for j, t in enumerate(r):
            grid[:, y: y + t.shape[1], x: x + t.shape[2]] = t.expand(channels, -1, -1)
            x += widths[j] + pad
        y += h + pad
    save_image(path, grid)
