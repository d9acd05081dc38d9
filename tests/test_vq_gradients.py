"""The gradient estimators of model.quantizer.gradient (quantizers/estimators.py), for VQ and SimVQ:
the rotation trick against its formula (a 2-D case by hand, and float64 autograd through the explicit
formula with l2_norm, codebook_dim and channels), index backpropagation against (hard - sg(soft) +
soft) @ C (every code gets a gradient; chunked == unchunked; no (N, K) tensor kept for backward),
forward values identical to straight-through, ids -> codes -> ids and indices(z) == forward's with
each, gradient reaching the encoder, bf16 autocast, the config refusing what cannot work, and the
default left as it was."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vqkit.config import ConfigError, VQConfig, load_config
from vqkit.config.quantizer_schema import GRADIENTS, SimVQConfig
from vqkit.quantizers import build_quantizer
from vqkit.quantizers.estimators import pass_gradient, rotation

pytestmark = pytest.mark.usefixtures("single_thread")   # see conftest.py

KINDS = {"vq": VQConfig, "simvq": SimVQConfig}


def make(kind: str = "vq", **kw):
    kw.setdefault("codebook_size", 32)
    kw.setdefault("dim", 4)
    q = build_quantizer(KINDS[kind](**kw))
    if kind == "vq":
        q.codebook.data.normal_()   # taming's init puts every code near 0: spread them out
    return q


def grad_of(q, z: torch.Tensor, weights: torch.Tensor, with_loss: bool = False):
    """(output, dL/dz, dL/d(what trains the codes)) for L = sum(z_q * weights) (+ the quantiser loss)."""
    z = z.clone().requires_grad_()
    out = q(z)
    total = (out.z_q * weights).sum() + (out.loss if with_loss else 0)
    trains = q.codebook if isinstance(q.cfg, VQConfig) else q.codebook_proj.weight
    gz, gc = torch.autograd.grad(total, [z, trains], allow_unused=True)   # None: no gradient reaches it
    return out, gz, torch.zeros_like(trains) if gc is None else gc


# ---- rotation trick ----------------------------------------------------------------------------
def test_rotation_by_hand_in_2d():
    """h = (1, 0), q = (0, 2): R is the quarter turn taking x to y, scale |q|/|h| = 2, so an incoming
    gradient g = (1, 0) leaves as 2 R^T g = (0, -2); straight-through would pass (1, 0)."""
    h = torch.tensor([[1.0, 0.0]], requires_grad=True)
    q = torch.tensor([[0.0, 2.0]])
    zq = rotation(h, q)
    assert torch.equal(zq, q)
    (g,) = torch.autograd.grad((zq * torch.tensor([[1.0, 0.0]])).sum(), h)
    torch.testing.assert_close(g, torch.tensor([[0.0, -2.0]]))
    # opposite directions: r = 0 and R = I - 2uu^T (a reflection still taking u to v); scale 3
    h2 = torch.tensor([[1.0, 0.0]], requires_grad=True)
    (g2,) = torch.autograd.grad((rotation(h2, torch.tensor([[-3.0, 0.0]])) * torch.tensor([[1.0, 1.0]])).sum(), h2)
    torch.testing.assert_close(g2, torch.tensor([[-3.0, 3.0]]))
    # a zero latent has no direction: its gradient passes as straight-through's
    h0 = torch.zeros(1, 2, requires_grad=True)
    (g0,) = torch.autograd.grad((rotation(h0, q) * torch.tensor([[1.0, 5.0]])).sum(), h0)
    torch.testing.assert_close(g0, torch.tensor([[1.0, 5.0]]))


def rotated_reference(h: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The paper's formula written out, rotation and scale detached (float64 in the tests)."""
    u = (h / h.norm(dim=-1, keepdim=True)).detach()
    v = (q / q.norm(dim=-1, keepdim=True)).detach()
    r = ((u + v) / (u + v).norm(dim=-1, keepdim=True)).detach()
    scale = (q.norm(dim=-1, keepdim=True) / h.norm(dim=-1, keepdim=True)).detach()
    return scale * (h - 2 * (h * r).sum(-1, keepdim=True) * r + 2 * (h * u).sum(-1, keepdim=True) * v)


