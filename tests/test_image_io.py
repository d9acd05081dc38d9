"""vqkit.frontends.image: decoding every kind of image file, and failing clearly on broken ones."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from vqkit.frontends.image import (IMAGE_EXTENSIONS, ImageError, find_image_files, load_image,
                                   save_grid, save_image, to_uint8)


def noise_rgb(h=24, w=32, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def opened_mode(path) -> str:
    with Image.open(path) as im:
        return im.mode


def read_pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def png_header_only(path, w, h):
    """A valid PNG signature + IHDR claiming w x h RGB pixels, and no pixel data."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))
    return path


def test_find_image_files_recursive_sorted_case_insensitive(tmp_path):
    (tmp_path / "b").mkdir()
    for name in ("b/z.PNG", "a.JPG", "c.webp", "notes.txt", "b/x.TiFf"):
        (tmp_path / name).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in find_image_files(tmp_path)]
    assert found == ["a.JPG", "b/x.TiFf", "b/z.PNG", "c.webp"]
    assert all(e == e.lower() and e.startswith(".") for e in IMAGE_EXTENSIONS)
    with pytest.raises(ImageError) as e:
        find_image_files(tmp_path / "missing")
    assert e.value.reason == "not-a-directory"


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".webp", ".jpg"])
def test_rgb_formats(tmp_path, ext):
    arr = noise_rgb() if ext != ".jpg" else np.full((24, 32, 3), (200, 40, 90), np.uint8)
    p = tmp_path / f"img{ext}"
    Image.fromarray(arr).save(p, **({"lossless": True} if ext == ".webp" else {}))
    x = load_image(p)
    assert x.dtype == torch.float32 and x.shape == (3, 24, 32)
    assert x.min() >= -1 and x.max() <= 1
    if ext == ".jpg":  # lossy: a flat colour survives to within a few levels
        assert np.abs(to_uint8(x).astype(int) - arr).max() <= 4
    else:
        assert np.array_equal(to_uint8(x), arr)


def test_gif_first_frame_and_channels(tmp_path):
    p = tmp_path / "a.gif"
    Image.new("L", (10, 12), 77).convert("P").save(p)
    assert load_image(p).shape == (3, 12, 10)
    g = load_image(p, channels=1)
    assert g.shape == (1, 12, 10) and to_uint8(g)[0, 0, 0] == 77


def test_rgba_and_la_composite_over_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255                    # red ...
    rgba[:2, :, 3] = 255                  # ... opaque on top, transparent below
    rgba[2:, :, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = to_uint8(load_image(tmp_path / "a.png"))
    assert (out[0, 0] == (255, 0, 0)).all() and (out[3, 0] == (255, 255, 255)).all()
    la = Image.fromarray(np.stack([np.zeros((4, 4), np.uint8), np.full((4, 4), 128, np.uint8)], -1), "LA")
    la.save(tmp_path / "la.png")
    g = to_uint8(load_image(tmp_path / "la.png", channels=1))
    assert g.shape == (4, 4, 1) and abs(int(g[0, 0, 0]) - 127) <= 1   # black at half alpha over white


def test_palette_with_transparency(tmp_path):
    im = Image.new("P", (6, 6), 0)
    im.putpalette([0, 0, 255] + [0, 255, 0] + [0] * 762)
    im.paste(1, (0, 0, 3, 6))             # left half green, right half index 0 = transparent
    im.info["transparency"] = 0
    im.save(tmp_path / "p.png", transparency=0)
    assert opened_mode(tmp_path / "p.png") == "P"
    out = to_uint8(load_image(tmp_path / "p.png"))
    assert (out[0, 0] == (0, 255, 0)).all() and (out[0, 5] == (255, 255, 255)).all()


def test_grayscale_and_one_bit(tmp_path):
    Image.fromarray(np.array([[0, 128, 255]], np.uint8), "L").save(tmp_path / "g.png")
    x = load_image(tmp_path / "g.png")
    assert x.shape == (3, 1, 3) and torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])
    assert to_uint8(x)[0, :, 0].tolist() == [0, 128, 255]
    Image.fromarray(np.array([[True, False]])).convert("1").save(tmp_path / "b.png")
    assert opened_mode(tmp_path / "b.png") == "1"
    assert load_image(tmp_path / "b.png", channels=1).flatten().tolist() == [1.0, -1.0]


def test_sixteen_bit_png_scaled_by_65535(tmp_path):
    Image.fromarray(np.array([[65535, 32768, 0]], np.uint16)).save(tmp_path / "g16.png")
    assert opened_mode(tmp_path / "g16.png").startswith("I;16")
    x = load_image(tmp_path / "g16.png", channels=1)[0, 0]
    assert x[0] == pytest.approx(1.0) and abs(float(x[1])) < 1e-4 and x[2] == pytest.approx(-1.0)


