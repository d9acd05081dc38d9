"""vqkit.data.feature_cache: log-mels computed once on real speech, reused without decoding, rebuilt
when an input or a mel setting changes; crops and normalization identical to the in-memory path."""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from conftest import TINY
from vqkit.config import MelConfig
from vqkit.data import audio_corpus
from vqkit.data.audio_corpus import load_mel_corpus
from vqkit.data.crops import MelCropBatches, normalization_stats
from vqkit.data.feature_cache import FLOAT16_MAX_ERROR, AsTensors, cached_mel_corpus
from vqkit.data.shards import ShardedArrays
from vqkit.frontends.mel import MelFrontend

quiet = lambda m: None  # noqa: E731


@pytest.fixture
def folder(tmp_path, demo_dir):
    """Five real speech clips in two folders, one broken file and one too short."""
    root = tmp_path / "audio"
    (root / "sub").mkdir(parents=True)
    wavs = sorted((demo_dir / "train").glob("*.wav"))[:5]
    for i, w in enumerate(wavs):
        shutil.copy(w, (root / "sub" if i % 2 else root) / w.name)
    (root / "broken.wav").write_bytes(b"RIFF\x00\x00not really a wav")
    short = np.zeros(2000, np.float32)
    short[::7] = 0.3
    import soundfile as sf

    sf.write(root / "short.wav", short, 22050)
    return root


@pytest.fixture(scope="module")
def frontend() -> MelFrontend:
    return MelFrontend(MelConfig())


class DecodeCounter:
    """Stands in for the per-file decoder: counts calls, or raises when decoding is forbidden."""

    def __init__(self, monkeypatch, forbid: bool = False):
        self.calls = 0
        real = audio_corpus.load_one_clip

        def counted(*args, **kwargs):
            if forbid:
                raise AssertionError("audio was decoded although the cache is valid")
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(audio_corpus, "load_one_clip", counted)
        if forbid:
            def no_audio(*args, **kwargs):
                raise AssertionError("audio was decoded although the cache is valid")
            monkeypatch.setattr(audio_corpus, "load_audio", no_audio)


def store_dirs(cache) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if not p.name.startswith("."))


@pytest.mark.usefixtures("single_thread")
def test_first_build_equals_the_in_memory_mels(folder, frontend, tmp_path):
    ref = load_mel_corpus(folder, frontend, log=quiet)
    logged: list[str] = []
    cached = cached_mel_corpus(folder, frontend, tmp_path / "cache", log=logged.append)
    assert not cached.reused and isinstance(cached.mels, ShardedArrays)
    assert cached.relative_paths() == ref.relative_paths() and len(cached) == 5
    assert cached.skipped == ref.skipped == {"unreadable": 1, "too short": 1}
    assert cached.summary() == ref.summary()
    for m, clip in zip(cached.mels, ref.clips):
        assert isinstance(m, np.memmap) and m.dtype == np.float32
        np.testing.assert_array_equal(m, clip.mel.numpy())   # float32: exact
    assert any("broken.wav" in line for line in logged)

    half = cached_mel_corpus(folder, frontend, tmp_path / "cache", log=quiet, dtype="float16")
    assert len(store_dirs(tmp_path / "cache")) == 2 and half.mels.dtype == np.float16
    assert half.mels.nbytes * 2 == cached.mels.nbytes
    errors = np.concatenate([np.abs(np.asarray(m, np.float32) - c.mel.numpy()).ravel()
                             for m, c in zip(half.mels, ref.clips)])
    assert errors.max() <= FLOAT16_MAX_ERROR and errors.mean() < 2e-3


@pytest.mark.usefixtures("single_thread")
def test_second_call_decodes_nothing_and_reports_the_skips_again(folder, frontend, tmp_path, monkeypatch):
    first = cached_mel_corpus(folder, frontend, tmp_path / "cache", log=quiet)
    DecodeCounter(monkeypatch, forbid=True)
    logged: list[str] = []
    again = cached_mel_corpus(folder, frontend, tmp_path / "cache", log=logged.append)
    assert again.reused and again.skipped == {"unreadable": 1, "too short": 1}
    assert "skipped 2 (1 too short, 1 unreadable)" in logged[-1] and "reused" in logged[-1]
    assert again.relative_paths() == first.relative_paths()
    for a, b in zip(again.mels, first.mels):
        np.testing.assert_array_equal(a, b)