@pytest.mark.parametrize("opts", [{}, {"l2_norm": True}, {"codebook_dim": 3}, {"codebook_dim": 3, "l2_norm": True, "channels": 2}])
def test_rotation_value_is_straight_through_and_gradient_is_the_rotated_one(opts):
    torch.manual_seed(0)
    st, rot = make(dim=6, **opts), make(dim=6, gradient="rotation", **opts)
    rot.load_state_dict(st.state_dict())
    z = torch.randn(2, st.dim, 5)
    w = torch.randn(2, st.dim, 5)
    out_st, gz_st, _ = grad_of(st, z, w)
    out_rot, gz_rot, gc_rot = grad_of(rot, z, w)
    assert torch.equal(out_rot.indices, out_st.indices)
    torch.testing.assert_close(out_rot.z_q, out_st.z_q, atol=1e-5, rtol=0)
    assert torch.equal(rot.indices_to_codes(out_rot.indices), out_rot.z_q)   # exactly the codes
    assert (gz_rot - gz_st).abs().max() > 1e-2                              # but another gradient
    assert gc_rot.abs().sum() == 0   # as straight-through: only the codebook loss trains the codes

    # reference: the whole module in float64, with the explicit formula where the lookup is
    zz = z.double().requires_grad_()
    x = zz.movedim(1, -1).reshape(-1, 6)
    e = rot.codebook.detach().double()
    h = x
    if rot.in_proj is not None:
        h = h @ rot.in_proj.weight.detach().double().t() + rot.in_proj.bias.detach().double()
    if rot.cfg.l2_norm:
        h, e = F.normalize(h, dim=-1), F.normalize(e, dim=-1)
    y = rotated_reference(h, e[out_rot.indices.reshape(-1)])
    if rot.out_proj is not None:
        y = y @ rot.out_proj.weight.detach().double().t() + rot.out_proj.bias.detach().double()
    zq_ref = y.reshape(2, 5, st.dim).movedim(-1, 1)
    (want,) = torch.autograd.grad((zq_ref * w.double()).sum(), zz)
    torch.testing.assert_close(gz_rot.double(), want, atol=1e-5, rtol=1e-4)


# ---- index backpropagation (IBQ) ---------------------------------------------------------------
@pytest.mark.parametrize("kind", ["vq", "simvq"])
def test_index_backprop_gives_every_code_a_gradient(kind):
    torch.manual_seed(1)
    st, ibq = make(kind, codebook_size=64, dim=4), make(kind, codebook_size=64, dim=4, gradient="index_backprop")
    ibq.load_state_dict(st.state_dict())
    z = torch.randn(1, 4, 10)        # 10 latents: at most 10 of the 64 codes are chosen
    w = torch.randn(1, 4, 10)
    out_st, gz_st, gc_st = grad_of(st, z, w, with_loss=True)
    out_ibq, gz_ibq, gc_ibq = grad_of(ibq, z, w, with_loss=True)
    assert torch.equal(out_ibq.indices, out_st.indices)
    assert torch.equal(out_ibq.z_q, out_st.z_q)                       # the value is exactly the codes
    assert torch.isfinite(gz_ibq).all() and (gz_ibq - gz_st).abs().max() > 1e-4
    if kind == "vq":   # the codebook's rows
        used = torch.zeros(64, dtype=torch.bool)
        used[out_st.indices.reshape(-1)] = True
        assert used.sum() <= 10 and (gc_st[~used] == 0).all()   # straight-through: unused codes get nothing
        assert (gc_ibq.abs().sum(-1) > 0).all()                  # IBQ: all 64 rows
    else:   # SimVQ trains W, which every code depends on, with either estimator
        assert gc_st.abs().sum() > 0 and (gc_ibq - gc_st).abs().max() > 0