def test_int32_and_float_tiffs(tmp_path):
    Image.fromarray(np.array([[0, 65535]], np.int32)).save(tmp_path / "i.tif")
    assert opened_mode(tmp_path / "i.tif") == "I"
    assert load_image(tmp_path / "i.tif", channels=1).flatten().tolist() == [-1.0, 1.0]
    Image.fromarray(np.array([[0.0, 0.25, 1.0]], np.float32)).save(tmp_path / "f.tif")
    assert load_image(tmp_path / "f.tif", channels=1).flatten().tolist() == [-1.0, -0.5, 1.0]
    Image.fromarray(np.array([[0.0, np.nan]], np.float32)).save(tmp_path / "nan.tif")
    with pytest.raises(ImageError) as e:
        load_image(tmp_path / "nan.tif")
    assert e.value.reason == "non-finite"


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg")   # pure red in CMYK
    out = to_uint8(load_image(tmp_path / "c.jpg"))
    assert out.shape == (8, 8, 3)
    assert out[4, 4, 0] > 240 and out[4, 4, 1] < 15 and out[4, 4, 2] < 15


def test_exif_orientation_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255                     # left half white
    exif = Image.Exif()
    exif[0x0112] = 6                      # "rotate 90 CW to display"
    Image.fromarray(arr).save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    x = load_image(tmp_path / "r.jpg")
    assert x.shape == (3, 40, 20)         # H and W swapped
    out = to_uint8(x)
    assert out[5, 10].mean() > 200 and out[35, 10].mean() < 50   # former left half is now on top


def test_truncated_zero_byte_and_garbage_are_errors(tmp_path):
    Image.fromarray(noise_rgb(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "junk.jpg").write_bytes(b"this is not a jpeg at all" * 20)
    for name, reason in (("cut.png", "unreadable"), ("zero.png", "empty"), ("junk.jpg", "unreadable")):
        with pytest.raises(ImageError) as e:
            load_image(tmp_path / name)
        assert e.value.reason == reason and name in str(e.value)
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "absent.png")


def test_truncated_jpeg_is_an_error(tmp_path):
    Image.fromarray(noise_rgb(64, 64)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated"):
        load_image(tmp_path / "cut.jpg")


def test_one_pixel_image_loads(tmp_path):
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tmp_path / "dot.png")
    x = load_image(tmp_path / "dot.png")
    assert x.shape == (3, 1, 1) and to_uint8(x)[0, 0].tolist() == [10, 20, 30]


@pytest.mark.parametrize("side", [10_000, 20_000])   # Pillow warns above MAX_IMAGE_PIXELS, errors above 2x
def test_decompression_bomb_is_an_error(tmp_path, side):
    p = png_header_only(tmp_path / "bomb.png", side, side)
    with pytest.raises(ImageError) as e:
        load_image(p)
    assert e.value.reason == "too large" and "bomb.png" in str(e.value)


def test_save_image_round_trip_is_exact(tmp_path):
    arr = noise_rgb(17, 23, seed=3)
    Image.fromarray(arr).save(tmp_path / "src.png")
    x = load_image(tmp_path / "src.png")
    assert np.array_equal(to_uint8(x), arr)
    save_image(tmp_path / "out" / "copy.png", x)
    assert np.array_equal(read_pixels(tmp_path / "out" / "copy.png"), arr)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["copy.png"]   # no temp file left
    gray = torch.linspace(-1, 1, 12).view(1, 3, 4)
    save_image(tmp_path / "g.png", gray)
    assert opened_mode(tmp_path / "g.png") == "L"
    assert np.array_equal(to_uint8(load_image(tmp_path / "g.png", channels=1)), to_uint8(gray))


def test_to_uint8_rounds_clips_and_refuses_nan():
    x = torch.tensor([[[-2.0, -1.0, 0.0, 1.0, 3.0]]])
    assert to_uint8(x)[0, :, 0].tolist() == [0, 0, 128, 255, 255]
    with pytest.raises(ImageError):
        to_uint8(torch.tensor([[[float("nan")]]]))


def test_save_grid_shape(tmp_path):
    row1 = [torch.zeros(3, 16, 16) for _ in range(4)]
    row2 = [torch.ones(1, 16, 16) * -1 for _ in range(4)]   # grayscale mixed in: repeated to RGB
    save_grid(tmp_path / "grid.png", [row1, row2], pad=2)
    out = read_pixels(tmp_path / "grid.png")
    assert out.shape == (2 * 16 + 3 * 2, 4 * 16 + 5 * 2, 3)
    assert (out[0] == 255).all() and (out[2, 2] == 128).all() and (out[20, 2] == 0).all()
