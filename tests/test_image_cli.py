"""The same command line for images: data, train, info, encode, decode, reconstruct, eval."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from vqkit.cli import main

pytestmark = pytest.mark.slow
TINY = ["model.backbone.channels=[16,32]", "model.backbone.spatial_norm_blocks=2", "discriminator.patch_channels=[16,16]",
        "data.image_size=32", "train.batch_size=4", "train.steps=4", "train.save_every=2", "train.eval_every=4", "loss.gan_start_step=2"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    pytest.importorskip("skimage")
    out = tmp_path_factory.mktemp("demo-images")
    assert main(["data", "demo-images", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory, demo):
    run = tmp_path_factory.mktemp("img-run")
    assert main(["train", "--preset", "movq", "--data", str(demo / "train"), "--valid-data", str(demo / "heldout"),
                 "--out", str(run), "--no-progress", *TINY]) == 0
    return run


def test_train_writes_samples_and_checkpoints(run):
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_00000004"
    assert (run / "samples" / "step_00000004" / "reconstructions.png").is_file()
    held = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"heldout"' in x]
    assert held and held[-1]["token_grid"][-1] == 4 and 0 < held[-1]["draft_ssim"] <= 1


def test_info_encode_decode_reconstruct(run, demo, tmp_path, capsys):
    assert main(["info", str(run)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["modality"] == "image" and info["token_grid_256px"] == [64, 64, 4]
    photo = sorted((demo / "heldout").glob("*.png"))[0]
    w, h = Image.open(photo).size
    assert main(["encode", str(run), str(photo), "-o", str(tmp_path / "t.npy")]) == 0
    tokens = np.load(tmp_path / "t.npy")
    assert tokens.shape == (-(-h // 4), -(-w // 4), 4)
    assert main(["decode", str(run), str(tmp_path / "t.npy"), "-o", str(tmp_path / "d.png")]) == 0
    decoded = Image.open(tmp_path / "d.png")
    assert decoded.size == (tokens.shape[1] * 4, tokens.shape[0] * 4) and decoded.mode == "RGB"
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(photo, folder / photo.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    capsys.readouterr()
    assert main(["reconstruct", str(run), str(folder), "-o", str(tmp_path / "rec")]) == 0
    assert "1 of 2 files done, 1 skipped" in capsys.readouterr().out
    assert Image.open(tmp_path / "rec" / photo.name).size == (w, h)   # cropped back to the input size


def test_eval_report(run, demo, tmp_path):
    assert main(["eval", str(run), "--data", str(demo / "heldout"), "--out", str(tmp_path / "rep")]) == 0
    record = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    m = record["metrics"]
    assert m["images"] == 3 and 0 < m["draft_ssim"] <= 1 and m["draft_psnr"] > 0
    assert m["bits_per_image"] == pytest.approx(m["tokens_per_image"] * 10)   # 1024 codes = 10 bits
    assert (tmp_path / "rep" / "reconstructions.png").is_file()
    assert "example00.png" in (tmp_path / "rep" / "index.html").read_text()


def test_decode_refuses_mel_tokens_for_an_image_tokenizer(run, tmp_path, capsys):
    np.save(tmp_path / "m.npy", np.zeros(50, dtype=np.int16))
    (tmp_path / "m.json").write_text(json.dumps({"format": "vqkit-tokens-v1", "tokenizer_id": "0" * 16}))
    assert main(["decode", str(run), str(tmp_path / "m.npy"), "-o", str(tmp_path / "m.png")]) == 1
    assert "not by this one" in capsys.readouterr().out