@pytest.mark.parametrize("opts", [{}, {"l2_norm": True, "codebook_dim": 3, "channels": 2}])
def test_index_backprop_matches_its_formula(opts):
    """(hard - sg(soft) + soft) @ C with soft = softmax(-||h - c_k||^2) over all codes, all in
    float64: the same gradient on z and on the codebook (and the in/out projections)."""
    torch.manual_seed(2)
    q = make(codebook_size=24, dim=5, gradient="index_backprop", distance_chunk=7, **opts)
    z = torch.randn(2, q.dim, 6)
    w = torch.randn(2, q.dim, 6)
    out, gz, gc = grad_of(q, z, w)

    zz = z.double().requires_grad_()
    c = q.codebook.detach().double().requires_grad_()
    x = zz.movedim(1, -1).reshape(-1, 5)
    h, e = x, c
    if q.in_proj is not None:
        h = h @ q.in_proj.weight.detach().double().t() + q.in_proj.bias.detach().double()
    if q.cfg.l2_norm:
        h, e = F.normalize(h, dim=-1), F.normalize(e, dim=-1)
    soft = torch.softmax(-torch.cdist(h, e) ** 2, dim=-1)
    hard = F.one_hot(out.indices.reshape(-1), 24).double()
    y = (hard - soft.detach() + soft) @ e
    if q.out_proj is not None:
        y = y @ q.out_proj.weight.detach().double().t() + q.out_proj.bias.detach().double()
    zq_ref = y.reshape(2, 6, q.dim).movedim(-1, 1)
    torch.testing.assert_close(out.z_q.double(), zq_ref.detach(), atol=1e-5, rtol=0)
    want_z, want_c = torch.autograd.grad((zq_ref * w.double()).sum(), [zz, c])
    torch.testing.assert_close(gz.double(), want_z, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(gc.double(), want_c, atol=1e-5, rtol=1e-4)


def test_index_backprop_chunked_equals_unchunked():
    torch.manual_seed(3)
    kw = dict(codebook_size=40, dim=4, codebook_dim=3, gradient="index_backprop", entropy_weight=0.05)
    small, big = make(distance_chunk=7, **kw), make(distance_chunk=10**6, **kw)
    big.load_state_dict(small.state_dict())
    z, w = torch.randn(2, 4, 9, 11), torch.randn(2, 4, 9, 11)
    (a, *ga), (b, *gb) = grad_of(small, z, w, True), grad_of(big, z, w, True)
    assert torch.equal(a.indices, b.indices)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y)


def test_index_backprop_keeps_no_latents_by_codes_tensor():
    """16384 codes, 4096 latents: what autograd keeps for backward (distinct storages) stays far below
    one (N, K) float32 matrix, 256 MiB here; the per-chunk softmax is rebuilt during backward (without
    the checkpointing it keeps a little over 256 MiB)."""
    torch.manual_seed(4)
    n, k = 4096, 16384
    q = make(codebook_size=k, dim=16, codebook_dim=8, l2_norm=True, gradient="index_backprop", distance_chunk=512)
    z = torch.randn(4, 16, 32, 32, requires_grad=True)
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = q(z)
    (out.z_q * torch.randn_like(out.z_q)).sum().add(out.loss).backward()
    assert sum(kept.values()) < n * k * 4 / 64, (sum(kept.values()), n * k * 4)
    assert torch.isfinite(z.grad).all() and (q.codebook.grad.abs().sum(-1) > 0).float().mean() > 0.99


# ---- every estimator -------------------------------------------------------------------------
@pytest.mark.parametrize("gradient", GRADIENTS)
@pytest.mark.parametrize("opts", [{}, {"l2_norm": True, "channels": 2}])
def test_vq_round_trips_every_code_and_indices_are_forwards(opts, gradient):
    """ids -> codes -> ids for all 40 codes (a lookup space that is the latent space: no
    factorisation), and indices(z) == forward's ids on random latents (factorised too)."""
    torch.manual_seed(7)
    q = make(codebook_size=40, dim=5, gradient=gradient, **opts)
    c = q.channels
    ids = torch.stack([torch.randperm(40) for _ in range(c)], -1).reshape(1, 5, 8, c)
    ids = ids[..., 0] if c == 1 else ids
    z = q.indices_to_codes(ids)
    out = q(z)
    assert torch.equal(q.indices(z), ids) and torch.equal(out.indices, ids) and torch.equal(out.z_q, z)
    factorised = make(codebook_size=40, dim=5, codebook_dim=3, gradient=gradient, **opts)
    for m in (q, factorised):
        zr = torch.randn(2, m.dim, 4, 3)
        assert torch.equal(m.indices(zr), m(zr).indices)