@pytest.mark.usefixtures("single_thread")
def test_a_changed_file_or_mel_setting_rebuilds(folder, frontend, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cached_mel_corpus(folder, frontend, cache, log=quiet)
    counter = DecodeCounter(monkeypatch)
    cached_mel_corpus(folder, frontend, cache, log=quiet)
    assert counter.calls == 0 and len(store_dirs(cache)) == 1

    wav = sorted(folder.glob("*.wav"))[-1]
    st = wav.stat()
    os.utime(wav, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))   # touched: contents may have changed
    rebuilt = cached_mel_corpus(folder, frontend, cache, log=quiet)
    assert counter.calls == 7 and len(store_dirs(cache)) == 2 and not rebuilt.reused

    other = MelFrontend(dataclasses.replace(MelConfig(), n_mels=64))
    changed = cached_mel_corpus(folder, other, cache, log=quiet)
    assert counter.calls == 14 and len(store_dirs(cache)) == 3
    assert all(m.shape[0] == 64 for m in changed.mels)
    meta = json.loads((cache / store_dirs(cache)[0] / "index.json").read_text())["meta"]
    assert meta["kind"] == "log-mel" and meta["skipped"]

    cached_mel_corpus(folder, frontend, cache, log=quiet, min_seconds=1.0)
    assert counter.calls == 21 and len(store_dirs(cache)) == 4


def old_normalization_stats(mels):
    """The in-memory formula normalization_stats streams (torch.cat of every frame)."""
    frames = torch.cat([m.float() for m in mels], dim=-1)
    mean = frames.mean(-1)
    std = (frames - mean[:, None]).std().clamp(min=1e-3)
    return mean, torch.full_like(mean, float(std))


@pytest.mark.usefixtures("single_thread")
def test_crops_and_normalization_match_the_in_memory_path(folder, frontend, tmp_path):
    mels = [c.mel for c in load_mel_corpus(folder, frontend, log=quiet).clips]
    cached = cached_mel_corpus(folder, frontend, tmp_path / "cache", log=quiet)
    half = cached_mel_corpus(folder, frontend, tmp_path / "cache", log=quiet, dtype="float16")
    # segment 400 > the shortest clips: padding and masks are exercised too
    for segment in (32, 400):
        in_memory = MelCropBatches(mels, segment, batch_size=6, seed=3, pad_value=-11.5)
        on_disk = MelCropBatches(cached.mels, segment, batch_size=6, seed=3, pad_value=-11.5)
        from_half = MelCropBatches(half.mels, segment, batch_size=6, seed=3, pad_value=-11.5)
        for step in (0, 1, 17):
            (a, ma), (b, mb), (h, mh) = in_memory[step], on_disk[step], from_half[step]
            assert a.dtype == b.dtype == h.dtype == torch.float32
            assert torch.equal(a, b) and torch.equal(ma, mb) and torch.equal(ma, mh)
            assert (a - h).abs().max() <= FLOAT16_MAX_ERROR
    assert (mh == 0).any()   # some crops were padded
    blob = pickle.dumps(on_disk)   # as DataLoader workers started by spawn/forkserver receive it
    assert len(blob) < 10_000 and torch.equal(pickle.loads(blob)[5][0], on_disk[5][0])

    want_mean, want_std = old_normalization_stats(mels)
    for items in (mels, cached.mels):
        mean, std = normalization_stats(items)
        assert mean.dtype == std.dtype == torch.float32 and mean.shape == std.shape == (80,)
        torch.testing.assert_close(mean, want_mean, atol=1e-5, rtol=0)
        torch.testing.assert_close(std, want_std, atol=1e-5, rtol=0)
    synthetic = [torch.randn(8, n, generator=torch.Generator().manual_seed(n)) * 3 - 5 for n in (1, 40, 7, 300)]
    for got, want in zip(normalization_stats(synthetic), old_normalization_stats(synthetic)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_held_out_items_become_tensors_on_access(folder, frontend, tmp_path):
    cached = cached_mel_corpus(folder, frontend, tmp_path / "cache", log=quiet)
    valid = AsTensors(cached.mels.subset([3, 0]))
    first = valid[:1]
    assert len(valid) == 2 and len(first) == 1 and isinstance(first, AsTensors)
    assert isinstance(valid[0], torch.Tensor) and valid[0].dtype == torch.float32
    assert torch.equal(valid[1], torch.from_numpy(np.array(cached.mels[0])))


@pytest.mark.slow
@pytest.mark.usefixtures("single_thread")
def test_train_uses_the_cache_and_image_models_reject_it(folder, tmp_path, capsys):
    from vqkit.cli import main

    cache = tmp_path / "cache"
    args = ["train", "--preset", "mqgan-refiner", "--data", str(folder), "--out", str(tmp_path / "run"),
            "--no-progress", *TINY, f"data.feature_cache={cache}", "train.steps=2", "train.eval_every=2",
            "train.save_every=2", "data.valid_fraction=0.3"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "computing log-mels once" in printed and "held out" in printed
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step_00000002"
    assert len(store_dirs(cache)) == 1

    image = ["train", "--preset", "movq", "--data", str(folder), "--out", str(tmp_path / "img"),
             f"data.feature_cache={cache}", "train.steps=1"]
    assert main(image) == 2
    assert "data.feature_cache: applies to modality 'mel', not 'image'" in capsys.readouterr().err
    empty = ["train", "--preset", "mqgan-refiner", "--data", str(folder), "--out", str(tmp_path / "run2"),
             "data.feature_cache=", "train.steps=1"]
    assert main(empty) == 2
    assert "data.feature_cache: must be a directory path" in capsys.readouterr().err
