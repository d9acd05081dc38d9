"""The report page: real files (PNGs, WAVs, a usage histogram, training curves) rendered into index.html,
then loaded by headless Chromium when it is installed (images decoded, audio players present)."""
from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pytest

from browser import chromium_path, dump_dom, screenshot, served
from vqkit.evaluation.html_report import format_value, render_report
from vqkit.evaluation.report_plots import curve_keys, training_curves, usage_histogram

METRICS = {"draft_mse": 0.115369, "refined_mse": 0.0123456, "draft_psnr": 15.61325, "codebook_usage": 0.028259,
           "perplexity": 83.212669, "codes_used": 463.0, "codebook_size": 16384.0, "token_grid": [32, 32],
           "bits_per_second": 1234.5678}


def _metrics_log() -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for step in range(25, 501, 25):
        decay = np.exp(-step / 200)
        out.append({"step": step, "split": "train", "time": 1.7e9 + step, "g": 1 + decay, "d": 1.9 + 0.05 * rng.random(),
                    "draft_mse": 0.1 + decay, "refined_mse": 0.08 + decay, "perceptual": 0.5 * decay,
                    "g_adv": -0.2 + 0.1 * rng.random(), "usage": 0.3 + 0.2 * (1 - decay), "perplexity": 60 + step / 5,
                    "grad_norm": 2 + rng.random(), "lr": 5e-4, "steps_per_s": 3.3})
        if step % 100 == 0:
            out.append({"step": step, "split": "heldout", "time": 1.7e9 + step, "draft_mse": 0.2 + decay,
                        "refined_mse": 0.15 + decay, "codebook_usage": 0.25 + 0.2 * (1 - decay),
                        "perplexity": 50 + step / 6, "codebook_size": 512.0, "token_grid": [32, 32]})
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import soundfile as sf

    out = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    examples = []
    for i in range(2):
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.imshow(rng.normal(size=(40, 120)), origin="lower", aspect="auto", cmap="magma")
        fig.savefig(out / f"clip{i:02d}.png", dpi=80)
        plt.close(fig)
        t = np.arange(int(0.5 * 22050)) / 22050
        sf.write(out / f"clip{i:02d}_original.wav", (0.3 * np.sin(2 * np.pi * 220 * (i + 1) * t)).astype(np.float32), 22050)
        examples.append({"title": f"speaker<{i}>/clip & take {i}.wav",
                         "images": [{"src": f"clip{i:02d}.png", "caption": "original / draft / refined"}],
                         "audio": [{"src": f"clip{i:02d}_original.wav", "label": "original"}]})
    counts = np.bincount(rng.zipf(1.5, size=20000) % 400, minlength=512)
    usage_histogram(counts, out / "usage.png")
    assert training_curves(_metrics_log(), out / "curves.png") == out / "curves.png"
    record = {"metrics": METRICS, "checkpoint": "runs/demo/checkpoints/step_00001000.pt", "tokenizer_id": "abc123def",
              "data": {"root": "data/demo-speech/heldout", "files": 12, "skipped": 0, "file_list_sha256": "0f1e2d3c4b5a6978"},
              "settings": {"modality": "mel", "quantizer": {"kind": "fsq", "levels": [8, 5, 5, 5]}},
              "metric_versions": {"psnr": "vqkit-1"}, "vocoder": "hifigan-v1", "created": "2026-01-02T03:04:05",
              "units": "mel errors in natural-log mel units"}
    page = render_report(out, record, examples, "usage.png", "curves.png")
    return out, page, examples


def test_page_references_every_file_and_shows_metrics(report):
    out, page, examples = report
    text = page.read_text()
    files = sorted(p.name for p in out.iterdir() if p.name != "index.html")
    assert files == ["clip00.png", "clip00_original.wav", "clip01.png", "clip01_original.wav", "curves.png", "usage.png"]
    refs = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert sorted(refs) == files
    for ref in refs:
        assert (out / ref).is_file()
    assert text.count("<img ") == 4 and text.count("<audio controls") == 2
    for v in ("0.1154", "0.01235", "15.61", "0.02826", "83.21", "463", "16,384", "[32, 32]", "1235"):
        assert f">{v}<" in text, v
    for v in ("runs/demo/checkpoints/step_00001000.pt", "abc123def", "data/demo-speech/heldout", ">12<",
              "0f1e2d3c4b5a6978", "metric versions", "vqkit-1", "hifigan-v1", "fsq"):
        assert v in text, v
    # Escaped text, and nothing from the network.
    assert "speaker&lt;0&gt;/clip &amp; take 0.wav" in text and "<0>" not in text
    assert "http://" not in text and "https://" not in text
    assert not re.search(r'(?:src|href)="[a-z]+:|(?:src|href)="/|url\(', text)
    assert "//" not in text


def test_format_value():
    assert format_value(1.5e-05) == "1.500e-05" and format_value(123456.78) == "123,456.8" and format_value(3.0) == "3" and format_value(7) == "7"
    assert format_value([32, 32]) == "[32, 32]" and format_value(None) == "—" and format_value(float("nan")) == "nan"


def test_plots(tmp_path):
    records = _metrics_log()
    keys = curve_keys(records)
    assert keys == ["g", "d", "draft_mse", "refined_mse", "perceptual", "g_adv", "usage", "perplexity"]
    assert "codebook_size" not in curve_keys(records, max_panels=20) and "lr" not in curve_keys(records, 20)
    assert training_curves([], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
    assert training_curves(records, tmp_path / "c.png", keys=["grad_norm"]).stat().st_size > 5000
    assert usage_histogram(np.zeros(16), tmp_path / "zero.png").exists()
    assert usage_histogram(np.ones(16384), tmp_path / "flat.png").stat().st_size > 5000


def test_page_loads_in_headless_chromium(report, tmp_path):
    if chromium_path() is None:
        pytest.skip("Chromium is not installed (apt-get install chromium, or make system-deps as root)")
    out, page, examples = report
    with served(out) as url:
        html = dump_dom(url, tmp_path)
        for name in ("clip00.png", "clip01.png", "usage.png", "curves.png"):
            assert re.search(rf'<img [^>]*src="{re.escape(name)}"', html), name
        for name in ("clip00_original.wav", "clip01_original.wav"):
            assert re.search(rf'<audio [^>]*src="{re.escape(name)}"', html), name
        body = re.search(r"<body([^>]*)>", html).group(1)
        assert 'data-loaded="4/4"' in body, body      # every image decoded
        assert 'data-audio="2"' in body, body
        assert 'data-audio-ready="2/2"' in body, body  # both WAVs served and their metadata read
        shot = screenshot(url, tmp_path)
        assert shot.is_file() and shot.stat().st_size > 10_000
        if os.environ.get("VQKIT_KEEP_SCREENSHOT"):
            shutil.copy(shot, os.environ["VQKIT_KEEP_SCREENSHOT"])


def test_pages_inside_the_report_are_linked(tmp_path):
    (tmp_path / "prior-samples").mkdir()
    (tmp_path / "prior-samples" / "index.html").write_text("<html></html>")
    text = render_report(tmp_path, {"metrics": {"nll": 1.0}}, [], pages=["prior-samples"]).read_text()
    assert '<a href="prior-samples/index.html">prior-samples</a>' in text
    assert "More pages" not in render_report(tmp_path, {"metrics": {}}, []).read_text()
