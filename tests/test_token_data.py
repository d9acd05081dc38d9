"""Token corpora for the priors: folders of `vqkit encode` output loaded memory-mapped, one tokenizer
per corpus, broken files skipped and counted, class folders as labels, and deterministic crop batches."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pytest
import torch

from vqkit.priors.token_data import TokenBatches, TokenCorpus
from vqkit.tokens_io import TokenFileError, load_tokens, save_tokens, sidecar_path

pytestmark = pytest.mark.usefixtures("single_thread")   # see conftest.py


def fake_tokenizer(tokenizer_id: str = "tok-a", modality: str = "mel", codebook_size: int = 16,
                   channels: int = 1) -> SimpleNamespace:
    return SimpleNamespace(tokenizer_id=tokenizer_id, config=SimpleNamespace(name="fake"), modality=modality,
                           codebook_size=codebook_size, tokens_per_position=channels, tokens_per_second=21.5,
                           bits_per_token=math.log2(codebook_size), bits_per_second=21.5 * math.log2(codebook_size),
                           spatial_dims=1 if modality == "mel" else 2, frontend=object() if modality == "mel" else None,
                           token_dims=(1 if modality == "mel" else 2) + (channels > 1))


def random_tokens(shape: tuple[int, ...], k: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, k, size=shape)


def quiet_log() -> tuple[list[str], Callable[[str], None]]:
    lines: list[str] = []
    return lines, lines.append


def test_load_tokens_mmap_keeps_every_check(tmp_path):
    tok = fake_tokenizer(codebook_size=16)
    path = save_tokens(tmp_path / "a.npy", random_tokens((50,)), tok)
    arr, meta = load_tokens(path, tok, mmap=True)
    assert isinstance(arr, np.memmap) and meta["tokenizer_id"] == "tok-a"
    assert np.array_equal(arr, load_tokens(path, tok)[0])
    small = fake_tokenizer(codebook_size=8)   # same id, smaller codebook: the range check reads the memmap
    with pytest.raises(TokenFileError, match="out of range"):
        load_tokens(path, small, mmap=True)
    with pytest.raises(TokenFileError, match="made by tokenizer"):
        load_tokens(path, fake_tokenizer("tok-b"), mmap=True)
    path.write_bytes(path.read_bytes()[:-20])   # truncated
    with pytest.raises(TokenFileError, match="a.npy"):
        load_tokens(path, mmap=True)


def test_corpus_memory_maps_arrays_with_a_channel_axis(tmp_path):
    mel1, mel4, img1, img4 = (fake_tokenizer(modality=m, channels=c) for m, c in
                              [("mel", 1), ("mel", 4), ("image", 1), ("image", 4)])
    for name, tok, shape in [("mel1", mel1, (30,)), ("mel4", mel4, (30, 4)), ("img1", img1, (5, 6)),
                             ("img4", img4, (5, 6, 4))]:
        save_tokens(tmp_path / name / "x.npy", random_tokens(shape), tok)
        lines, log = quiet_log()
        corpus = TokenCorpus.from_folder(tmp_path / name, log=log)
        c = tok.tokens_per_position
        assert corpus.arrays[0].shape == shape + ((1,) if c == 1 else ())
        assert isinstance(corpus.arrays[0].base, np.memmap) or isinstance(corpus.arrays[0], np.memmap)
        assert (corpus.modality, corpus.channels, corpus.codebook_size) == (tok.modality, c, 16)
        assert corpus.tokenizer_id == "tok-a" and corpus.paths == ["x.npy"] and corpus.meta["shape"] == list(shape)
        assert any("1 " in line and "token files" in line for line in lines)


def test_mixed_tokenizers_raise_naming_the_file_and_both_ids(tmp_path):
    save_tokens(tmp_path / "a.npy", random_tokens((20,)), fake_tokenizer("tok-a"))
    save_tokens(tmp_path / "b.npy", random_tokens((20,)), fake_tokenizer("tok-b"))
    with pytest.raises(TokenFileError, match=r"b\.npy.*tok-b.*tok-a"):
        TokenCorpus.from_folder(tmp_path, log=lambda m: None)
    with pytest.raises(TokenFileError, match=r"a\.npy.*tok-a.*given tokenizer.*tok-c"):
        TokenCorpus.from_folder(tmp_path, tokenizer_id="tok-c", log=lambda m: None)
    (tmp_path / "b.npy").unlink()
    assert len(TokenCorpus.from_folder(tmp_path, tokenizer_id="tok-a", log=lambda m: None)) == 1


def test_broken_files_are_skipped_and_counted(tmp_path):
    tok = fake_tokenizer()
    for i in range(3):
        save_tokens(tmp_path / f"good{i}.npy", random_tokens((20 + i,), seed=i), tok)
    corrupt = save_tokens(tmp_path / "corrupt.npy", random_tokens((20,)), tok)
    corrupt.write_bytes(b"\x93NUMPY garbage")
    save_tokens(tmp_path / "nosidecar.npy", random_tokens((20,)), tok)
    sidecar_path(tmp_path / "nosidecar.npy").unlink()
    wrong = save_tokens(tmp_path / "wrongformat.npy", random_tokens((20,)), tok)
    meta = json.loads(sidecar_path(wrong).read_text())
    sidecar_path(wrong).write_text(json.dumps({**meta, "format": "other-v9"}))
    save_tokens(tmp_path / "wrongshape.npy", random_tokens((4, 5)), tok)   # 2-D, sidecar says mel, 1 channel
    lines, log = quiet_log()
    corpus = TokenCorpus.from_folder(tmp_path, log=log)
    assert corpus.paths == ["good0.npy", "good1.npy", "good2.npy"]
    assert corpus.skipped == {"unreadable": 2, "no sidecar": 1, "does not fit its sidecar": 1}
    text = "\n".join(lines)
    for name in ("corrupt.npy", "nosidecar", "wrongformat", "wrongshape.npy"):
        assert name in text
    assert "skipped 4" in lines[-1]


def test_no_usable_files_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=f"{tmp_path.name}.*no .npy files"):
        TokenCorpus.from_folder(tmp_path, log=lambda m: None)
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="no usable token files: all 1 skipped"):
        TokenCorpus.from_folder(tmp_path, log=lambda m: None)
    with pytest.raises(ValueError, match="not a folder"):
        TokenCorpus.from_folder(tmp_path / "missing", log=lambda m: None)


def contains_run(source: np.ndarray, run: np.ndarray) -> bool:
    n = len(run)
    return any(np.array_equal(source[i: i + n], run) for i in range(len(source) - n + 1))


def test_mel_batches_are_deterministic_per_seed_and_step(tmp_path):
    tok = fake_tokenizer(channels=2)
    for i, length in enumerate([40, 90, 12]):   # the 12-position sequence is shorter than the crop
        save_tokens(tmp_path / f"s{i}.npy", random_tokens((length, 2), seed=i), tok)
    corpus = TokenCorpus.from_folder(tmp_path, log=lambda m: None)
    batches = TokenBatches(corpus, length=16, batch_size=6, seed=3)
    assert batches.too_short == 1 and batches.positions == 16
    tokens, labels = batches[5]
    assert tokens.shape == (6, 16, 2) and tokens.dtype == torch.long and labels.numel() == 0
    assert torch.equal(tokens, TokenBatches(corpus, 16, 6, seed=3)[5][0])   # a pure function of (seed, step)
    assert not torch.equal(tokens, batches[6][0])
    assert not torch.equal(tokens, TokenBatches(corpus, 16, 6, seed=4)[5][0])
    for row in tokens.numpy():   # every row is a contiguous crop of one of the long sequences
        assert contains_run(corpus.arrays[0], row) or contains_run(corpus.arrays[1], row)
    # Sequences are drawn in proportion to their length: 90 positions against 40.
    picks = [int(contains_run(corpus.arrays[1], row)) for s in range(60) for row in batches[s][0].numpy()]
    assert 0.6 < sum(picks) / len(picks) < 0.8
    with pytest.raises(ValueError, match="no token file is at least 100"):
        TokenBatches(corpus, length=100, batch_size=2, seed=0)
    with pytest.raises(ValueError, match="positive number of positions"):
        TokenBatches(corpus, length=(4, 4), batch_size=2, seed=0)


def test_image_crops_are_flattened_in_raster_order(tmp_path):
    tok = fake_tokenizer(modality="image", codebook_size=1024)
    height, width = 9, 11
    grid = np.arange(height * width).reshape(height, width)   # the value says where it came from
    save_tokens(tmp_path / "grid.npy", grid, tok)
    save_tokens(tmp_path / "small.npy", grid[:3, :3], tok)   # smaller than the crop: left out
    corpus = TokenCorpus.from_folder(tmp_path, log=lambda m: None)
    batches = TokenBatches(corpus, length=(4, 5), batch_size=8, seed=0)
    assert batches.too_short == 1
    tokens, _ = batches[0]
    assert tokens.shape == (8, 20, 1)
    offsets = torch.tensor([r * width + c for r in range(4) for c in range(5)])
    starts = set()
    for row in tokens[..., 0]:
        assert torch.equal(row - row[0], offsets)   # position j = (j // 5, j % 5) of the crop
        starts.add(int(row[0]))
    assert len(starts) > 1   # random windows


def test_class_folders_give_labels(tmp_path):
    tok = fake_tokenizer()
    for cls, low in [("dogs", 8), ("cats", 0)]:   # cats use ids 0-7, dogs 8-15
        for i in range(2):
            save_tokens(tmp_path / cls / f"{i}.npy", random_tokens((30,), k=8, seed=i) + low, tok)
    save_tokens(tmp_path / "loose.npy", random_tokens((30,)), tok)
    lines, log = quiet_log()
    corpus = TokenCorpus.from_folder(tmp_path, class_folders=True, log=log)
    assert corpus.class_names == ["cats", "dogs"]
    assert corpus.labels == [0, 0, 1, 1] and corpus.skipped == {"not in a class folder": 1}
    tokens, labels = TokenBatches(corpus, length=10, batch_size=16, seed=0)[0]
    assert labels.shape == (16,) and set(labels.tolist()) == {0, 1}
    assert torch.equal(labels, (tokens[:, 0, 0] >= 8).long())
