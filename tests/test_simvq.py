"""SimVQ (model.quantizer.kind=simvq): ids -> codes -> ids for every code, indices(z) == forward's,
the frozen codebook C and the learned map W (W alone trains, and moves every code), loss values by
hand, bf16 autocast, usage against plain VQ in a tiny optimisation (with IBQ too), usage statistics of
the global batch under two gloo processes, and a tokenizer from the vqgan preset that trains, saves,
loads, encodes and decodes."""
from __future__ import annotations

import pytest
import torch

from quantizer_helpers import fit_usage
from vqkit.config import SimVQConfig, VQConfig, load_config
from vqkit.models.tokenizer import Tokenizer
from vqkit.quantizers import SimVQ, build_quantizer

pytestmark = pytest.mark.usefixtures("single_thread")   # see conftest.py


def make(**kw) -> SimVQ:
    kw.setdefault("codebook_size", 32)
    kw.setdefault("dim", 4)
    q = build_quantizer(SimVQConfig(**kw))
    assert isinstance(q, SimVQ)
    return q


def codes(q: SimVQ) -> torch.Tensor:
    """C W^T from the raw tensors."""
    return q.codebook @ q.codebook_proj.weight.detach().t()


# ---- ids and codes ---------------------------------------------------------------------------
@pytest.mark.parametrize("gradient", ["straight_through", "rotation", "index_backprop"])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_code_round_trips(channels, gradient):
    torch.manual_seed(0)
    k = 48
    q = make(codebook_size=k, dim=6, channels=channels, gradient=gradient)
    # every id once in each channel (a different order per channel), on a 2-D grid of 6 x 8
    ids = torch.stack([torch.randperm(k) for _ in range(channels)], -1).reshape(1, 6, 8, channels)
    ids = ids[..., 0] if channels == 1 else ids
    z = q.indices_to_codes(ids)
    assert z.shape == (1, 6 * channels, 6, 8)
    assert torch.equal(q.indices(z), ids)
    out = q(z)
    assert torch.equal(out.indices, ids) and torch.equal(out.z_q, z)
    assert float(out.stats["usage"]) == 1.0
    torch.testing.assert_close(out.loss, torch.tensor(0.0), atol=1e-10, rtol=0)


@pytest.mark.parametrize("spatial", [(12,), (5, 6)])
def test_indices_equal_forwards_and_change_nothing(spatial):
    torch.manual_seed(1)
    q = make(codebook_size=64, dim=5, channels=2, distance_chunk=7)
    z = torch.randn(3, 10, *spatial) * 0.7
    before = {k: v.clone() for k, v in q.state_dict().items()}
    for training in (True, False):
        q.train(training)
        out = q(z)
        assert torch.equal(q.indices(z), out.indices)
        assert torch.equal(q.indices_to_codes(out.indices), out.z_q)   # bit-exact
        assert out.indices.shape == (3, *spatial, 2)
    for k, v in q.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(ValueError, match=r"SimVQ expects \(B, 10, ...\) latents"):
        q(torch.randn(3, 9, *spatial))
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 64\)"):
        q.indices_to_codes(torch.full((1, 2, 2), 64))


def test_nearest_code_and_loss_by_hand():
    torch.manual_seed(2)
    beta = 0.4
    q = make(codebook_size=20, dim=5, beta=beta, distance_chunk=3)
    z = torch.randn(2, 5, 7, requires_grad=True)
    out = q(z)
    x = z.detach().movedim(1, -1).reshape(-1, 5)
    e = codes(q)
    d = torch.cdist(x.double(), e.double()) ** 2
    assert torch.equal(out.indices.reshape(-1), d.argmin(-1))
    torch.testing.assert_close(out.loss, (1 + beta) * (x - e[out.indices.reshape(-1)]).square().mean())
    # straight-through to the encoder; the codebook loss trains W (and reaches no frozen code)
    (gz,) = torch.autograd.grad(out.z_q.sum(), z, retain_graph=True)
    torch.testing.assert_close(gz, torch.ones_like(z))
    (gw,) = torch.autograd.grad(out.loss, q.codebook_proj.weight)
    w = q.codebook_proj.weight.detach().clone().requires_grad_()
    ref = (q.codebook[out.indices.reshape(-1)] @ w.t() - x).square().mean()   # the codebook loss
    torch.testing.assert_close(gw, torch.autograd.grad(ref, w)[0])


