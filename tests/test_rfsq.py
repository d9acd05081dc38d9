"""Residual FSQ: index <-> code bijection over every stage combination, forward == indices(z),
decoding from the first k stages, the residual error shrinking stage by stage, straight-through
gradients, float32 under bf16 autocast, per-stage usage statistics and stage dropout.

Expected codes are computed independently here (numpy mixed-radix digits and the stage grid
written out: stage s of a dimension with L levels is (digit - L//2 + c) / (L//2) / L^(s-1), with
c = 1/2 for even L after the first stage), not copied from the implementation's output.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from vqkit.config import ConfigError, load_config
from vqkit.quantizers import FSQ, REGISTRY, ResidualFSQ, build_quantizer

EPS = 1e-3   # FSQ's default


def stage_code(levels: list[int], stage: int, index: int) -> np.ndarray:
    """The code of one index at one stage (0-based), from the definition."""
    out = []
    for lv in levels:
        digit, index = index % lv, index // lv
        centre = 0.5 if (stage > 0 and lv % 2 == 0) else 0.0
        out.append((digit - lv // 2 + centre) / (lv // 2) / float(lv) ** stage)
    return np.array(out)


def summed_code(levels: list[int], ids: tuple[int, ...], k: int | None = None) -> np.ndarray:
    return sum(stage_code(levels, s, i) for s, i in enumerate(ids[:k]))


def latent_for(levels: list[int], code: np.ndarray) -> np.ndarray:
    """z with FSQ's bound(z) / (L//2) == code: the analytic inverse of FSQ's tanh bound."""
    lv = np.array(levels, dtype=np.float64)
    half = (lv - 1) * (1 + EPS) / 2
    offset = np.where(lv % 2 == 0, 0.5, 0.0)
    return np.arctanh((code * (lv // 2) + offset) / half) - np.arctanh(offset / half)


def bounded_latent(q: ResidualFSQ, z: torch.Tensor) -> torch.Tensor:
    """u: the latent in code units before any rounding, (B, dim, ...)."""
    half_width = torch.tensor([lv // 2 for lv in q.fsq.levels_list], dtype=torch.float32)
    return (q.fsq.bound(z.float().movedim(1, -1)) / half_width).movedim(-1, 1)


# ---- the code book ---------------------------------------------------------------------------------

def within_bound(levels: list[int], codes: np.ndarray) -> np.ndarray:
    """(n,) bool: codes (n, dim) inside the range of FSQ's bound, i.e. ones the encoder can make."""
    lv = np.array(levels, dtype=np.float64)
    half = (lv - 1) * (1 + EPS) / 2
    offset = np.where(lv % 2 == 0, 0.5, 0.0)
    return (np.abs(codes * (lv // 2) + offset) < half).all(-1)


def check_round_trips(q: ResidualFSQ, levels: list[int], ids: torch.Tensor) -> int:
    """ids (1, n, stages) -> codes (checked against the definition) -> ids, by codes_to_indices for
    every tuple and through the encoder's path (forward and indices on latents built to hit the
    code) for the tuples inside FSQ's bound. Returns how many the encoder can make."""
    codes = q.indices_to_codes(ids)                                     # (1, dim, n)
    expected = np.stack([summed_code(levels, tuple(t)) for t in ids[0].tolist()])
    np.testing.assert_allclose(codes[0].T.numpy(), expected, rtol=0, atol=1e-6)
    assert torch.equal(q.codes_to_indices(codes), ids)
    inside = within_bound(levels, expected)
    z = torch.from_numpy(latent_for(levels, expected[inside]).T[None].copy()).float()
    assert torch.equal(q.indices(z), ids[:, torch.from_numpy(inside)])
    assert torch.equal(q(z).indices, q.indices(z))
    return int(inside.sum())


def test_every_code_of_a_small_rfsq_round_trips():
    """levels [3, 3], 2 stages: all 81 (stage 1, stage 2) index pairs -> code -> the same indices.
    Per dimension, stage 1 at an edge (+-1) leaves the residual on the inner side only, so 2 of the
    9 (stage 1, stage 2) value pairs are never made by the encoder: 7 x 7 = 49 of the 81 tuples."""
    levels = [3, 3]
    q = ResidualFSQ(levels, stages=2)
    assert (q.codebook_size, q.tokens_per_position, q.stages, q.dim) == (9, 2, 2, 2)
    ids = torch.tensor(list(itertools.product(range(9), repeat=2)))[None]    # (1, 81, 2)
    codes = q.indices_to_codes(ids)[0].T.numpy()
    assert len({tuple(np.round(c, 6)) for c in codes}) == 81          # a bijection: all distinct
    assert check_round_trips(q, levels, ids) == 49


@pytest.mark.parametrize("levels, stages", [([8, 5], 3), ([4, 2, 3], 2), ([7], 4)])
def test_constructed_codes_come_back_for_other_levels(levels, stages):
    """Even and odd levels (even ones with the half-step centred grid) and more stages: random
    index tuples -> code -> the same tuples."""
    q = ResidualFSQ(levels, stages)
    ids = torch.randint(0, q.codebook_size, (1, 300, stages), generator=torch.Generator().manual_seed(0))
    assert check_round_trips(q, levels, ids) > 50


def test_one_stage_is_exactly_fsq():
    z = torch.randn(3, 4, 40, generator=torch.Generator().manual_seed(1)) * 2
    q, f = ResidualFSQ([8, 5, 5, 5], stages=1), FSQ([8, 5, 5, 5])
    out = q(z)
    assert out.indices.shape == (3, 40) and q.tokens_per_position == 1
    assert torch.equal(out.indices, f(z).indices)
    assert torch.equal(out.z_q, f.indices_to_codes(out.indices))
    assert torch.equal(q.indices_to_codes(out.indices), f.indices_to_codes(out.indices))


# ---- forward ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("levels, stages", [([8, 5, 5, 5], 3), ([3, 3], 2), ([5, 5, 5, 5, 5, 5], 2)])
def test_forward_indices_equal_indices_and_codes(levels, stages):
    q = ResidualFSQ(levels, stages)
    z = torch.randn(2, len(levels), 7, 5, generator=torch.Generator().manual_seed(2)) * 3   # an image layout
    out = q(z)
    assert out.indices.shape == (2, 7, 5, stages) and out.indices.dtype == torch.long
    assert torch.equal(out.indices, q.indices(z))
    assert torch.equal(out.z_q, q.indices_to_codes(out.indices))      # bit for bit: one formula
    assert out.z_q.shape == z.shape and float(out.loss) == 0.0


def test_decoding_from_k_stages_is_the_sum_of_the_first_k_stage_codes():
    levels = [8, 5, 5, 5]
    q = ResidualFSQ(levels, stages=3)
    z = torch.randn(2, 4, 30, generator=torch.Generator().manual_seed(3)) * 2
    ids = q.indices(z)
    stage_codes = q.stage_codes(ids)
    for k in (1, 2, 3):
        got = q.indices_to_codes(ids, stages=k)
        assert torch.equal(got, sum(stage_codes[1:k], stage_codes[0]))
        expected = np.stack([summed_code(levels, tuple(t), k) for t in ids.reshape(-1, 3).tolist()])
        np.testing.assert_allclose(got.movedim(1, -1).reshape(-1, 4).numpy(), expected, rtol=0, atol=1e-6)
    assert torch.equal(q.indices_to_codes(ids), q.indices_to_codes(ids, stages=3))
    for bad in (0, 4, -1, True, 1.0):
        with pytest.raises(ValueError, match=r"stages=.*must be an integer in \[1, 3\]"):
            q.indices_to_codes(ids, stages=bad)
    with pytest.raises(ValueError, match="one per stage"):
        q.indices_to_codes(ids[..., :2])
    with pytest.raises(ValueError, match="token ids"):
        q.indices_to_codes(ids.clamp(max=q.codebook_size) + q.codebook_size)


def test_the_residual_error_shrinks_with_each_stage():
    """Measured on random latents: the error of the first k stages falls stage by stage, about L-fold
    in a dimension of L levels, and never exceeds half of stage k's grid step."""
    levels = [8, 5, 5, 5]
    q = ResidualFSQ(levels, stages=4)
    z = torch.randn(8, 4, 500, generator=torch.Generator().manual_seed(4)) * 2
    u, ids = bounded_latent(q, z), q.indices(z)
    lv = torch.tensor(levels, dtype=torch.float32).view(1, -1, 1)
    errors = []
    for k in range(1, 5):
        err = (u - q.indices_to_codes(ids, stages=k)).abs()
        bound = 0.5 / (lv // 2) / lv ** (k - 1)               # half a step of stage k's grid
        assert (err <= bound * (1 + 1e-4) + 1e-6).all(), k
        errors.append(err.mean(dim=(0, 2)))                    # per dimension
    for before, after in zip(errors, errors[1:]):
        ratio = before / after
        assert (ratio > 0.6 * lv.flatten()).all() and (ratio < 1.6 * lv.flatten()).all(), ratio


def test_gradient_reaches_the_encoder_straight_through():
    q = ResidualFSQ([8, 5, 5, 5], stages=3)
    torch.manual_seed(5)
    layer = torch.nn.Conv1d(3, 4, 1)
    x = torch.randn(2, 3, 9)
    (q(layer(x)).z_q ** 2).sum().backward()
    assert layer.weight.grad.abs().sum() > 0
    # the gradient w.r.t. z is FSQ's (straight-through to the bounded latent), whatever the stages
    z = (torch.randn(2, 4, 9) * 1.5).requires_grad_()
    w = torch.randn(2, 4, 9)
    (q(z).z_q * w).sum().backward()
    z2 = z.detach().clone().requires_grad_()
    (FSQ([8, 5, 5, 5])(z2).z_q * w).sum().backward()
    torch.testing.assert_close(z.grad, z2.grad)


def test_autocast_bf16_keeps_float32_and_indices():
    q = ResidualFSQ([8, 5, 5, 5], stages=3)
    z = torch.randn(3, 4, 50, generator=torch.Generator().manual_seed(6)) * 2
    ref = q(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(z)
        z_bf16 = torch.nn.Conv1d(4, 4, 1)(z)
        assert z_bf16.dtype == torch.bfloat16
        out_bf16 = q(z_bf16)
        codes = q.indices_to_codes(out.indices, stages=2)
    assert out.z_q.dtype == torch.float32 and out_bf16.z_q.dtype == torch.float32 and codes.dtype == torch.float32
    assert torch.equal(out.indices, ref.indices) and torch.equal(out.z_q, ref.z_q)
    assert torch.equal(out_bf16.indices, q(z_bf16.float()).indices)


# ---- statistics and stage dropout --------------------------------------------------------------

def test_usage_statistics_per_stage_and_pooled_with_a_mask():
    q = ResidualFSQ([3, 3], stages=2)
    ids = torch.tensor([[[0, 1], [0, 2], [4, 2], [8, 8]]])              # (1, 4, 2): the last is padding
    mask = torch.tensor([[1, 1, 1, 0]])
    stats = q.stage_stats(ids, mask)

    def expected(values: list[int]) -> tuple[float, float]:
        counts = np.bincount(values, minlength=9).astype(float)
        p = counts[counts > 0] / counts.sum()
        return (counts > 0).sum() / 9, math.exp(-(p * np.log(p)).sum())

    for key, values in (("stage1", [0, 0, 4]), ("stage2", [1, 2, 2])):
        usage, perplexity = expected(values)
        assert stats[f"usage_{key}"].item() == pytest.approx(usage)
        assert stats[f"perplexity_{key}"].item() == pytest.approx(perplexity, rel=1e-6)
    usage, perplexity = expected([0, 0, 4, 1, 2, 2])                    # every stage's codes together
    assert stats["usage"].item() == pytest.approx(usage)
    assert stats["perplexity"].item() == pytest.approx(perplexity, rel=1e-6)
    # forward reports exactly these, for its own indices and the mask
    z = torch.randn(2, 2, 6, generator=torch.Generator().manual_seed(9))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]])
    out = q(z, mask)
    expect = q.stage_stats(out.indices, mask)
    assert out.stats.keys() == expect.keys() == {"usage", "perplexity", "usage_stage1", "perplexity_stage1",
                                                 "usage_stage2", "perplexity_stage2"}
    assert all(torch.equal(out.stats[k], expect[k]) for k in expect)


def test_stage_dropout_trains_truncated_codes_and_only_in_training():
    q = ResidualFSQ([8, 5, 5, 5], stages=3, stage_dropout=1.0)
    z = torch.randn(64, 4, 6, generator=torch.Generator().manual_seed(8)) * 2
    torch.manual_seed(0)
    out = q.train()(z)
    assert torch.equal(out.indices, q.indices(z))                      # the tokens keep every stage
    seen = set()
    for b in range(z.shape[0]):
        matches = [k for k in (1, 2, 3) if torch.equal(out.z_q[b:b + 1], q.indices_to_codes(out.indices[b:b + 1], k))]
        assert matches, b
        seen.add(matches[0])
    assert seen == {1, 2, 3}                                            # k uniform in 1..stages
    assert torch.equal(q.eval()(z).z_q, q.indices_to_codes(out.indices))   # eval: every stage
    never = ResidualFSQ([8, 5, 5, 5], stages=3, stage_dropout=0.0).train()
    assert torch.equal(never(z).z_q, q.indices_to_codes(out.indices))


# ---- config ----------------------------------------------------------------------------------------

def test_config_builds_and_validates_its_keys():
    cfg = load_config(preset="mqgan-refiner", overrides=["model.quantizer.kind=rfsq", "model.quantizer.stages=3",
                                                         "model.quantizer.levels=[5,5,3]"]).model.quantizer
    assert (cfg.kind, cfg.levels, cfg.stages, cfg.stage_dropout) == ("rfsq", [5, 5, 3], 3, 0.0)
    assert cfg.tokens_per_position == 3
    q = build_quantizer(cfg)
    assert isinstance(q, ResidualFSQ) and q.codebook_size == 75 and q.tokens_per_position == 3
    assert "rfsq" in REGISTRY
    for override, key in (("model.quantizer.stages=0", "model.quantizer.stages"),
                          ("model.quantizer.stage_dropout=1.5", "model.quantizer.stage_dropout"),
                          ("model.quantizer.levels=[1,5]", "model.quantizer.levels")):
        with pytest.raises(ConfigError, match=key):
            load_config(preset="mqgan-refiner", overrides=["model.quantizer.kind=rfsq", override])
    with pytest.raises(ConfigError, match="model.quantizer.stages: applies to kind 'rfsq', not 'fsq'"):
        load_config(preset="mqgan-refiner", overrides=["model.quantizer.stages=2"])
    with pytest.raises(ValueError, match="channel per level"):
        q(torch.zeros(1, 2, 4))
