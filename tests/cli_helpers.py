"""Helpers of the command-line failure tests (test_data_safety.py, test_cli_failures.py): tiny
checkpoints, small audio folders, and running `vqkit` as a user does."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import save_tiny_tokenizer
from vqkit.cli import main

SR = 22050


def tone(seconds=0.5, freq=440.0) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(int(seconds * SR)) / SR)).astype(np.float32)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return save_tiny_tokenizer(tmp_path_factory.mktemp("ckpt") / "mel")


@pytest.fixture(scope="module")
def image_ckpt(tmp_path_factory):
    return save_tiny_tokenizer(tmp_path_factory.mktemp("ckpt") / "image", image=True)


def cli(capsys, *argv) -> tuple[int, str, str]:
    """`vqkit ARGV`: (exit code, stdout, stderr); never a traceback."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def audio_folder(root: Path, names=("a.wav", "b.wav")) -> dict[Path, bytes]:
    """WAV files under root; returns {path: bytes} to prove later that none was touched."""
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / name, tone(freq=300.0 + 100 * i), SR)
    return {p: p.read_bytes() for p in map(root.joinpath, names)}
