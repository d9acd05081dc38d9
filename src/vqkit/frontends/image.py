"""Reading and writing images robustly: any common file -> float32 (C, H, W) in [-1, 1].

Every Pillow mode a real folder of images contains is handled (palette, alpha, 1-bit, 16-bit, 32-bit
int, float, CMYK, EXIF-rotated JPEGs), and every failure becomes an ImageError naming the file, so a
bad file in a large corpus can be found. Loading is strict: a truncated file is an error rather than
an image with a grey band, and an image over a pixel budget (MAX_PIXELS, read from the header) is
refused before its pixels are decoded: a 9000x9000 PNG is 250 KB on disk and gigabytes in memory.
"""
from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps

from ..io.inputs import InputError, decoder_message, find_files
from ..io.files import atomic_write

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
# Default pixel budget (`--max-pixels`): about 1 GB at load_image's 16 bytes per pixel, before the
# model sees it. Pillow's own hard limit (2 x Image.MAX_IMAGE_PIXELS, 179 Mpx) still applies above it.
MAX_PIXELS = 64_000_000


class ImageError(InputError):
    """An image file that cannot be used. `reason` is a short machine-readable tag: "unreadable",
    "empty" (0 bytes), "too large" (over the pixel budget), "non-finite", "too small" (corpus
    minimum) or "not-a-directory" (find_image_files)."""



def find_image_files(root: str | Path) -> list[Path]:
    """All files under `root` (recursively) whose suffix, in any case, is in IMAGE_EXTENSIONS, sorted."""
    return find_files(root, IMAGE_EXTENSIONS, "images", ImageError)


# ---- decoding ----------------------------------------------------------------------------------

# catch_warnings swaps the process-wide filter list; the lock keeps our own threads from restoring
# each other's filters. Only Image.open runs under it (header parsing), not the decoding.
_OPEN_LOCK = threading.Lock()
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601-2, as Pillow's convert("L")


def _open(path: Path, max_pixels: int) -> Image.Image:
    """Open (header only), check the size against `max_pixels`, then decode the first frame,
    turning every failure into an ImageError."""
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            # the budget below decides; Pillow's warning would refuse images the user allowed
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: image too large, possible decompression bomb ({e})", reason="too large") from None
    except Exception as e:  # UnidentifiedImageError, OSError, SyntaxError (bad PNG chunks), ...
        raise ImageError(f"{path}: cannot decode image, corrupt or not an image ({decoder_message(e, path)})") from None
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise ImageError(f"{path}: image too large ({w}x{h} = {w * h / 1e6:.1f} Mpx > the {max_pixels / 1e6:g} Mpx "
                         "budget; --max-pixels raises it), refused before decoding", reason="too large")
    # Strict on purpose (this is also Pillow's default, re-asserted in case other code relaxed it):
    # with LOAD_TRUNCATED_IMAGES a cut-off file decodes "successfully" with a filled-in band.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        im.load()
        upright = ImageOps.exif_transpose(im)  # camera JPEGs store rotation in EXIF, not in the pixels
    except Exception as e:
        im.close()
        raise ImageError(f"{path}: cannot decode image, truncated or corrupt ({decoder_message(e, path)})") from None
    if upright is not im:  # a copy: close the original, which keeps multi-frame files (GIF, TIFF) open
        im.close()
    im = upright
    if im.width < 1 or im.height < 1:
        raise ImageError(f"{path}: image has no pixels ({im.width}x{im.height})", reason="empty")
    return im


def _planes(pixels: np.ndarray, scale: float, offset: float = 0.0) -> np.ndarray:
    """(H, W[, K]) pixels -> float32 (K, H, W) holding (pixels + offset) / scale.

    One conversion pass straight into channel-first float32, then in-place arithmetic: a large image
    costs its decoded pixels plus one float32 copy, not a chain of float64 temporaries (a 6000x6000
    photo took 2 GB that way)."""
    view = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    out = np.array(view, dtype=np.float32, order="C")   # always a fresh, writable copy
    if offset:
        out += np.float32(offset)
    out /= np.float32(scale)   # a division, so full scale maps to exactly 1.0
    return out


