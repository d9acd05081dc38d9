"""vqkit.data.demo: the demo speech corpus from Asterisk prompts or espeak-ng, and its failure modes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from vqkit.config import MelConfig
from vqkit.data import demo
from vqkit.data.audio_corpus import load_mel_corpus
from vqkit.data.demo import make_demo_speech
from vqkit.frontends.mel import MelFrontend

HAVE_ESPEAK = shutil.which("espeak-ng") is not None
HAVE_ASTERISK = demo.asterisk_dir() is not None
needs_espeak = pytest.mark.skipif(not HAVE_ESPEAK, reason="espeak-ng not installed (apt-get install espeak-ng)")
needs_asterisk = pytest.mark.skipif(not HAVE_ASTERISK,
                                    reason="asterisk-core-sounds-en-g722 not installed (or PyAV missing)")


def check_layout(out: Path, manifest: dict, limit: int) -> None:
    """What every demo corpus must satisfy, whatever its source."""
    assert json.loads((out / "manifest.json").read_text()) == manifest
    train = sorted(p.name for p in (out / "train").glob("*.wav"))
    held = sorted(p.name for p in (out / "heldout").glob("*.wav"))
    assert train == sorted(manifest["train_files"]) and held == sorted(manifest["heldout_files"])
    assert manifest["heldout_count"] == len(held) == 16 and manifest["train_count"] == len(train) == limit
    assert not set(train) & set(held)
    rate = manifest["sample_rate"]
    total = {"train": 0.0, "heldout": 0.0}
    for split, files in (("train", train), ("heldout", held)):
        for name in files:
            info = sf.info(out / split / name)
            assert (info.subtype, info.samplerate, info.channels) == ("PCM_16", rate, 1)
            assert info.duration >= demo.MIN_SECONDS
            if split == "heldout":
                assert 2.0 <= info.duration <= 8.0
            total[split] += info.frames / rate
    assert manifest["train_seconds"] == pytest.approx(total["train"], abs=0.02)
    assert manifest["heldout_seconds"] == pytest.approx(total["heldout"], abs=0.02)
    audio, _ = sf.read(out / "heldout" / held[0], dtype="float32")
    assert np.abs(audio).max() > demo.SPEECH_PEAK  # real signal, not silence


@needs_espeak
def test_espeak_corpus_layout_and_idempotence(tmp_path):
    out = tmp_path / "demo"
    lines: list[str] = []
    manifest = make_demo_speech(out, log=lines.append, source="espeak", limit=12)
    check_layout(out, manifest, limit=12)
    assert manifest["source_kind"] == "espeak" and manifest["sample_rate"] == 22050
    assert manifest["sentences"] >= 60 and len(set(demo.SENTENCES)) == len(demo.SENTENCES)
    text = (out / "ATTRIBUTION.txt").read_text()
    assert "espeak-ng" in text and "GPL" in text
    # Held-out clips cover several voices (the voice leads the file name).
    assert len({n.split("__")[0] for n in manifest["heldout_files"]}) >= 4

    # Second call: nothing rebuilt, files untouched.
    stamp = (out / "train" / manifest["train_files"][0]).stat().st_mtime_ns
    lines.clear()
    again = make_demo_speech(out, log=lines.append, source="espeak", limit=12)
    assert again == manifest and any("already" in l for l in lines)
    assert (out / "train" / manifest["train_files"][0]).stat().st_mtime_ns == stamp

    # A missing file makes it incomplete: rebuilt, same content.
    (out / "heldout" / manifest["heldout_files"][3]).unlink()
    rebuilt = make_demo_speech(out, log=lambda s: None, source="espeak", limit=12)
    assert rebuilt["heldout_files"] == manifest["heldout_files"] and (out / "heldout" /
                                                                      manifest["heldout_files"][3]).is_file()

    # A smaller limit: stale train files from the earlier build are removed; held-out set unchanged.
    smaller = make_demo_speech(out, log=lambda s: None, source="espeak", limit=5)
    check_layout(out, smaller, limit=5)
    assert smaller["heldout_files"] == manifest["heldout_files"]

    # The corpus feeds straight into the mel loader, with nothing skipped.
    corpus = load_mel_corpus(out / "heldout", MelFrontend(MelConfig()), log=lambda s: None)
    assert len(corpus) == 16 and corpus.skipped == {}
    assert corpus.total_seconds == pytest.approx(smaller["heldout_seconds"], abs=0.05)


@needs_asterisk
def test_asterisk_corpus(tmp_path):
    out = tmp_path / "demo"
    manifest = make_demo_speech(out, log=lambda s: None, source="asterisk", limit=20)
    check_layout(out, manifest, limit=20)
    assert manifest["source_kind"] == "asterisk" and manifest["sample_rate"] == 16000
    assert manifest["licence"] == "CC-BY-SA-3.0"
    text = (out / "ATTRIBUTION.txt").read_text()
    for needle in ("Allison Smith", "Digium", "CC-BY-SA-3.0", "asterisk-core-sounds-en-g722",
                   "creativecommons.org/licenses/by-sa/3.0"):
        assert needle in text
    # Every output maps back to its source prompt ('/' -> '__'), and silence/ prompts are left out.
    src = Path(manifest["origin"])
    for name in manifest["train_files"] + manifest["heldout_files"]:
        assert (src / name.replace("__", "/")).with_suffix(".g722").is_file()
        assert not name.startswith("silence__")
    assert manifest["skipped"]["no speech"] >= 1
    assert make_demo_speech(out, log=lambda s: None, source="asterisk", limit=20) == manifest
    # "auto" prefers the real recordings and reuses this build.
    assert make_demo_speech(out, log=lambda s: None, limit=20)["source_kind"] == "asterisk"
    # The held-out set is fixed: it does not depend on how many train clips are kept.
    other = make_demo_speech(tmp_path / "other", log=lambda s: None, source="asterisk", limit=3)
    assert other["heldout_files"] == manifest["heldout_files"] and other["train_count"] == 3


# ---- unavailable sources -------------------------------------------------------------------------

@pytest.fixture
def no_asterisk(monkeypatch, tmp_path):
    monkeypatch.setattr(demo, "ASTERISK_DIRS", (tmp_path / "no-asterisk-here",))


@pytest.fixture
def no_espeak(monkeypatch):
    monkeypatch.setattr(demo, "ESPEAK_BINARY", "no-such-espeak-binary-for-vqkit-tests")


def test_no_source_at_all_explains_what_to_install(tmp_path, no_asterisk, no_espeak):
    with pytest.raises(RuntimeError) as info:
        make_demo_speech(tmp_path / "demo", log=lambda s: None)
    msg = str(info.value)
    assert "apt-get install asterisk-core-sounds-en-g722" in msg and "espeak-ng" in msg
    assert "vqkit train --data" in msg
    assert not (tmp_path / "demo" / "manifest.json").exists()


def test_forced_missing_source_is_an_error(tmp_path, no_asterisk, no_espeak):
    with pytest.raises(RuntimeError, match="asterisk"):
        make_demo_speech(tmp_path, log=lambda s: None, source="asterisk")
    with pytest.raises(RuntimeError, match="espeak"):
        make_demo_speech(tmp_path, log=lambda s: None, source="espeak")
    with pytest.raises(ValueError, match="source"):
        make_demo_speech(tmp_path, log=lambda s: None, source="festival")


@needs_espeak
def test_auto_falls_back_to_espeak(tmp_path, no_asterisk):
    manifest = make_demo_speech(tmp_path, log=lambda s: None, limit=4)
    assert manifest["source_kind"] == "espeak" and manifest["train_count"] == 4
