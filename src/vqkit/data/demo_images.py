"""The built-in demo image set: the photographs that ship inside scikit-image, written as PNG.

Layout of `out_dir` (like the demo speech corpus): train/*.png, heldout/*.png, ATTRIBUTION.txt and
manifest.json (written last, so it marks a complete build). A dozen photographs are enough for a CPU
demo because training draws random crops (data.image_size, 64 by default) at random positions with
flips: each photo yields thousands of distinct crops.

Only images bundled in the scikit-image wheel are used; those it fetches with pooch on demand are
never requested (the bundled file is checked for first), so building works offline. Left out on
purpose: moon and page (scikit-image states no licence or source for them), horse (a clip-art
silhouette), logo, colorwheel, checkerboard and chessboard (synthetic), cell (a phase map, not a
photograph).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Callable

import numpy as np

from ..frontends.image import save_image
from ..io.files import atomic_write
from ..io.inputs import read_manifest

MANIFEST_VERSION = 1
HELDOUT_COUNT = 3

# (skimage.data function, bundled file, licence as stated in the function's docstring, source).
PHOTOS = (
    ("astronaut", "astronaut.png", "Public domain (\"No known copyright restrictions, released into the public "
     "domain\")", "NASA Great Images database, https://flic.kr/p/r9qvLn (Eileen Collins)"),
    ("chelsea", "chelsea.png", "CC0 (\"No copyright restrictions. CC0 by the photographer\")",
     "Stefan van der Walt"),
    ("coffee", "coffee.png", "CC0 (\"No copyright restrictions. CC0 by the photographer\")",
     "Rachel Michetti, courtesy of Pikolo Espresso Bar"),
    ("hubble_deep_field", "hubble_deep_field.jpg", "Public domain (NASA: \"may be freely used in the public "
     "domain\")", "HubbleSite, http://hubblesite.org/newscenter/archive/releases/2012/37/image/a/"),
    ("immunohistochemistry", "ihc.png", "\"No known copyright restrictions\"",
     "Center for Microscopy And Molecular Imaging (CMMI)"),
    ("retina", "retina.jpg", "CC0 1.0 Universal Public Domain Dedication",
     "Mikael Haggstrom, https://commons.wikimedia.org/wiki/File:Fundus_photograph_of_normal_left_eye.jpg"),
    ("rocket", "rocket.jpg", "Public domain (released by SpaceX)",
     "SpaceX Photos, https://www.flickr.com/photos/spacexphotos/16511594820/"),
    ("camera", "camera.png", "CC0 (\"No copyright restrictions. CC0 by the photographer\")", "Lav Varshney"),
    ("coins", "coins.png", "\"No known copyright restrictions\"",
     "Brooklyn Museum Collection, https://www.brooklynmuseum.org/opencollection/archives/image/51611"),
    ("clock", "clock_motion.png", "Public domain (\"Released into the public domain by the photographer\")",
     "Stefan van der Walt"),
    ("text", "text.png", "Public domain (\"No known copyright restrictions, released into the public domain\")",
     "Wikipedia, https://en.wikipedia.org/wiki/File:Corner.png"),
    ("brick", "brick.png", "CC0 (Creative Commons CC0 License)",
     "CC0Textures Bricks25, https://cc0textures.com/view.php?tex=Bricks25 (perspective-corrected by scikit-image)"),
    ("grass", "grass.png", "CC0 (Creative Commons CC0 License)",
     "DeviantArt, https://www.deviantart.com/linolafett/art/Grass-01-434853879 (cropped, grayscale)"),
    ("gravel", "gravel.png", "CC0 (Creative Commons CC0 License)",
     "CC0Textures Gravel04, https://cc0textures.com/view.php?tex=Gravel04 (rescaled, cropped, grayscale)"),
    ("microaneurysms", "microaneurysms.png", "CC0 (\"No copyright restrictions. CC0 given by owner\")",
     "Andreas Maier, High-Resolution Fundus (HRF) Image Database, crop of 07_dr.JPG"),
)
# Fixed held-out choice: two colour photos and one grayscale, first HELDOUT_COUNT that are available.
HELDOUT_PREFERENCE = ("chelsea", "rocket", "coins", "coffee", "camera", "astronaut")

ATTRIBUTION_HEADER = """\
Demo image set: photographs bundled with scikit-image {version} (skimage.data), https://scikit-image.org.
Each file was produced by calling the named skimage.data function and writing the result losslessly as
PNG (grayscale images stay grayscale). Licence and source of each image, as stated in scikit-image's
documentation of that function:

