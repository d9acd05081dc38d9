"""Codebook VQ: shapes (1D/2D, MoVQ multichannel), nearest-code lookup against a brute-force
torch.cdist reference (plain, l2-normalised, factorised), chunked == unchunked distances,
straight-through and loss values computed by hand, the SeQ-GAN entropy regulariser (value and its
effect on usage in a tiny training run), dead-code restart, a 16384-code codebook and bf16 autocast.
"""
from __future__ import annotations

import time

import pytest
import torch

from quantizer_helpers import fit_usage
from vqkit.config import VQConfig
from vqkit.quantizers import VectorQuantizer, build_quantizer


pytestmark = pytest.mark.usefixtures("single_thread")   # see conftest.py


def make(**kw) -> VectorQuantizer:
    kw.setdefault("codebook_size", 32)
    kw.setdefault("dim", 4)
    q = build_quantizer(VQConfig(**kw))
    assert isinstance(q, VectorQuantizer)
    return q


def code_space(q: VectorQuantizer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(latents, codes) in the lookup space, computed here from the raw parameters."""
    e = q.codebook.detach()
    h = x
    if q.cfg.codebook_dim is not None:
        h = h @ q.in_proj.weight.detach().t() + q.in_proj.bias.detach()
    if q.cfg.l2_norm:
        h = h / h.norm(dim=-1, keepdim=True)
        e = e / e.norm(dim=-1, keepdim=True)
    return h, e


def flat_chunks(z: torch.Tensor, dim: int) -> torch.Tensor:
    """(B, c*dim, *sp) -> (B*prod(sp)*c, dim), chunks in channel order."""
    return z.movedim(1, -1).reshape(-1, dim)


# ---- shapes and round trip -------------------------------------------------------------------
@pytest.mark.parametrize("spatial", [(12,), (5, 6)])
@pytest.mark.parametrize("channels", [1, 4])
def test_shapes_and_roundtrip(spatial, channels):
    torch.manual_seed(0)
    q = make(channels=channels, codebook_size=16, dim=3)
    assert q.dim == 3 * channels and q.codebook_size == 16 and q.tokens_per_position == channels
    assert [n for n, _ in q.named_parameters()] == ["codebook"]   # ONE shared codebook
    q.codebook.data.normal_()
    z = torch.randn(2, q.dim, *spatial)
    out = q(z)
    assert out.z_q.shape == z.shape and out.z_q.dtype == torch.float32
    want = (2, *spatial) if channels == 1 else (2, *spatial, channels)
    assert out.indices.shape == want and out.indices.dtype == torch.long
    assert torch.equal(q.indices_to_codes(out.indices), out.z_q)    # bit-exact round trip
    assert out.loss.shape == () and set(out.stats) >= {"usage", "perplexity"}
    with pytest.raises(ValueError):
        q(torch.randn(2, q.dim + 1, *spatial))


def test_multichannel_chunks_take_different_codes():
    torch.manual_seed(1)
    q = make(channels=4, codebook_size=32, dim=6)
    q.codebook.data.normal_()
    # position (b, i, j) holds codes ids[b, i, j, :] in its 4 chunks
    ids = torch.stack([torch.randperm(32)[:4] for _ in range(2 * 3 * 3)]).reshape(2, 3, 3, 4)
    z = q.codebook.detach()[ids].reshape(2, 3, 3, 24).movedim(-1, 1) + 1e-3 * torch.randn(2, 24, 3, 3)
    out = q(z)
    assert torch.equal(out.indices, ids)
    assert all(len(set(v.tolist())) == 4 for v in out.indices.reshape(-1, 4))
    # each chunk is quantised independently with the same codebook as a 1-channel VQ would
    single = make(channels=1, codebook_size=32, dim=6)
    single.load_state_dict(q.state_dict())
    for c in range(4):
        assert torch.equal(single(z[:, 6 * c:6 * (c + 1)]).indices, out.indices[..., c])


# ---- nearest code ----------------------------------------------------------------------------
@pytest.mark.parametrize("opts", [{}, {"l2_norm": True}, {"codebook_dim": 3}, {"codebook_dim": 3, "l2_norm": True}])
def test_nearest_code_matches_bruteforce(opts):
    torch.manual_seed(2)
    q = make(codebook_size=50, dim=8, channels=2, distance_chunk=13, **opts)
    q.codebook.data.normal_()
    z = torch.randn(3, 16, 7, 5)
    out = q(z)
    h, e = code_space(q, flat_chunks(z, 8))
    d = torch.cdist(h.double(), e.double()) ** 2
    ref = d.argmin(-1)
    got = out.indices.reshape(-1)
    # identical up to float near-ties: the chosen code is always (numerically) the closest
    assert (got == ref).float().mean() > 0.99
    torch.testing.assert_close(d.gather(1, got[:, None]), d.min(-1, keepdim=True).values, atol=1e-5, rtol=0)
    codes = e[got]
    if q.cfg.codebook_dim is not None:
        codes = codes @ q.out_proj.weight.detach().t() + q.out_proj.bias.detach()
    torch.testing.assert_close(out.z_q.detach(), codes.reshape(3, 7, 5, 16).movedim(-1, 1))


def test_chunked_equals_unchunked():
    torch.manual_seed(3)
    kw = dict(codebook_size=40, dim=4, codebook_dim=3, l2_norm=True, entropy_weight=0.05, entropy_temperature=0.3)
    small, big = make(distance_chunk=7, **kw), make(distance_chunk=10**6, **kw)
    big.load_state_dict(small.state_dict())
    z = torch.randn(2, 4, 9, 11)
    results = []
    for q in (small, big):
        zz = z.clone().requires_grad_()
        out = q(zz)
        (out.loss + out.z_q.square().sum()).backward()
        results.append((out, zz.grad, q.codebook.grad, q.in_proj.weight.grad))
    (a, *ga), (b, *gb) = results
    assert torch.equal(a.indices, b.indices)
    torch.testing.assert_close(a.loss, b.loss)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y)


# ---- straight-through and losses -------------------------------------------------------------
def test_straight_through_and_loss_values():
    torch.manual_seed(4)
    beta = 0.4
    q = make(codebook_size=20, dim=5, beta=beta)
    q.codebook.data.normal_()
    z = torch.randn(3, 5, 8, requires_grad=True)
    out = q(z)
    x = flat_chunks(z.detach(), 5)
    e = q.codebook.detach()[out.indices.reshape(-1)]
    mse = (x - e).square().mean()
    torch.testing.assert_close(out.loss, (1 + beta) * mse)

    # z_q passes gradients straight through to the encoder output
    (gz,) = torch.autograd.grad(out.z_q.mul(torch.arange(120.).reshape(3, 5, 8)).sum(), z, retain_graph=True)
    torch.testing.assert_close(gz, torch.arange(120.).reshape(3, 5, 8))
    # the loss: commitment (scaled by beta) reaches z, codebook loss reaches the codebook
    gz, ge = torch.autograd.grad(out.loss, [z, q.codebook])
    n = x.numel()
    want_z = (beta * 2 * (x - e) / n).reshape(3, 8, 5).movedim(-1, 1)
    torch.testing.assert_close(gz, want_z)
    want_e = torch.zeros_like(q.codebook).index_add_(0, out.indices.reshape(-1), 2 * (e - x) / n)
    torch.testing.assert_close(ge, want_e)
    assert ge.abs().sum() > 0


# ---- entropy regulariser ---------------------------------------------------------------------
def test_entropy_term_value():
    torch.manual_seed(5)
    gamma, temp = 0.3, 0.7
    with_ent = make(codebook_size=12, dim=3, entropy_weight=gamma, entropy_temperature=temp, distance_chunk=5)
    without = make(codebook_size=12, dim=3)
    with_ent.codebook.data.normal_()
    without.load_state_dict(with_ent.state_dict())
    z = torch.randn(2, 3, 4, 5)
    x = flat_chunks(z, 3)
    p = torch.softmax(-torch.cdist(x.double(), with_ent.codebook.detach().double()) ** 2 / temp, -1)

    def entropy(pm):
        return -(pm * pm.log()).sum()

    diff = with_ent(z).loss - without(z).loss
    torch.testing.assert_close(diff.double(), -gamma * entropy(p.mean(0)), atol=1e-5, rtol=1e-5)
    # masked positions are left out of the soft usage too
    mask = torch.rand(2, 4, 5) > 0.5
    diff = with_ent(z, mask).loss - without(z, mask).loss
    torch.testing.assert_close(diff.double(), -gamma * entropy(p[mask.reshape(-1)].mean(0)), atol=1e-5, rtol=1e-5)
    # only in training mode
    with_ent.eval()
    torch.testing.assert_close(with_ent(z).loss, without(z).loss)


def train_usage(gamma: float, seed: int) -> float:
    """Usage after a tiny VQ autoencoder learns 2D points around 6 centres (64 codes, Adam)."""
    torch.manual_seed(seed)
    centres = torch.randn(6, 2) * 3
    data = centres[torch.randint(6, (512,))] + 0.3 * torch.randn(512, 2)
    # Latents here are O(3), so squared distances are O(10): temperature 1 suits this scale (the
    # default 0.01 suits trained image latents and is covered in test_image_tokenizer.py).
    return fit_usage(lambda: make(codebook_size=64, dim=4, entropy_weight=gamma, entropy_temperature=1.0),
                     data, dim=4, steps=200)


@pytest.mark.parametrize("seed", [0, 1])
def test_entropy_regulariser_raises_usage(seed):
    base, reg = train_usage(0.0, seed), train_usage(0.1, seed)
    assert reg > base + 0.15, (base, reg)


# ---- dead-code restart -----------------------------------------------------------------------
@pytest.mark.parametrize("opts", [{}, {"codebook_dim": 3, "l2_norm": True}])
def test_dead_code_restart(opts):
    torch.manual_seed(6)
    q = make(codebook_size=32, dim=4, restart_dead_codes=True, dead_code_threshold=0.5, usage_decay=0.5, **opts)
    q.codebook.data[:2] = torch.randn(2, q.code_dim)
    q.codebook.data[2:] = 100.0   # identical and far away: at most one of them (id 2) is ever chosen
    assert "usage_ema" in q.state_dict()
    z = torch.randn(4, 4, 16)
    h, _ = code_space(q, flat_chunks(z, 4))

    q.eval()   # eval: no bookkeeping, no restarts
    before = {k: v.clone() for k, v in q.state_dict().items()}
    usage0 = float(q(z).stats["usage"])
    assert usage0 <= 3 / 32 + 1e-6
    for k, v in q.state_dict().items():
        assert torch.equal(v, before[k]), k

    q.train()
    restarted = [float(q(z).stats["restarted"]) for _ in range(3)]
    assert sum(restarted) >= 25
    moved = (q.codebook.detach() - before["codebook"]).abs().sum(-1) > 0
    assert moved.sum() == sum(restarted)
    # restarted codes are latent vectors of the batch, in code space (projected / normalised)
    err = (q.codebook.detach()[moved][:, None] - h[None]).abs().amax(-1).min(-1).values
    assert err.max() < 1e-6
    assert not torch.equal(q.usage_ema, before["usage_ema"])
    q.eval()
    assert float(q(z).stats["usage"]) > usage0 + 0.4

    # a frozen codebook is left alone even in training mode
    frozen = q.codebook.detach().clone()
    q.train()
    q.codebook.requires_grad_(False)
    q.usage_ema.zero_()
    assert float(q(z).stats["restarted"]) == 0 and torch.equal(q.codebook, frozen)

    # reproducible with the global seed
    def rerun():
        torch.manual_seed(7)
        r = make(codebook_size=32, dim=4, restart_dead_codes=True, dead_code_threshold=0.5, usage_decay=0.5, **opts)
        r.load_state_dict(before)
        for _ in range(3):
            r(z)
        return r.codebook.detach().clone()
    assert torch.equal(rerun(), rerun())


def test_restart_during_forward_leaves_this_steps_gradients_intact():
    """The restart writes the codebook in place after forward; backward must still see the codes
    that forward used (same gradients as a twin that does not restart)."""
    torch.manual_seed(11)
    kw = dict(codebook_size=16, dim=4, codebook_dim=3, l2_norm=True, entropy_weight=0.1)
    a, b = make(restart_dead_codes=True, **kw), make(**kw)
    a.codebook.data.normal_()
    b.load_state_dict(a.state_dict())
    a.usage_ema.zero_()   # every code counts as dead now
    z = torch.randn(2, 4, 20)
    out_a, out_b = a(z), b(z)
    assert float(out_a.stats["restarted"]) == 16
    assert not torch.equal(a.codebook, b.codebook)
    ga = torch.autograd.grad(out_a.loss + out_a.z_q.sum(), [a.codebook, a.in_proj.weight])
    gb = torch.autograd.grad(out_b.loss + out_b.z_q.sum(), [b.codebook, b.in_proj.weight])
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y)


# ---- scale and precision ---------------------------------------------------------------------
def test_big_factorised_codebook():
    torch.manual_seed(8)
    q = make(codebook_size=16384, dim=16, codebook_dim=8, l2_norm=True, entropy_weight=0.01,
             restart_dead_codes=True, distance_chunk=1024)
    z = torch.randn(4, 16, 32, 32, requires_grad=True)   # 4096 latent vectors
    t0 = time.perf_counter()
    out = q(z)
    (out.loss + out.z_q.square().mean()).backward()
    print(f"16384 x 8 codebook, 4096 vectors, fwd+bwd: {time.perf_counter() - t0:.2f}s")
    assert out.indices.shape == (4, 32, 32)
    assert out.indices.min() >= 0 and out.indices.max() < 16384
    assert torch.isfinite(z.grad).all() and q.codebook.grad.abs().sum() > 0
    assert torch.isfinite(out.loss) and 0 < float(out.stats["usage"]) <= 4096 / 16384


@pytest.mark.parametrize("opts", [{}, {"codebook_dim": 3, "l2_norm": True, "channels": 2}])
def test_bf16_autocast_matches_fp32(opts):
    torch.manual_seed(9)
    q = make(codebook_size=64, dim=8, entropy_weight=0.01, **opts)
    q.codebook.data.normal_()
    z = torch.randn(2, q.dim, 6, 6)
    ref = q(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(z)
        codes = q.indices_to_codes(out.indices)
    assert out.z_q.dtype == out.loss.dtype == codes.dtype == torch.float32
    out.loss.backward()   # the checkpointed entropy chunks recompute in float32 too
    assert q.codebook.grad.dtype == torch.float32 and torch.isfinite(q.codebook.grad).all()
    assert torch.equal(out.indices, ref.indices)
    torch.testing.assert_close(out.z_q, ref.z_q)


def test_ids_and_mask_validation():
    torch.manual_seed(10)
    q = make(codebook_size=16, dim=2, channels=2)
    q.codebook.data.normal_()
    with pytest.raises(ValueError):
        q.indices_to_codes(torch.tensor([[[0, 16]]]))
    with pytest.raises(ValueError):
        q.indices_to_codes(torch.tensor([[[-1, 0]]]))
    with pytest.raises(ValueError):
        q.indices_to_codes(torch.zeros(1, 3, 3, dtype=torch.long))   # needs a trailing 2
    z = torch.randn(2, 4, 10)
    with pytest.raises(ValueError):
        q(z, torch.ones(2, 5))
    # usage over unmasked positions only (both chunks of a kept position count)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, :3] = True
    out = q(z, mask)
    kept = out.indices[mask].reshape(-1)
    assert float(out.stats["usage"]) == pytest.approx(kept.unique().numel() / 16)
