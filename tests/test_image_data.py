"""vqkit.data.image_corpus and demo_images: skipping bad files, deterministic crops, the demo set."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vqkit.data.image_corpus import STORE_DTYPE, ImageCropBatches, fit_min_side, load_image_corpus
from vqkit.frontends.image import ImageError, load_image, to_uint8


def write_noise(path, h, w, seed=0, mode="RGB"):
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).convert(mode).save(path)
    return arr


def test_corpus_skips_and_counts_by_reason(tmp_path):
    for i in range(3):
        write_noise(tmp_path / "sub" / f"ok{i}.png", 20 + i, 30, seed=i)
    write_noise(tmp_path / "gray.jpg", 16, 16, mode="L")
    write_noise(tmp_path / "tiny.png", 1, 1)
    write_noise(tmp_path / "thin.png", 4, 40)
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "junk.jpg").write_bytes(b"garbage" * 50)
    (tmp_path / "notes.txt").write_text("not an image")
    logs = []
    corpus = load_image_corpus(tmp_path, channels=3, min_size=8, log=logs.append)
    assert len(corpus) == 4
    assert corpus.skipped == {"unreadable": 2, "too small": 2}
    assert corpus.relative_paths() == ["gray.jpg", "sub/ok0.png", "sub/ok1.png", "sub/ok2.png"]
    assert all(im.dtype == STORE_DTYPE and im.shape[0] == 3 for im in corpus.images)
    assert all(-1 <= float(im.min()) and float(im.max()) <= 1 for im in corpus.images)
    assert sum("skipping" in m for m in logs) == 4 and "skipped 4" in corpus.summary()
    # float16 storage is exact for 8-bit files
    assert torch.equal(torch.from_numpy(to_uint8(corpus.images[1])), torch.from_numpy(
        to_uint8(load_image(tmp_path / "sub" / "ok0.png"))))
    gray = load_image_corpus(tmp_path, channels=1, min_size=8, log=lambda m: None, workers=1)
    assert all(im.shape[0] == 1 for im in gray.images)


def test_corpus_logs_only_first_few_per_reason(tmp_path):
    write_noise(tmp_path / "good.png", 16, 16)
    for i in range(8):
        (tmp_path / f"bad{i}.png").write_bytes(b"nope" * 10)
    logs = []
    corpus = load_image_corpus(tmp_path, log=logs.append)
    assert corpus.skipped == {"unreadable": 8}
    assert sum(m.startswith("skipping") for m in logs) == 5
    assert any("3 more skipped as 'unreadable'" in m for m in logs)


def test_no_usable_images_is_an_error(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    write_noise(tmp_path / "b.png", 2, 2)
    with pytest.raises(ImageError) as e:
        load_image_corpus(tmp_path, log=lambda m: None)
    assert str(tmp_path) in str(e.value) and "1 unreadable" in str(e.value) and "1 too small" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="no files with extensions"):
        load_image_corpus(tmp_path / "empty", log=lambda m: None)


def images_for_crops():
    g = torch.Generator().manual_seed(0)
    return [torch.rand(3, h, w, generator=g) * 2 - 1 for h, w in ((40, 50), (64, 33), (32, 32), (90, 70))]


def test_crop_batches_are_a_pure_function_of_seed_and_step():
    imgs = images_for_crops()
    a = ImageCropBatches(imgs, size=32, batch_size=6, seed=7, random_flip=True)
    x, mask = a[5]
    assert x.shape == (6, 3, 32, 32) and x.dtype == torch.float32
    assert mask.shape == (6, 1) and bool((mask == 1).all())
    assert torch.equal(a[5][0], x)                                   # same step -> identical
    assert not torch.equal(a[6][0], x)                               # different steps differ
    b = ImageCropBatches(imgs, size=32, batch_size=6, seed=7, random_flip=True)
    assert all(torch.equal(a[s][0], b[s][0]) for s in (0, 5, 1000))  # a new instance agrees
    assert not torch.equal(ImageCropBatches(imgs, 32, 6, seed=8)[5][0], x)


def find_source(crop, imgs):
    """(image index, top, left, flipped) of a crop, by exhaustive search."""
    s = crop.shape[-1]
    for i, im in enumerate(imgs):
        for flipped in (False, True):
            target = crop.flip(-1) if flipped else crop
            for top in range(im.shape[1] - s + 1):
                for left in range(im.shape[2] - s + 1):
                    if torch.equal(im[:, top: top + s, left: left + s], target):
                        return i, top, left, flipped
    return None


def test_crops_come_from_the_images_and_flips_follow_the_setting():
    imgs = images_for_crops()
    for flip in (True, False):
        ds = ImageCropBatches(imgs, size=32, batch_size=8, seed=1, random_flip=flip)
        found = [find_source(c, imgs) for step in range(3) for c in ds[step][0]]
        assert all(f is not None for f in found)                     # every crop lies within an image
        flips = [f[3] for f in found]
        assert any(flips) if flip else not any(flips)
        assert len({f[0] for f in found}) > 1                        # several images are picked


def test_small_images_are_upscaled():
    small = torch.rand(3, 12, 20) * 2 - 1
    up = fit_min_side(small, 32)
    assert up.shape == (3, 32, 53) and up.min() >= -1 and up.max() <= 1
    x, _ = ImageCropBatches([small], size=32, batch_size=3, seed=0, random_flip=False)[0]
    assert x.shape == (3, 3, 32, 32)
    big = torch.rand(3, 40, 40)
    assert fit_min_side(big, 32) is big or torch.equal(fit_min_side(big, 32), big)


@pytest.fixture(scope="module")
def demo_images(tmp_path_factory):
    pytest.importorskip("skimage")
    from vqkit.data.demo_images import make_demo_images

    out = tmp_path_factory.mktemp("demo-images")
    return out, make_demo_images(out, log=lambda m: None)


def test_make_demo_images_builds_the_set(demo_images):
    out, manifest = demo_images
    train = sorted(p.name for p in (out / "train").iterdir())
    held = sorted(p.name for p in (out / "heldout").iterdir())
    assert len(train) >= 6 and len(held) == 3
    assert sorted(manifest["train_files"]) == train and sorted(manifest["heldout_files"]) == held
    assert json.loads((out / "manifest.json").read_text()) == manifest
    attribution = (out / "ATTRIBUTION.txt").read_text()
    for split, names in (("train", train), ("heldout", held)):
        for n in names:
            assert f"{split}/{n}" in attribution
            assert manifest["images"][f"{split}/{n}"]["licence"]
    corpus = load_image_corpus(out / "train", log=lambda m: None)
    assert len(corpus) == len(train) and not corpus.skipped
    assert min(min(im.shape[1:]) for im in corpus.images) >= 64


def test_make_demo_images_is_idempotent(demo_images):
    from vqkit.data.demo_images import make_demo_images

    out, manifest = demo_images
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    logs = []
    assert make_demo_images(out, log=logs.append) == manifest
    assert "already" in logs[0]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamp


def test_demo_images_need_scikit_image(tmp_path, monkeypatch):
    import importlib.util

    from vqkit.data import demo_images as demo

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "skimage" else real(name, *a))
    with pytest.raises(RuntimeError, match="pip install scikit-image"):
        demo.make_demo_images(tmp_path / "x", log=lambda m: None)


def test_a_hash_split_records_which_files_trained_and_which_were_held_out(tmp_path):
    """What `vqkit train` records of a folder split by file-name hash: disjoint lists that add up."""
    from vqkit.cli.shared import load_train_and_valid
    from vqkit.config import load_config
    from vqkit.data.audio_corpus import split_by_hash
    from vqkit.io.run_records import file_list_hash

    names = [f"im{i:02d}.png" for i in range(12)]
    for i, name in enumerate(names):
        write_noise(tmp_path / name, 24, 24, seed=i)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    cfg = load_config("vqgan", overrides=["data.valid_fraction=0.25"])
    train, valid, record = load_train_and_valid(cfg, str(tmp_path), None)
    tr, va = split_by_hash(names, 0.25)
    assert (record["train"]["files"], record["heldout"]["files"]) == (len(train), len(valid)) == (len(tr), len(va))
    assert record["train"]["file_list_sha256"] == file_list_hash([names[i] for i in tr])
    assert record["heldout"]["file_list_sha256"] == file_list_hash([names[i] for i in va])
    assert record["train"]["skipped"] == {"unreadable": 1} and record["train"]["root"] == str(tmp_path.resolve())
    assert record["train"]["summary"].startswith("the folder: 12 images")
    assert "held out by file-name hash (data.valid_fraction 0.25)" == record["heldout"]["split"]