# ---- the frozen codebook and W ----------------------------------------------------------------
def train_steps(q, x: torch.Tensor, weight_decay: float, steps: int = 5) -> set[int]:
    """A few AdamW steps of a 1x1-conv encoder and the quantiser on x; the ids chosen on the way."""
    enc = torch.nn.Conv1d(x.shape[1], q.dim, 1)
    opt = torch.optim.AdamW([*enc.parameters(), *q.parameters()], lr=1e-2, weight_decay=weight_decay)
    used: set[int] = set()
    for _ in range(steps):
        out = q(enc(x))
        used |= set(out.indices.reshape(-1).tolist())
        opt.zero_grad()
        (out.loss + out.z_q.square().mean()).backward()
        opt.step()
    return used


def test_the_codebook_is_frozen_and_w_trains_every_code():
    torch.manual_seed(3)
    q = make(codebook_size=256, dim=8)
    assert [n for n, _ in q.named_parameters()] == ["codebook_proj.weight"]
    assert [n for n, _ in q.named_buffers()] == ["codebook"] and "codebook" in q.state_dict()
    assert q.codebook_proj.bias is None and q.codebook_proj.weight.shape == (8, 8)
    assert not q.codebook.requires_grad

    x = torch.randn(2, 3, 16)   # 32 latents: most of the 256 codes are never chosen
    out = q(torch.randn(2, 8, 16))
    out.loss.backward()
    assert q.codebook.grad is None and q.codebook_proj.weight.grad.abs().sum() > 0   # grad on W only
    q.codebook_proj.weight.grad = None

    c0, w0, e0 = q.codebook.clone(), q.codebook_proj.weight.detach().clone(), codes(q)
    used = train_steps(q, x, weight_decay=0.1)   # weight decay reaches W only, not C
    assert len(used) < 128
    assert torch.equal(q.codebook, c0)                       # C: bit for bit its initialisation
    assert not torch.equal(q.codebook_proj.weight, w0)       # W learned
    assert ((codes(q) - e0).abs().amax(-1) > 0).all()        # every code moved, used or not

    # plain VQ (no weight decay, which would shrink every code): the codes never chosen stay put
    torch.manual_seed(3)
    vq = build_quantizer(VQConfig(codebook_size=256, dim=8))
    vq.codebook.data.normal_()
    e0 = vq.codebook.detach().clone()
    train_steps(vq, x, weight_decay=0.0)
    assert ((vq.codebook.detach() - e0).abs().amax(-1) > 0).float().mean() < 0.5


def test_a_saved_quantiser_reproduces_its_codes():
    torch.manual_seed(4)
    a = make(codebook_size=40, dim=6)
    torch.manual_seed(5)
    b = make(codebook_size=40, dim=6)
    assert not torch.equal(a.codebook, b.codebook)
    b.load_state_dict(a.state_dict())
    ids = torch.randint(40, (2, 9))
    assert torch.equal(a.indices_to_codes(ids), b.indices_to_codes(ids))


