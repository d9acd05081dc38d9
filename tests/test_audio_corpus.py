"""vqkit.data.audio_corpus: bad files are skipped and counted, good ones become log-mels; hash split."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from vqkit.config import MelConfig
from vqkit.data.audio_corpus import MelCorpus, load_mel_corpus, split_by_hash
from vqkit.frontends.audio_io import AudioError, load_audio
from vqkit.frontends.mel import MelFrontend


@pytest.fixture(scope="module")
def frontend() -> MelFrontend:
    return MelFrontend(MelConfig())


def tone(seconds: float, rate: int = 22050, freq: float = 330.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write(path: Path, audio: np.ndarray, rate: int = 22050, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, rate, subtype=subtype)
    return path


def make_mixed_folder(root: Path) -> None:
    write(root / "good1.wav", tone(1.0))
    write(root / "sub" / "good2.flac", tone(0.8, rate=16000), rate=16000)
    write(root / "sub" / "good3.wav", tone(2.0, rate=44100), rate=44100)
    write(root / "long.wav", tone(4.0))
    write(root / "short.wav", tone(0.1))
    write(root / "silent.wav", np.zeros(22050, np.float32))
    nan = tone(0.5)
    nan[10] = np.nan
    write(root / "nan.wav", nan, subtype="FLOAT")
    (root / "zero.wav").write_bytes(b"")
    (root / "junk.mp3").write_bytes(b"definitely not an mp3 stream\n" * 100)
    (root / "cut.wav").write_bytes((root / "good1.wav").read_bytes()[:30])
    (root / "notes.txt").write_text("ignored: not an audio extension")


def test_mixed_folder_counts_each_reason(tmp_path, frontend):
    make_mixed_folder(tmp_path)
    lines: list[str] = []
    corpus = load_mel_corpus(tmp_path, frontend, min_seconds=0.3, max_seconds=3.0, log=lines.append)
    assert isinstance(corpus, MelCorpus) and corpus.root == tmp_path
    assert [c.path.relative_to(tmp_path).as_posix() for c in corpus.clips] == \
        ["good1.wav", "sub/good2.flac", "sub/good3.wav"]
    assert corpus.skipped == {"unreadable": 3, "too long": 1, "too short": 1, "silent": 1, "non-finite": 1}
    assert [c.num_samples for c in corpus.clips] == [22050, round(0.8 * 22050), 44100]
    assert corpus.sample_rate == 22050
    assert corpus.total_seconds == pytest.approx(3.8, abs=1e-3)
    for clip in corpus.clips:
        assert clip.mel.dtype == torch.float32 and clip.mel.shape == (80, frontend.num_frames(clip.num_samples))
        assert torch.isfinite(clip.mel).all()
    # one line per skipped file, plus the summary
    assert len(lines) == 8 and all(any(name in l for l in lines) for name in ("cut.wav", "junk.mp3", "nan.wav"))
    summary = corpus.summary()
    assert summary.startswith("3 clips, 3.8 s of audio; skipped 7 (3 unreadable") and "1 too long" in summary
    assert lines[-1].endswith(summary)


def test_mel_equals_frontend_on_loaded_audio(tmp_path, frontend):
    write(tmp_path / "a.wav", tone(1.0, rate=16000, freq=500), rate=16000)
    corpus = load_mel_corpus(tmp_path, frontend, log=lambda s: None)
    with torch.no_grad():
        expected = frontend(torch.from_numpy(load_audio(tmp_path / "a.wav", 22050)))
    torch.testing.assert_close(corpus.clips[0].mel, expected)
    # 500 Hz tone: the loudest mel bin is the one whose centre is nearest 500 Hz
    import librosa
    centres = librosa.mel_frequencies(n_mels=82, fmin=0.0, fmax=8000.0, htk=False)[1:-1]
    loudest = int(corpus.clips[0].mel.mean(dim=1).argmax())
    assert abs(centres[loudest] - 500) < 150


def test_parallel_and_serial_loading_agree(tmp_path, frontend):
    for i in range(6):
        write(tmp_path / f"{i}.wav", tone(0.5 + 0.1 * i, freq=200 + 50 * i))
    serial = load_mel_corpus(tmp_path, frontend, workers=1, log=lambda s: None)
    parallel = load_mel_corpus(tmp_path, frontend, workers=2, log=lambda s: None)
    assert [c.path for c in serial.clips] == [c.path for c in parallel.clips] == sorted(tmp_path.glob("*.wav"))
    for a, b in zip(serial.clips, parallel.clips):
        torch.testing.assert_close(a.mel, b.mel)


def test_log_is_capped_per_reason(tmp_path, frontend):
    write(tmp_path / "good.wav", tone(1.0))
    for i in range(8):
        write(tmp_path / f"short{i}.wav", tone(0.05))
    lines: list[str] = []
    corpus = load_mel_corpus(tmp_path, frontend, log=lines.append)
    assert corpus.skipped == {"too short": 8} and len(corpus) == 1
    assert sum("skipping (too short)" in l for l in lines) == 5
    assert any("3 more" in l and "too short" in l for l in lines)
    assert len(lines) == 7


def test_explicit_file_list(tmp_path, frontend):
    make_mixed_folder(tmp_path)
    files = [tmp_path / "sub" / "good3.wav", tmp_path / "good1.wav", tmp_path / "junk.mp3"]
    corpus = load_mel_corpus(tmp_path, frontend, files=files, log=lambda s: None)
    assert [c.path for c in corpus.clips] == files[:2]  # the given order is kept
    assert corpus.skipped == {"unreadable": 1}
    assert corpus.relative_paths() == ["sub/good3.wav", "good1.wav"]


def test_only_bad_files_raise_naming_folder_and_reasons(tmp_path, frontend):
    (tmp_path / "zero.wav").write_bytes(b"")
    (tmp_path / "junk.mp3").write_bytes(b"nope" * 100)
    write(tmp_path / "quiet.wav", np.zeros(22050, np.float32))
    with pytest.raises(AudioError) as info:
        load_mel_corpus(tmp_path, frontend, log=lambda s: None)
    msg = str(info.value)
    assert str(tmp_path) in msg and "no usable audio" in msg and "found 3 audio files" in msg
    assert "2 unreadable" in msg and "1 silent" in msg


def test_empty_folder_and_missing_folder(tmp_path, frontend):
    (tmp_path / "readme.txt").write_text("no audio here")
    with pytest.raises(AudioError, match=f"{tmp_path}: no usable audio"):
        load_mel_corpus(tmp_path, frontend, log=lambda s: None)
    with pytest.raises(AudioError, match="does not exist"):
        load_mel_corpus(tmp_path / "nope", frontend, log=lambda s: None)


# ---- split_by_hash -------------------------------------------------------------------------------

def names(n: int, offset: int = 0) -> list[str]:
    return [f"speaker{(i + offset) % 7}/clip_{i + offset:05d}.wav" for i in range(n)]


def test_split_is_a_deterministic_partition_near_the_fraction():
    paths = names(2000)
    train, valid = split_by_hash(paths, 0.1)
    assert (train, valid) == split_by_hash(list(paths), 0.1)
    assert sorted(train + valid) == list(range(2000)) and not set(train) & set(valid)
    assert 150 < len(valid) < 250


def test_split_is_stable_when_files_are_added():
    old = names(300)
    train, valid = split_by_hash(old, 0.2)
    new = names(150, offset=300) + old[::-1]  # more files, different order
    train2, valid2 = split_by_hash(new, 0.2)
    assert {old[i] for i in valid} == {new[i] for i in valid2} & set(old)
    assert {old[i] for i in train} == {new[i] for i in train2} & set(old)


def test_split_independent_of_path_separator():
    a = split_by_hash(["a/b.wav", "c/d.wav", "e.wav", "f/g/h.wav"], 0.5)
    b = split_by_hash(["a\\b.wav", "c\\d.wav", "e.wav", "f\\g\\h.wav"], 0.5)
    assert a == b


@pytest.mark.parametrize("n", [2, 3, 5, 10])
@pytest.mark.parametrize("fraction", [0.001, 0.5, 0.999])
def test_split_never_leaves_a_side_empty(n, fraction):
    train, valid = split_by_hash(names(n), fraction)
    assert train and valid and len(train) + len(valid) == n


def test_split_edge_cases():
    assert split_by_hash(names(5), 0.0) == ([0, 1, 2, 3, 4], [])
    assert split_by_hash(names(1), 0.5)[0] + split_by_hash(names(1), 0.5)[1] == [0]
    assert split_by_hash([], 0.1) == ([], [])
    with pytest.raises(ValueError):
        split_by_hash(names(3), 1.0)