def _over_white(planes: np.ndarray) -> np.ndarray:
    """(K+1, H, W) float32 in [0, 1] with a trailing alpha plane -> (K, H, W) composited over a white
    background, in place: transparent regions become white, as they appear in browsers and viewers."""
    color, alpha = planes[:-1], planes[-1:]
    color -= 1.0          # c * a + (1 - a) == (c - 1) * a + 1
    color *= alpha
    color += 1.0
    return color


def _to_unit(im: Image.Image, path: Path) -> np.ndarray:
    """Pillow image -> float32 (1 or 3, H, W) in [0, 1], scaled by the mode's full-scale value."""
    mode = im.mode
    if mode == "P":  # palette: transparency lives in info, not in a channel
        mode, im = ("RGBA", im.convert("RGBA")) if "transparency" in im.info else ("RGB", im.convert("RGB"))
    elif mode == "PA":
        mode, im = "RGBA", im.convert("RGBA")
    elif mode in ("RGBa", "La"):  # premultiplied alpha: let Pillow un-premultiply
        mode = mode.replace("a", "A")
        im = im.convert(mode)
    if mode == "1":
        return _planes(np.asarray(im.convert("L")), 255.0)
    if mode in ("L", "RGB"):
        return _planes(np.asarray(im), 255.0)
    if mode in ("LA", "RGBA"):
        return _over_white(_planes(np.asarray(im), 255.0))
    if mode.startswith("I;16"):  # 16-bit grayscale (PNG, TIFF): full scale is 65535, not 255
        return _planes(np.asarray(im), 65535.0)
    if mode == "I":
        # 32-bit signed int. Pillow also uses it for 16-bit sources, so values that fit 16 bits are
        # scaled by 65535; otherwise the full int32 range maps to [0, 1].
        raw = np.asarray(im)
        if raw.min() >= 0 and raw.max() <= 65535:
            return _planes(raw, 65535.0)
        return _planes(raw, 2.0 ** 32 - 1, 2.0 ** 31)
    if mode == "F":
        raw = np.asarray(im)
        if not np.isfinite(raw).all():
            raise ImageError(f"{path}: float image has non-finite pixels (NaN or Inf)", reason="non-finite")
        lo, hi = float(raw.min()), float(raw.max())
        # Float images have no standard full scale: [0, 1] is kept, anything else is min-max scaled.
        return _planes(raw, 1.0) if lo >= 0 and hi <= 1 else _planes(raw, max(hi - lo, 1e-12), -lo)
    try:  # CMYK, YCbCr, LAB, HSV, RGBX, I;16 variants Pillow converts itself, ...
        rgb = im.convert("RGB")
    except Exception as e:
        raise ImageError(f"{path}: unsupported image mode {im.mode!r} ({decoder_message(e, path)})") from None
    return _planes(np.asarray(rgb), 255.0)


def load_image(path: str | Path, channels: int = 3, max_pixels: int | None = None) -> torch.Tensor:
    """Decode `path` to float32 (channels, H, W) in [-1, 1].

    Alpha (RGBA, LA, palette transparency) is composited over white. channels=1 converts colour to
    ITU-R 601-2 luma (like Pillow's "L"); channels=3 repeats grayscale. Multi-frame files (GIF,
    TIFF) give their first frame. Raises ImageError for missing, empty, truncated or corrupt files
    and for images over `max_pixels` (default MAX_PIXELS), checked from the header before decoding.
    Peak memory is about 16 bytes per pixel (decoded pixels plus the float32 result).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)", reason="empty")
    im = _open(path, MAX_PIXELS if max_pixels is None else max_pixels)
    try:
        planes = _to_unit(im, path)
    finally:
        im.close()
    if channels == 1 and planes.shape[0] == 3:
        planes = np.tensordot(_LUMA, planes, axes=1)[None]
    elif channels == 3 and planes.shape[0] == 1:
        planes = np.repeat(planes, 3, axis=0)
    np.clip(planes, 0.0, 1.0, out=planes)
    planes *= 2.0
    planes -= 1.0
    return torch.from_numpy(planes)


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
    atomic_write(path, lambda tmp: im.save(tmp, format="PNG"))


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