"""


def _skimage_data():
    if importlib.util.find_spec("skimage") is None:
        raise RuntimeError("the demo image set needs scikit-image, which ships the photographs: "
                           "`pip install scikit-image`; or train on your own folder of images with "
                           "`vqkit train --data DIR`")
    import skimage
    import skimage.data

    return skimage, skimage.data


def _bundled(data_module, filename: str) -> bool:
    # Checking the wheel's data folder first means skimage.data never falls back to a pooch download.
    return (Path(data_module.__file__).parent / filename).is_file()


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):  # as_gray loaders may return floats in [0, 1]
        return np.clip(np.round(arr * 255.0), 0, 255).astype(np.uint8)
    raise ValueError(f"unexpected image dtype {arr.dtype}")


def _is_complete(out_dir: Path, manifest: dict | None) -> bool:
    if not manifest or manifest.get("version") != MANIFEST_VERSION:
        return False
    files = [out_dir / "train" / n for n in manifest.get("train_files", [])]
    files += [out_dir / "heldout" / n for n in manifest.get("heldout_files", [])]
    return bool(files) and all(f.is_file() for f in files) and (out_dir / "ATTRIBUTION.txt").is_file()


def make_demo_images(out_dir: str | Path, log: Callable[[str], None] = print) -> dict:
    """Build (or reuse) the demo image set in `out_dir` and return its manifest.

    Raises RuntimeError when scikit-image is not installed or too few of its photographs load.
    """
    out_dir = Path(out_dir)
    old = read_manifest(out_dir)
    if _is_complete(out_dir, old):
        log(f"demo image set already in {out_dir} ({old['train_count']} train, "
            f"{old['heldout_count']} held-out images)")
        return old
    skimage, data = _skimage_data()
    log(f"building the demo image set in {out_dir} from scikit-image {skimage.__version__} ...")

    photos, unavailable = [], []
    for func, filename, licence, source in PHOTOS:
        if not hasattr(data, func) or not _bundled(data, filename):
            unavailable.append(func)
            continue
        try:
            arr = _to_uint8(getattr(data, func)())
        except Exception as e:  # a damaged install must not stop the rest
            log(f"demo: skipping {func}: {type(e).__name__}: {e}")
            unavailable.append(func)
            continue
        photos.append({"function": func, "file": f"{func}.png", "licence": licence, "source": source,
                       "width": int(arr.shape[1]), "height": int(arr.shape[0]),
                       "channels": 1 if arr.ndim == 2 else int(arr.shape[2]), "pixels": arr})
    held_names = [n for n in HELDOUT_PREFERENCE if any(p["function"] == n for p in photos)][:HELDOUT_COUNT]
    held = [p for p in photos if p["function"] in held_names]
    train = [p for p in photos if p["function"] not in held_names]
    if len(held) < HELDOUT_COUNT or not train:
        raise RuntimeError(f"scikit-image {skimage.__version__} provided too few photographs for the demo "
                           f"({len(photos)} usable; unavailable: {', '.join(unavailable) or 'none'})")

    # Files listed by an earlier build but not by this one would otherwise linger.
    if old:
        keep = {("train", p["file"]) for p in train} | {("heldout", p["file"]) for p in held}
        for split in ("train", "heldout"):
            for n in old.get(f"{split}_files", []):
                if (split, n) not in keep and "/" not in n and (out_dir / split / n).is_file():
                    (out_dir / split / n).unlink()
    (out_dir / "manifest.json").unlink(missing_ok=True)  # incomplete until rewritten

    for split, items in (("train", train), ("heldout", held)):
        for p in items:
            save_image(out_dir / split / p["file"], p.pop("pixels"))
    lines = [ATTRIBUTION_HEADER.format(version=skimage.__version__)]
    for split, items in (("train", train), ("heldout", held)):
        for p in items:
            lines.append(f"{split}/{p['file']}: skimage.data.{p['function']}() "
                         f"({p['width']}x{p['height']}, {'grayscale' if p['channels'] == 1 else 'colour'})\n"
                         f"  Licence: {p['licence']}\n  Source: {p['source']}\n\n")
    atomic_write(out_dir / "ATTRIBUTION.txt", "".join(lines))

    manifest = {
        "version": MANIFEST_VERSION, "source": f"scikit-image {skimage.__version__}",
        "train_count": len(train), "heldout_count": len(held),
        "train_files": [p["file"] for p in train], "heldout_files": [p["file"] for p in held],
        "unavailable": unavailable, "images": {f"{s}/{p['file']}": {k: v for k, v in p.items() if k != "file"}
                                               for s, items in (("train", train), ("heldout", held)) for p in items},
    }
    # Written last, and atomically: its presence marks a complete build.
    atomic_write(out_dir / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    log(f"demo image set: {len(train)} train, {len(held)} held-out photographs in {out_dir}")
    return manifest
