"""`vqkit eval`: deterministic numbers with provenance, rFID and LPIPS from local weight files,
the audio metrics on vocoded speech, and a report page that loads in a browser."""
from __future__ import annotations

import json
import re

import pytest
import torch

from browser import chromium_path, dump_dom, served
from conftest import TINY
from vqkit.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mel_run(tmp_path_factory, demo_dir):
    run = tmp_path_factory.mktemp("mel-run")
    assert main(["train", "--preset", "mqgan-refiner", "--data", str(demo_dir / "train"), "--out", str(run),
                 "--no-progress", *TINY, "train.steps=4", "train.save_every=4", "train.eval_every=4",
                 "loss.gan_start_step=2"]) == 0
    return run


@pytest.fixture(scope="module")
def mel_reports(mel_run, demo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    for name in ("a", "b"):
        assert main(["eval", str(mel_run), "--data", str(demo_dir / "heldout"), "--out", str(out / name),
                     "--examples", "2", "--max-vocoded", "2", "--no-progress"]) == 0
    return [json.loads((out / n / "metrics.json").read_text()) for n in ("a", "b")], out


def test_mel_eval_is_deterministic_and_records_provenance(mel_reports, mel_run):
    (a, b), _ = mel_reports
    assert a["metrics"] == b["metrics"]
    assert a["data"]["file_list_sha256"] == b["data"]["file_list_sha256"] and a["data"]["files"] == 16
    assert a["tokenizer_id"] and a["checkpoint"].endswith("step_00000004")
    assert {"torch", "pesq", "pystoi", "librosa", "vqkit"} <= set(a["metric_versions"])
    m = a["metrics"]
    assert m["vocoded_clips"] == 2
    # A 4-step model reconstructs badly: intelligibility and quality are well below a clean copy.
    assert 1.0 <= m["vocoded_pesq_wb"] < 3.0 and 0 < m["vocoded_stoi"] < 0.95 and m["vocoded_mr_stft"] > 0.5


def test_mel_report_page_loads_in_chromium(mel_reports, tmp_path):
    if chromium_path() is None:
        pytest.skip("Chromium is not installed (apt-get install chromium, or make system-deps as root)")
    _, out = mel_reports
    with served(out / "a") as url:
        html = dump_dom(url, tmp_path)
    body = re.search(r"<body([^>]*)>", html).group(1)
    n_img = len(re.findall(r"<img ", html))
    assert n_img == 4   # 2 spectrogram panels, usage histogram, training curves
    # per clip: the source, the vocoded original, the reconstruction and the decoder draft
    assert f'data-loaded="{n_img}/{n_img}"' in body and 'data-audio="8"' in body, body


def _inception_file(path):
    from vqkit.evaluation.fid import load_inception

    torch.save(load_inception(None, allow_random=True).state_dict(), path)
    return path


def _lpips_files(tmp_path):
    from vqkit.losses.perceptual import LPIPS, load_vgg16

    vgg = load_vgg16(None, allow_random=True, classifier=False)
    torch.save(vgg.state_dict(), tmp_path / "vgg16.pth")
    heads = {k: v.abs() + 0.1 for k, v in LPIPS(vgg).state_dict().items() if k.startswith("lin")}
    torch.save(heads, tmp_path / "lpips_vgg.pth")
    return tmp_path / "vgg16.pth", tmp_path / "lpips_vgg.pth"


def test_image_eval_with_rfid_and_lpips(tmp_path):
    pytest.importorskip("skimage")
    data = tmp_path / "demo"
    assert main(["data", "demo-images", str(data)]) == 0
    run = tmp_path / "run"
    assert main(["train", "--preset", "vqgan", "--data", str(data / "train"), "--out", str(run), "--no-progress",
                 "model.backbone.channels=[16,32]", "discriminator.patch_channels=[16,16]", "data.image_size=32",
                 "train.batch_size=4", "train.steps=2", "train.save_every=2", "loss.gan=0"]) == 0
    vgg, heads = _lpips_files(tmp_path)
    inception = _inception_file(tmp_path / "inception.pth")
    args = ["eval", str(run), "--data", str(data / "heldout"), "--crop", "64", "--no-progress",
            "--vgg-weights", str(vgg), "--lpips-weights", str(heads), "--inception-weights", str(inception)]
    assert main(args + ["--out", str(tmp_path / "r1")]) == 0
    # again without rFID (its 2048 x 2048 matrix square root is most of an eval's time here): every
    # other number the same
    assert main(args[:-2] + ["--out", str(tmp_path / "r2")]) == 0
    r1, r2 = (json.loads((tmp_path / r / "metrics.json").read_text()) for r in ("r1", "r2"))
    assert {k: v for k, v in r1["metrics"].items() if k != "rfid"} == r2["metrics"]
    assert r2["settings"]["lpips"] and not r2["settings"]["rfid"]
    m = r1["metrics"]
    assert m["rfid"] > 0 and m["lpips"] > 0 and m["images"] == 3
    assert r1["settings"]["rfid"] and r1["settings"]["lpips"]
    assert main(["eval", str(run), "--data", str(data / "heldout"), "--out", str(tmp_path / "r3"),
                 "--inception-weights", str(tmp_path / "missing.pth")]) == 2
