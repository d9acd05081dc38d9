"""Every module of a causal model is causal: perturbing input frame t changes no output that comes
before t (minus the stated lookahead: a token waits for the last frame of its own span). And the
measured receptive field (models/time_context.py) is exact: perturbing just outside it changes
nothing, just inside it changes something."""
from __future__ import annotations

import json

import pytest
import torch

from vqkit.config import RefinerConfig, load_config
from vqkit.models.refiner import Refiner
from vqkit.models.tokenizer import Tokenizer
from vqkit.nn.blocks1d import (ChannelAttention, Conv1d, Downsample1d, MelMixer, ResBlock1d, TemporalAttention,
                               Upsample1d)
from vqkit.nn.unet import ConvBlock2d, UNet2d

pytestmark = pytest.mark.usefixtures("single_thread")

T = 64


def first_change(fn, x: torch.Tensor, t: int, size: float = 3.0) -> int | None:
    """Index (last axis) of the first output that changes when input frame t is perturbed."""
    with torch.no_grad():
        y0 = fn(x)
        x1 = x.clone()
        x1[..., t] += size
        diff = (fn(x1) - y0).abs()
    changed = (diff.flatten(0, -2).amax(0) > 0).nonzero().flatten()
    return int(changed[0]) if changed.numel() else None


def assert_causal(fn, x: torch.Tensor, frames_per_output: float = 1.0, lookahead: int = 0,
                  size: float = 3.0) -> None:
    """Output j covers input frames up to (j + 1) * frames_per_output - 1; with causal modules a
    perturbation at t first shows at the output whose span ends at or after t - lookahead."""
    n = x.shape[-1]
    changes = 0
    for t in sorted({min(5, n - 1), n // 2, n - 3, n - 1}):
        j = first_change(fn, x, t, size)
        if j is None:   # possible through a quantiser (a rounding step not crossed); see below
            continue
        changes += 1
        earliest = int((t - lookahead) // frames_per_output)
        assert j >= earliest, f"perturbing frame {t} changed output {j} (< {earliest}): the module sees the future"
    assert changes >= 2, "perturbations changed nothing: the check would prove nothing"


BLOCKS = {
    "conv1d": (lambda: Conv1d(6, 6, 5, dilation=3, causal=True), (1, 6, T), 1),
    "channel_attention": (lambda: ChannelAttention(6, causal=True, frames=9), (1, 6, T), 1),
    "temporal_attention": (lambda: TemporalAttention(causal=True), (1, 6, T), 1),
    "resblock1d": (lambda: ResBlock1d(6, 5, 3, causal=True, attention_frames=9), (1, 6, T), 1),
    "mel_mixer": (lambda: MelMixer(causal=True), (1, 6, T), 1),
    "downsample1d": (lambda: Downsample1d(6, 6, causal=True), (1, 6, T), 2),
    "upsample1d": (lambda: Upsample1d(6, 6, causal=True), (1, 6, T), 0.5),
    "convblock2d": (lambda: ConvBlock2d(2, 8, causal=True, norm="frame"), (1, 2, 5, T), 1),
    "unet2d": (lambda: UNet2d(1, 1, 4, [1, 2, 2], pool=(1, 2), causal=True, norm="frame"), (1, 1, 6, T), 1),
}


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_each_building_block_is_causal(name):
    make, shape, frames_per_output = BLOCKS[name]
    torch.manual_seed(1)
    block = make().eval()
    assert_causal(block, torch.randn(*shape), frames_per_output)


def test_causal_refiner_is_causal():
    torch.manual_seed(2)
    ref = Refiner(10, 6, RefinerConfig(base_channels=4, channel_mults=[1, 2, 2]), causal=True).eval()
    draft, hidden = torch.randn(1, 10, T), torch.randn(1, 6, T)
    assert_causal(lambda d: ref(d, hidden), draft)
    assert_causal(lambda h: ref(draft, h), hidden)


def causal_tokenizer(downsample: int) -> Tokenizer:
    overrides = {"model.mel.n_mels": 12, "model.backbone.channels": [8, 12], "model.backbone.kernel_size": 3,
                 "model.backbone.attention_frames": 9, "model.backbone.downsample": downsample,
                 "model.causal": True, "model.refiner.base_channels": 4, "model.refiner.channel_mults": [1, 2, 2],
                 "discriminator.bands": 2}
    torch.manual_seed(3)
    return Tokenizer(load_config(overrides=[f"{k}={json.dumps(v)}" for k, v in overrides.items()])).eval()


@pytest.mark.parametrize("downsample", [1, 2, 4, 8])
def test_causal_tokenizer_parts_and_whole_are_causal(downsample):
    tok = causal_tokenizer(downsample)
    x = torch.randn(1, 12, T)
    assert_causal(tok.encoder, x, frames_per_output=downsample)             # token j: frames <= its last
    z = torch.rand(1, tok.quantizer.dim, T // downsample) * 2 - 1
    assert_causal(lambda q: tok.decoder(q)[0], z, frames_per_output=1 / downsample)   # frame: its token and before
    # end to end (through the quantiser): the stated lookahead is downsample - 1 frames
    ctx = tok.time_context
    assert ctx.causal and ctx.lookahead_frames == downsample - 1
    # a large perturbation, so that it moves tokens across FSQ's rounding steps
    assert_causal(lambda m: tok(m).refined, -5 + 2 * x, lookahead=ctx.lookahead_frames, size=40.0)


def test_latency_follows_from_the_model():
    """Audio latency = STFT window's right half + half a hop + lookahead frames (HiFi-GAN mels:
    (1024 + 256) / 2 + 256 * (downsample - 1) samples at 22.05 kHz)."""
    for d in (1, 4):
        tok = causal_tokenizer(d)
        assert tok.latency_ms == pytest.approx(1000 * (640 + 256 * (d - 1)) / 22050)


@pytest.mark.parametrize("downsample", [1, 2])
def test_measured_receptive_field_is_exact(downsample):
    """Just outside the probed context nothing changes; at its edge something does (double
    precision, so the edge effect is not lost to rounding)."""
    overrides = {"model.mel.n_mels": 12, "model.backbone.channels": [8], "model.backbone.kernel_size": 3,
                 "model.backbone.attention_frames": 5, "model.backbone.downsample": downsample,
                 "model.refiner.base_channels": 4, "model.refiner.channel_mults": [1, 2], "discriminator.bands": 2}
    torch.manual_seed(4)
    tok = Tokenizer(load_config(overrides=[f"{k}={json.dumps(v)}" for k, v in overrides.items()])).eval().double()
    ctx = tok.time_context
    assert not ctx.causal and ctx.encoder_future > 0 and ctx.encoder_past > 0
    n = 256
    j = n // downsample // 2
    first, last = downsample * j, downsample * j + downsample - 1   # token j's own frames
    x = torch.randn(1, 12, n, dtype=torch.float64)

    def token_j(perturb_at: int) -> bool:
        x1 = x.clone()
        x1[..., perturb_at] += 1.0
        with torch.no_grad():
            return bool((tok.encoder(x1)[..., j] != tok.encoder(x)[..., j]).any())

    assert token_j(last + ctx.encoder_future) and not token_j(last + ctx.encoder_future + 1)
    assert token_j(first - ctx.encoder_past) and not token_j(first - ctx.encoder_past - 1)