@pytest.mark.parametrize("kind", ["vq", "simvq"])
@pytest.mark.parametrize("gradient", GRADIENTS)
def test_gradient_reaches_the_encoder(kind, gradient):
    """Through z_q alone (no commitment loss): each estimator passes a gradient to the encoder."""
    torch.manual_seed(5)
    enc = torch.nn.Conv1d(3, 8, 1)
    q = make(kind, codebook_size=16, dim=4, channels=2, gradient=gradient)
    out = q(enc(torch.randn(2, 3, 12)))
    (out.z_q * torch.randn_like(out.z_q)).sum().backward()
    assert enc.weight.grad is not None and enc.weight.grad.abs().sum() > 0
    assert torch.isfinite(enc.weight.grad).all()


@pytest.mark.parametrize("kind", ["vq", "simvq"])
@pytest.mark.parametrize("gradient", ["rotation", "index_backprop"])
def test_bf16_autocast_keeps_float32_and_the_indices(kind, gradient):
    torch.manual_seed(6)
    q = make(kind, codebook_size=64, dim=8, channels=2, gradient=gradient)
    z = torch.randn(2, q.dim, 6, 6)
    ref = q(z)
    zz = z.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(zz)
        codes = q.indices_to_codes(out.indices)
    assert out.z_q.dtype == out.loss.dtype == codes.dtype == torch.float32
    assert torch.equal(out.indices, ref.indices)
    torch.testing.assert_close(out.z_q, ref.z_q)
    (out.loss + out.z_q.square().sum()).backward()   # IBQ's checkpointed chunks recompute in float32
    assert zz.grad.dtype == torch.float32 and torch.isfinite(zz.grad).all()


def test_estimator_names_are_the_configs():
    h, q = torch.randn(5, 3), torch.randn(5, 3)
    for name in GRADIENTS:
        assert torch.equal(pass_gradient(name, h, q, q, 2), q)
    with pytest.raises(ValueError, match="unknown gradient estimator 'sign'"):
        pass_gradient("sign", h, q, q, 2)


# ---- config ---------------------------------------------------------------------------------
def test_the_default_is_straight_through_on_every_codebook_preset():
    assert VQConfig().gradient == SimVQConfig().gradient == "straight_through"
    for preset in ("vqgan", "vqgan-l2", "movq", "seqgan"):
        assert load_config(preset=preset).model.quantizer.gradient == "straight_through"
    assert load_config(preset="vqgan-l2", overrides=["model.quantizer.gradient=index_backprop"]).model.quantizer.gradient \
        == "index_backprop"


@pytest.mark.parametrize("overrides, message", [
    (["model.quantizer.gradient=rotate"], r"model.quantizer.gradient: must be one of 'straight_through', 'rotation'"),
    (["model.quantizer.gradient=rotation", "model.quantizer.codebook_dim=1"],
     r"model.quantizer.gradient: 'rotation' needs codes of >= 2 dimensions, got 1"),
    (["model.quantizer.gradient=rotation", "model.quantizer.dim=1"], r"model.quantizer.gradient: 'rotation' needs"),
    (["model.quantizer.kind=simvq", "model.quantizer.gradient=rotation", "model.quantizer.dim=1"],
     r"model.quantizer.gradient: 'rotation' needs"),
    (["model.quantizer.kind=simvq", "model.quantizer.gradient=ibq"], r"model.quantizer.gradient: must be one of"),
])
def test_combinations_that_cannot_work_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(preset="vqgan", overrides=overrides)
    # a factorised lookup in >= 2 dims rotates there, whatever dim is
    assert load_config(preset="vqgan", overrides=["model.quantizer.gradient=rotation", "model.quantizer.dim=1",
                                                  "model.quantizer.codebook_dim=2"]).model.quantizer.dim == 1
