"""The quantisers' fused fast paths against the plain autograd code they replace: the per-example
transpose of (B, C, *sp) latents to rows and back (values and gradients), the straight-through lookup node of
codebook VQ (loss and gradients, frozen codebook, SimVQ's W), FSQ / residual FSQ's bound-and-round
node (the same gradient bits) and the usage histogram (out-of-range ids, masks, groups).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vqkit.config import SimVQConfig, VQConfig
from vqkit.quantizers import FSQ, build_quantizer
from vqkit.quantizers.base import channel_rows, code_counts, rows_to_channels
from vqkit.quantizers.rfsq import ResidualFSQ

pytestmark = pytest.mark.usefixtures("single_thread")   # see conftest.py


@pytest.mark.parametrize("shape", [(4, 64, 32, 16), (3, 40, 1000), (1, 256, 300), (3, 8, 5), (2, 4, 3, 3, 3)])
def test_channel_rows_match_movedim_values_and_gradients(shape):
    torch.manual_seed(0)
    z = torch.randn(shape, requires_grad=True)
    z_ref = z.detach().clone().requires_grad_()
    rows, ref = channel_rows(z), z_ref.movedim(1, -1).reshape(-1, shape[1])
    assert torch.equal(rows, ref)
    w = torch.randn_like(ref)
    (rows * w).sum().backward()
    (ref * w).sum().backward()
    assert torch.equal(z.grad, z_ref.grad)


@pytest.mark.parametrize("shape", [(4, 64, 32, 16), (3, 40, 1000), (1, 256, 300), (3, 8, 5)])
@pytest.mark.parametrize("grad_layout", ["contiguous", "channels last"])
def test_rows_to_channels_inverts_channel_rows_values_and_gradients(shape, grad_layout):
    torch.manual_seed(0)
    rows = torch.randn(shape[0] * torch.Size(shape[2:]).numel(), shape[1], requires_grad=True)
    out = rows_to_channels(rows, torch.Size(shape))
    want = rows.detach().reshape(shape[0], *shape[2:], shape[1]).movedim(-1, 1)
    assert out.shape == want.shape and torch.equal(out, want)
    w = torch.randn(shape)
    if grad_layout == "channels last":   # the consumer's gradient in the other memory layout
        w = w.movedim(1, -1).contiguous().movedim(-1, 1)
    (g,) = torch.autograd.grad((out * w).sum(), rows)
    assert torch.equal(g, w.movedim(1, -1).reshape(-1, shape[1]))


def test_channel_rows_of_a_non_contiguous_tensor():
    z = torch.randn(4, 32, 48, 40).transpose(2, 3)   # not contiguous: the generic path
    assert torch.equal(channel_rows(z), z.movedim(1, -1).reshape(-1, 32))


def test_vq_on_the_fast_layout_keeps_indices_and_chunking():
    """B > 1 and a big example take the per-example transpose: the same ids as a lookup on the
    movedim rows, and chunked == unchunked bit for bit."""
    torch.manual_seed(1)
    z = torch.randn(3, 64, 32, 32)
    small = build_quantizer(VQConfig(codebook_size=96, dim=64, distance_chunk=100))
    big = build_quantizer(VQConfig(codebook_size=96, dim=64, distance_chunk=10**6))
    big.load_state_dict(small.state_dict())
    small.codebook.data.normal_()
    big.codebook.data.copy_(small.codebook.data)
    a, b = small(z), big(z)
    assert torch.equal(a.indices, b.indices)
    h, e = z.movedim(1, -1).reshape(-1, 64), small.codebook.detach()
    want = torch.addmm((e * e).sum(-1), h, e.t(), alpha=-2).argmin(-1)
    assert torch.equal(a.indices.reshape(-1), want)


def _reference_step(h, e, beta, w):
    """The lookup, losses and straight-through estimator written with plain autograd ops."""
    d = torch.addmm((e * e).sum(-1).detach(), h.detach(), e.detach().t(), alpha=-2)
    q = e[d.argmin(-1)]
    loss = F.mse_loss(q, h.detach()) + beta * F.mse_loss(h, q.detach())
    zq = q.detach() + (h - h.detach())
    return loss, (zq * w).sum() + loss


@pytest.mark.parametrize("kind", ["vq", "vq frozen", "simvq"])
def test_straight_through_node_matches_plain_autograd(kind):
    torch.manual_seed(2)
    beta = 0.3
    cfg = SimVQConfig if kind == "simvq" else VQConfig
    q = build_quantizer(cfg(codebook_size=50, dim=6, beta=beta)).train()
    if kind != "simvq":
        q.codebook.data.normal_()
    if kind == "vq frozen":
        q.codebook.requires_grad_(False)
    params = [p for p in q.parameters() if p.requires_grad]
    z = torch.randn(2, 6, 7, 5, requires_grad=True)
    w = torch.randn(2, 6, 7, 5)
    out = q(z)
    ((out.z_q * w).sum() + out.loss).backward()
    got = [z.grad] + [p.grad for p in params]
    z.grad = None
    q.zero_grad()

    h = z.movedim(1, -1).reshape(-1, 6)
    loss, total = _reference_step(h, q._codes(), beta, w.movedim(1, -1).reshape(-1, 6))
    total.backward()
    assert torch.equal(out.loss, loss)   # the same loss bits
    for x, y in zip(got, [z.grad] + [p.grad for p in params]):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-7)
    if kind == "vq frozen":
        assert q.codebook.grad is None


@pytest.mark.parametrize("levels", [[8, 5, 5, 5], [7, 5, 3], [4, 4]])
def test_fsq_gradient_bits_match_plain_autograd(levels):
    torch.manual_seed(3)
    q = FSQ(levels).train()
    z = (torch.randn(2, len(levels), 9, 4) * 2).requires_grad_()
    w = torch.randn(2, len(levels), 9, 4)
    out = q(z)
    (gz,) = torch.autograd.grad((out.z_q * w).sum(), z)

    bounded = q.bound(z.movedim(1, -1))
    rounded = bounded + (torch.round(bounded) - bounded).detach()
    codes = (rounded / q._half_width).movedim(-1, 1)
    (want,) = torch.autograd.grad((codes * w).sum(), z)
    assert torch.equal(out.z_q, codes) and torch.equal(gz, want)


@pytest.mark.parametrize("stages", [1, 3])
def test_residual_fsq_gradient_bits_match_plain_autograd(stages):
    torch.manual_seed(4)
    q = ResidualFSQ([8, 5, 3], stages=stages).train()
    z = (torch.randn(3, 3, 17) * 2).requires_grad_()
    w = torch.randn(3, 3, 17)
    out = q(z)
    (gz,) = torch.autograd.grad((out.z_q * w).sum(), z)
    u = q.fsq.bound(z.movedim(1, -1)) / q.half_width
    zq = (out.z_q.detach().movedim(1, -1) + (u - u.detach())).movedim(-1, 1)
    (want,) = torch.autograd.grad((zq * w).sum(), z)
    assert torch.equal(gz, want)


def test_code_counts_skip_out_of_range_ids_and_masked_positions():
    torch.manual_seed(5)
    k, groups = 11, 3
    ids = torch.randint(-3, k + 3, (4, 6, groups))
    mask = torch.rand(4, 6) > 0.4
    got = code_counts(ids, k, mask)
    want = torch.zeros(groups, k)
    for (b, t, g), i in zip(torch.cartesian_prod(*map(torch.arange, ids.shape)).tolist(), ids.reshape(-1).tolist()):
        if 0 <= i < k and mask[b, t]:
            want[g, i] += 1
    assert torch.equal(got, want)
    assert torch.equal(code_counts(ids[..., :1], k)[0], torch.bincount(ids[..., 0][(ids[..., 0] >= 0) & (ids[..., 0] < k)],
                                                                         minlength=k).float())
