"""FSQ: exact index <-> code bijection, bounded codes, straight-through gradients, float32 under
bf16 autocast, id validation and codebook usage statistics.

Expected values are computed independently here (numpy mixed-radix arithmetic, the analytic
inverse of FSQ's tanh bound, entropy by hand) rather than copied from the implementation's output.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vqkit.config import FSQConfig
from vqkit.quantizers import FSQ, build_quantizer, usage_stats

LEVEL_SETS = [[8, 5, 5, 5], [7, 5, 5, 5, 5], [8, 6, 5], [2, 3]]
EPS = 1e-3  # FSQ's default


def mixed_radix_digits(levels: list[int], n: int) -> np.ndarray:
    """(n, dim) digits of indices 0..n-1, first level least significant."""
    idx = np.arange(n)
    digits = np.zeros((n, len(levels)), dtype=np.int64)
    for d, lv in enumerate(levels):
        digits[:, d] = idx % lv
        idx = idx // lv
    assert (idx == 0).all()
    return digits


def rounded_grid(levels: list[int]) -> np.ndarray:
    """(codebook, dim) integer values that rounding produces: L//2 below zero ... (L-1)//2 above,
    i.e. -L/2 .. L/2-1 for even L and symmetric for odd L."""
    n = int(np.prod(levels))
    return mixed_radix_digits(levels, n) - np.array([lv // 2 for lv in levels])


def latents_for(levels: list[int], rounded: np.ndarray) -> np.ndarray:
    """Invert bound(z) = tanh(z + shift) * half - offset so that bound(z) equals `rounded` exactly
    (up to float error, far from a rounding boundary)."""
    lv = np.array(levels, dtype=np.float64)
    half = (lv - 1) * (1 + EPS) / 2
    offset = np.where(lv % 2 == 0, 0.5, 0.0)
    shift = np.arctanh(offset / half)
    return np.arctanh((rounded + offset) / half) - shift


@pytest.mark.parametrize("levels", LEVEL_SETS, ids=lambda lv: "x".join(map(str, lv)))
class TestBijection:
    def test_codebook_size_is_product(self, levels):
        q = FSQ(levels)
        assert q.codebook_size == math.prod(levels)
        assert q.dim == len(levels)
        assert build_quantizer(FSQConfig(levels=levels)).codebook_size == math.prod(levels)

    def test_indices_to_codes_matches_independent_mixed_radix(self, levels):
        q = FSQ(levels)
        n = q.codebook_size
        codes = q.indices_to_codes(torch.arange(n)[None])          # (1, dim, n)
        assert codes.shape == (1, len(levels), n)
        expected = rounded_grid(levels) / np.array([lv // 2 for lv in levels])
        np.testing.assert_allclose(codes[0].T.numpy(), expected, rtol=0, atol=1e-7)
        # every code is distinct and lies in [-1, 1]
        assert len({tuple(c) for c in codes[0].T.tolist()}) == n
        assert codes.min() >= -1 and codes.max() <= 1

    def test_round_trip_every_code(self, levels):
        q = FSQ(levels)
        ids = torch.arange(q.codebook_size)
        # (B, T) layout and a (B, H, W) layout: the channel axis is always dim 1
        for shaped in (ids.reshape(1, -1), ids.flip(0).reshape(1, -1)):
            back = q.codes_to_indices(q.indices_to_codes(shaped))
            assert back.dtype == torch.long
            assert torch.equal(back, shaped)
        if q.codebook_size % 2 == 0:
            grid = ids.reshape(2, 1, -1)
            assert torch.equal(q.codes_to_indices(q.indices_to_codes(grid)), grid)

    def test_forward_on_constructed_latents_reproduces_every_index(self, levels):
        q = FSQ(levels)
        rounded = rounded_grid(levels)                               # (n, dim)
        z = torch.from_numpy(latents_for(levels, rounded).T[None].copy()).float()   # (1, dim, n)
        # the constructed latents really hit the grid values through FSQ's own bound
        bounded = q.bound(z.movedim(1, -1))[0].numpy()
        np.testing.assert_allclose(bounded, rounded, atol=1e-3)
        out = q(z)
        assert out.indices.shape == (1, q.codebook_size)
        assert torch.equal(out.indices[0], torch.arange(q.codebook_size))
        assert out.z_q.dtype == torch.float32
        assert torch.equal(out.z_q, q.indices_to_codes(out.indices))
        assert float(out.loss) == 0.0
        # every code used exactly once: usage 1, perplexity = codebook size
        assert out.stats["usage"].item() == pytest.approx(1.0)
        assert out.stats["perplexity"].item() == pytest.approx(q.codebook_size, rel=1e-4)

    def test_each_dimension_takes_exactly_level_values(self, levels):
        """However large the latent, rounding yields exactly L values per dimension, all in [-1, 1]."""
        q = FSQ(levels)
        sweep = torch.linspace(-30, 30, 4001)
        z = sweep.expand(len(levels), -1)[None].contiguous()         # (1, dim, 4001)
        out = q(z)
        assert out.z_q.min() >= -1 and out.z_q.max() <= 1
        assert out.indices.min() >= 0 and out.indices.max() < q.codebook_size
        for d, lv in enumerate(levels):
            values = torch.unique(out.z_q[0, d])
            assert len(values) == lv, (d, values)
            # values are monotone in z: the sweep is sorted, so z_q must be non-decreasing
            assert (out.z_q[0, d].diff() >= 0).all()


def test_straight_through_gradient_matches_derivative_of_bound():
    levels = [8, 5, 5, 5]
    q = FSQ(levels)
    torch.manual_seed(0)
    z = (torch.randn(2, 4, 7) * 1.5).requires_grad_()
    q(z).z_q.sum().backward()
    assert z.grad is not None
    assert (z.grad != 0).all()
    # analytic: d/dz [tanh(z + shift) * half / (L // 2)]
    lv = np.array(levels, dtype=np.float64)[None, :, None]
    half = (lv - 1) * (1 + EPS) / 2
    shift = np.arctanh(np.where(lv % 2 == 0, 0.5, 0.0) / half)
    t = np.tanh(z.detach().double().numpy() + shift)
    expected = (1 - t ** 2) * half / (lv // 2)
    np.testing.assert_allclose(z.grad.double().numpy(), expected, rtol=1e-4, atol=1e-7)


def test_gradient_flows_through_a_preceding_layer():
    q = FSQ([7, 5, 5, 5, 5])
    torch.manual_seed(1)
    layer = torch.nn.Conv1d(3, q.dim, 1)
    (q(layer(torch.randn(2, 3, 6))).z_q ** 2).sum().backward()
    assert layer.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("levels", LEVEL_SETS, ids=lambda lv: "x".join(map(str, lv)))
def test_autocast_bf16_keeps_float32_and_indices(levels):
    q = FSQ(levels)
    torch.manual_seed(2)
    z = torch.randn(3, len(levels), 50) * 2
    ref = q(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(z)
        # a realistic pipeline: a bf16 layer feeding the quantiser
        layer = torch.nn.Conv1d(len(levels), len(levels), 1)
        z_bf16 = layer(z)
        assert z_bf16.dtype == torch.bfloat16
        out_bf16 = q(z_bf16)
    assert out.z_q.dtype == torch.float32
    assert torch.equal(out.indices, ref.indices)
    assert torch.equal(out.z_q, ref.z_q)
    assert out_bf16.z_q.dtype == torch.float32
    assert torch.equal(out_bf16.indices, q(z_bf16.float()).indices)


@pytest.mark.parametrize("levels", LEVEL_SETS, ids=lambda lv: "x".join(map(str, lv)))
def test_out_of_range_ids_raise(levels):
    q = FSQ(levels)
    for bad in ([[q.codebook_size]], [[-1]], [[0, 1, q.codebook_size + 7]]):
        with pytest.raises(ValueError, match="token ids"):
            q.indices_to_codes(torch.tensor(bad))
    q.indices_to_codes(torch.tensor([[0, q.codebook_size - 1]]))   # the edges are fine


def test_invalid_levels_and_wrong_channel_count_raise():
    for levels in ([], [1, 5], [8, 0]):
        with pytest.raises(ValueError):
            FSQ(levels)
    q = FSQ([8, 5, 5, 5])
    with pytest.raises(ValueError, match="channels"):
        q(torch.zeros(1, 3, 4))


def _expected_stats(ids: list[int], codebook_size: int) -> tuple[float, float]:
    counts = np.bincount(np.array(ids), minlength=codebook_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return (counts > 0).sum() / codebook_size, math.exp(-(p * np.log(p)).sum())


def test_usage_stats_known_indices():
    ids = [0, 0, 1, 2, 2, 2, 7]
    usage, perplexity = _expected_stats(ids, 10)
    stats = usage_stats(torch.tensor(ids), 10)
    assert stats["usage"].item() == pytest.approx(usage)            # 4 of 10 codes
    assert stats["perplexity"].item() == pytest.approx(perplexity, rel=1e-6)
    assert usage == pytest.approx(0.4)
    # uniform use of k codes has perplexity exactly k
    stats = usage_stats(torch.tensor([3, 4, 5, 6] * 5), 10)
    assert stats["perplexity"].item() == pytest.approx(4.0, rel=1e-6)
    assert stats["usage"].item() == pytest.approx(0.4)


def test_usage_stats_mask_excludes_padding():
    ids = torch.tensor([[0, 0, 1, 9], [2, 2, 2, 9]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]])
    usage, perplexity = _expected_stats([0, 0, 1, 2, 2, 2], 10)
    stats = usage_stats(ids, 10, mask)
    assert stats["usage"].item() == pytest.approx(usage)
    assert stats["perplexity"].item() == pytest.approx(perplexity, rel=1e-6)
    # the same mask through FSQ.forward
    q = FSQ([2, 3])
    rounded = rounded_grid([2, 3])[ids.reshape(-1).numpy() % 6]
    z = torch.from_numpy(latents_for([2, 3], rounded).T.reshape(2, 2, 4).transpose(1, 0, 2).copy()).float()
    out = q(z, mask)
    assert torch.equal(out.indices, ids % 6)
    u, pp = _expected_stats([0, 0, 1, 2, 2, 2], 6)
    assert out.stats["usage"].item() == pytest.approx(u)
    assert out.stats["perplexity"].item() == pytest.approx(pp, rel=1e-6)


@pytest.mark.parametrize("levels", [[8, 5, 5, 5], [8, 8, 8, 5, 5, 5], [7, 6]])
def test_indices_only_path_equals_forward(levels):
    """quantizer.indices (inference: no statistics) gives exactly forward's codes."""
    q = FSQ(levels)
    z = torch.randn(3, len(levels), 50, generator=torch.Generator().manual_seed(4)) * 3
    assert torch.equal(q.indices(z), q(z).indices)
