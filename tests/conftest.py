"""Shared fixtures: tiny configs and a small set of real speech clips."""
from __future__ import annotations

import pytest
import torch

TINY = [
    "model.backbone.channels=[24]", "model.refiner.base_channels=4", "model.refiner.channel_mults=[1,2]",
    "discriminator.patch_channels=[8,8]", "discriminator.bands=2", "discriminator.band_channels=[8]",
    "data.segment_frames=32", "train.batch_size=4", "optim.warmup_steps=5", "train.eval_clips=2",
]


@pytest.fixture(scope="module")
def single_thread():
    """Tiny tensors: one intra-op thread is as fast, and immune to oversubscription when other
    processes share the two cores. Restored afterwards. Use with pytest.mark.usefixtures."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    """A small demo speech corpus (real Asterisk speech, or espeak-ng when that is what exists)."""
    from vqkit.data.demo import make_demo_speech

    out = tmp_path_factory.mktemp("demo-speech")
    try:
        make_demo_speech(out, log=lambda m: None, limit=24)
    except RuntimeError as e:
        pytest.skip(f"no demo speech source on this machine: {e}")
    return out


@pytest.fixture(scope="session")
def speech_mels(demo_dir):
    """(train, heldout) lists of real-speech log-mels in the default (HiFi-GAN) convention."""
    from vqkit.data.audio_corpus import load_mel_corpus
    from vqkit.frontends.mel import MelFrontend

    fe = MelFrontend()
    quiet = lambda m: None  # noqa: E731
    train = [c.mel for c in load_mel_corpus(demo_dir / "train", fe, log=quiet).clips]
    held = [c.mel for c in load_mel_corpus(demo_dir / "heldout", fe, log=quiet).clips]
    return train, held


@pytest.fixture
def synthetic_mels():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(80, 60 + 9 * i, generator=g) * 2 - 5 for i in range(8)]


def save_tiny_tokenizer(path, *overrides: str, image: bool = False, seed: int = 0):
    """A tiny untrained tokenizer checkpoint at `path` (mel, or image with image=True): enough for
    every verb that reads a checkpoint; returns the path."""
    from vqkit.config import load_config
    from vqkit.models.tokenizer import Tokenizer

    torch.manual_seed(seed)
    cfg = (load_config(preset="vqgan", overrides=["model.backbone.channels=[16, 32]", *overrides]) if image
           else load_config(preset="mqgan-refiner", overrides=[*TINY, *overrides]))
    Tokenizer(cfg).eval().save_pretrained(path)
    return path