def test_bf16_autocast_matches_fp32():
    torch.manual_seed(6)
    q = make(codebook_size=64, dim=8, channels=2)
    z = torch.randn(2, 16, 6, 6)
    ref = q(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(z)
        back = q.indices_to_codes(out.indices)
    assert out.z_q.dtype == out.loss.dtype == back.dtype == torch.float32
    assert torch.equal(out.indices, ref.indices)
    torch.testing.assert_close(out.z_q, ref.z_q)
    out.loss.backward()
    assert q.codebook_proj.weight.grad.dtype == torch.float32


# ---- codebook usage in a tiny optimisation ------------------------------------------------------
def train_usage(cfg, seed: int) -> float:
    """Held-out usage after a linear autoencoder with a 128-code quantiser learns 16-D Gaussian
    data through an 8-D latent (150 Adam steps)."""
    held_out = torch.randn(512, 16, generator=torch.Generator().manual_seed(1000 + seed))
    torch.manual_seed(seed)
    return fit_usage(lambda: build_quantizer(cfg), torch.randn(512, 16), dim=8, steps=150, held_out=held_out)


@pytest.mark.parametrize("seed", [0, 1])
def test_simvq_and_ibq_keep_more_codes_alive_than_vq(seed):
    usage = {name: train_usage(cfg, seed) for name, cfg in [
        ("vq", VQConfig(codebook_size=128, dim=8)),
        ("vq+index_backprop", VQConfig(codebook_size=128, dim=8, gradient="index_backprop")),
        ("simvq", SimVQConfig(codebook_size=128, dim=8)),
    ]}
    print(f"seed {seed}: held-out usage of 128 codes", usage)
    assert usage["simvq"] > usage["vq"] + 0.15, usage
    assert usage["vq+index_backprop"] > usage["vq"] + 0.15, usage


# ---- dead-code restart ------------------------------------------------------------------------
def test_restart_reseeds_rows_of_c_so_that_dead_codes_equal_batch_latents():
    torch.manual_seed(3)
    q = make(codebook_size=32, dim=4, restart_dead_codes=True, dead_code_threshold=0.5, usage_decay=0.5)
    assert "usage_ema" in q.state_dict() and "usage_ema" not in make().state_dict()
    q.codebook[2:] = 50.0   # identical and far away: at most one of them is ever chosen
    z = torch.randn(4, 4, 16)
    h = z.permute(0, 2, 1).reshape(-1, 4)
    w_before = q.codebook_proj.weight.detach().clone()
    q.eval()
    usage0 = float(q(z).stats["usage"])
    assert usage0 <= 3 / 32 + 1e-6
    before = q.codebook.clone()
    q.train()
    restarted = sum(float(q(z).stats["restarted"]) for _ in range(3))
    assert restarted >= 25
    moved = (q.codebook - before).abs().sum(-1) > 0
    assert moved.sum() == restarted
    assert torch.equal(q.codebook_proj.weight, w_before)   # W is the optimiser's alone
    # a restarted code C_k W^T is a latent of the batch
    err = (codes(q)[moved][:, None] - h[None]).abs().amax(-1).min(-1).values
    assert err.max() < 1e-4, err.max()
    q.eval()
    assert float(q(z).stats["usage"]) > usage0 + 0.4
    # with W frozen, C is left alone too
    q.train()
    q.codebook_proj.weight.requires_grad_(False)
    q.usage_ema.zero_()
    frozen = q.codebook.clone()
    assert float(q(z).stats["restarted"]) == 0 and torch.equal(q.codebook, frozen)


def test_a_restart_during_forward_leaves_this_steps_gradient_of_w_intact():
    """The restart rewrites C after forward; W's gradient must still be the one of the codes
    forward used (a twin without restarts gives the same)."""
    torch.manual_seed(4)
    a, b = make(codebook_size=16, dim=4, restart_dead_codes=True), make(codebook_size=16, dim=4)
    b.load_state_dict({k: v for k, v in a.state_dict().items() if k != "usage_ema"})
    a.usage_ema.zero_()   # every code counts as dead now
    z = torch.randn(2, 4, 20)
    out_a, out_b = a(z), b(z)
    assert float(out_a.stats["restarted"]) == 16 and not torch.equal(a.codebook, b.codebook)
    ga, = torch.autograd.grad(out_a.loss + out_a.z_q.sum(), [a.codebook_proj.weight])
    gb, = torch.autograd.grad(out_b.loss + out_b.z_q.sum(), [b.codebook_proj.weight])
    torch.testing.assert_close(ga, gb)


# ---- a tokenizer ------------------------------------------------------------------------------
def test_a_vqgan_tokenizer_with_simvq_trains_saves_and_round_trips(tmp_path):
    from vqkit.training.trainer import Trainer

    overrides = ["model.quantizer.kind=simvq", "model.quantizer.codebook_size=128", "model.quantizer.dim=8",
                 "model.quantizer.gradient=index_backprop", "model.backbone.channels=[16, 32]",
                 "discriminator.patch_channels=[16, 16]", "data.image_size=32", "train.batch_size=4",
                 "train.steps=3", "train.eval_clips=2", "optim.warmup_steps=1", "train.log_every=1",
                 "train.eval_every=1000", "train.save_every=1000"]
    cfg = load_config(preset="vqgan", overrides=overrides)
    assert cfg.model.quantizer == SimVQConfig(codebook_size=128, dim=8, gradient="index_backprop")
    torch.manual_seed(0)
    images = [torch.rand(3, 40, 48) * 2 - 1 for _ in range(4)]
    Trainer(cfg, tmp_path, images, log=lambda m: None, progress=False).fit()
    tok = Tokenizer.from_pretrained(tmp_path)
    assert isinstance(tok.quantizer, SimVQ) and tok.codebook_size == 128
    tokens = tok.encode(images[0])
    assert tuple(tokens.shape) == tok.token_grid(40, 48) and tokens.max() < 128
    assert tok.decode(tokens).shape == (3, 40, 48)
    # encode is forward's ids; decode(encode) equals the decoder on forward's z_q
    with torch.no_grad():
        out = tok.eval()(images[0][None])
    assert torch.equal(out.indices[0], tokens)
    torch.testing.assert_close(tok.decode(tokens), tok.denormalize(out.draft)[0], atol=1e-5, rtol=0)
