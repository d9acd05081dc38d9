"""LFQ and BSQ: index -> code -> index for every code, codes on {-1, 1}^d or the unit sphere,
straight-through gradients, the entropy terms against a brute-force softmax over all 2^d codes,
their effect on usage in a tiny training run, float32 under bf16 autocast, masks, a 2^16-code layer
without an (N, 2^16) matrix, usage and entropies of the global batch with two gloo processes, and
tokenizers (image and mel) built with them.

Expected values are computed here independently: codes bit by bit, entropies from the definition
q(c|z) = softmax_c(<z, c> / T) over the full codebook in float64.
"""
from __future__ import annotations

import json
import math
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from conftest import TINY, save_tiny_tokenizer
from vqkit.config import ConfigError, load_config
from vqkit.config import BSQConfig, LFQConfig
from vqkit.models.tokenizer import Tokenizer
from vqkit.quantizers import BSQ, LFQ, build_quantizer, usage_stats
from vqkit.quantizers.lfq import code_usage

pytestmark = pytest.mark.usefixtures("single_thread")   # see conftest.py
KINDS = {"lfq": LFQConfig, "bsq": BSQConfig}


def make(kind: str, **kw) -> LFQ:
    kw.setdefault("dim", 8)
    q = build_quantizer(KINDS[kind](**kw))
    assert type(q) is {"lfq": LFQ, "bsq": BSQ}[kind]
    return q


def all_codes(d: int, spherical: bool) -> torch.Tensor:
    """(2^d, d) float64 codes of ids 0 .. 2^d - 1, built bit by bit: bit i of the id is channel i."""
    ids = torch.arange(2 ** d)
    bits = torch.stack([(ids >> i) & 1 for i in range(d)], -1).double()
    return (2 * bits - 1) / (math.sqrt(d) if spherical else 1.0)


def on_sphere(z: torch.Tensor, spherical: bool) -> torch.Tensor:
    """(B, d, ...) -> (N, d) float64 latents as the quantiser sees them."""
    u = z.double().movedim(1, -1).reshape(-1, z.shape[1])
    return u / u.norm(dim=-1, keepdim=True) if spherical else u


# ---- codes and indices -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_every_code(kind):
    q = make(kind, dim=8)
    assert (q.dim, q.codebook_size, q.tokens_per_position) == (8, 256, 1)
    want = all_codes(8, q.spherical).float()
    ids = torch.arange(256)
    for shaped in (ids[None], ids.flip(0).reshape(2, 8, 16)):
        codes = q.indices_to_codes(shaped)                  # (B, 8, *spatial)
        assert codes.shape == (shaped.shape[0], 8, *shaped.shape[1:]) and codes.dtype == torch.float32
        torch.testing.assert_close(codes.movedim(1, -1), want[shaped], rtol=0, atol=1e-7)
        assert torch.equal(q.indices(codes), shaped)
        out = q(codes)
        assert torch.equal(out.indices, shaped) and torch.equal(out.z_q, codes)
    assert len({tuple(c) for c in want.tolist()}) == 256
    norms = want.norm(dim=-1) if q.spherical else want.abs()
    torch.testing.assert_close(norms, torch.ones_like(norms))


@pytest.mark.parametrize("kind", KINDS)
def test_forward_indices_equal_indices_and_codes_are_signs(kind):
    q = make(kind, dim=8)
    z = torch.randn(3, 8, 5, 7, generator=torch.Generator().manual_seed(0)) * 2
    out = q(z)
    assert out.indices.dtype == torch.long and out.indices.shape == (3, 5, 7)
    assert torch.equal(out.indices, q.indices(z))
    assert torch.equal(q.indices_to_codes(out.indices), out.z_q)          # bit-exact
    want_ids = sum((z[:, i] > 0).long() << i for i in range(8))
    assert torch.equal(out.indices, want_ids)
    assert torch.equal(torch.sign(out.z_q), torch.sign(z))
    if q.spherical:
        torch.testing.assert_close(out.z_q.norm(dim=1), torch.ones(3, 5, 7))
        torch.testing.assert_close(out.z_q.abs(), torch.full_like(z, 1 / math.sqrt(8)))
    else:
        assert set(out.z_q.unique().tolist()) == {-1.0, 1.0}


@pytest.mark.parametrize("kind", KINDS)
def test_straight_through_gradient_and_commitment(kind):
    torch.manual_seed(1)
    q = make(kind, dim=6, commitment_weight=0.4, entropy_weight=0.0)
    layer = torch.nn.Conv1d(3, 6, 1)
    z = layer(torch.randn(2, 3, 9))
    out = q(z)
    g = torch.randn_like(z)
    (gz,) = torch.autograd.grad((out.z_q * g).sum(), z, retain_graph=True)
    # the identity through the code, after BSQ's normalisation (whose Jacobian autograd gives here)
    (want,) = torch.autograd.grad((F.normalize(z, dim=1) * g).sum() if q.spherical else (z * g).sum(), z,
                                  retain_graph=True)
    torch.testing.assert_close(gz, want)
    u = on_sphere(z.detach(), q.spherical)
    code = q.indices_to_codes(out.indices).movedim(1, -1).reshape(-1, 6).double()
    torch.testing.assert_close(out.loss.double(), 0.4 * (u - code).square().mean(), rtol=1e-5, atol=1e-7)
    (out.loss + out.z_q.square().sum()).backward()
    assert layer.weight.grad.abs().sum() > 0          # the encoder before the quantiser learns


# ---- entropy terms -------------------------------------------------------------------------
def brute_force_entropies(u: torch.Tensor, spherical: bool, temperature: float) -> tuple[float, float, float]:
    """(mean per-sample entropy, factorised codebook entropy, exact codebook entropy) of (N, d)
    latents, from q(c|u) = softmax over all 2^d codes of <u, c> / T."""
    codes = all_codes(u.shape[1], spherical)
    q = torch.softmax(u @ codes.t() / temperature, dim=-1)             # (N, 2^d)
    per_sample = -(q * q.log()).sum(-1).mean()
    q_mean = q.mean(0)
    exact = -(q_mean * q_mean.log()).sum()
    marginals = q_mean @ (codes > 0).double()                           # P(bit i = 1) under q_mean
    factorised = -(marginals * marginals.log() + (1 - marginals) * (1 - marginals).log()).sum()
    return float(per_sample), float(factorised), float(exact)


@pytest.mark.parametrize("kind", KINDS)
def test_entropy_terms_match_brute_force_over_all_codes(kind):
    w, cw, temp = 0.3, 1.5, 0.7
    with_ent = make(kind, dim=4, entropy_weight=w, codebook_entropy_weight=cw, entropy_temperature=temp)
    without = make(kind, dim=4, entropy_weight=0.0)
    z = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(2))
    mask = torch.rand(2, 3, 5, generator=torch.Generator().manual_seed(3)) > 0.4
    for m in (None, mask):
        u = on_sphere(z, with_ent.spherical)
        per_sample, factorised, exact = brute_force_entropies(u if m is None else u[m.reshape(-1)], with_ent.spherical,
                                                              temp)
        out = with_ent(z, m)
        assert float(out.stats["per_sample_entropy"]) == pytest.approx(per_sample, rel=1e-5)
        assert float(out.stats["codebook_entropy"]) == pytest.approx(factorised, rel=1e-5)
        assert exact <= factorised + 1e-9   # the factorised entropy bounds the exact one from above
        diff = float(out.loss - without(z, m).loss)
        assert diff == pytest.approx(w * (per_sample - cw * factorised), rel=1e-5, abs=1e-6)
    with_ent.eval()   # training only
    out = with_ent(z)
    assert "codebook_entropy" not in out.stats and torch.equal(out.loss, without(z).loss)


def train_usage(kind: str, weight: float, seed: int) -> float:
    """Codebook usage after a tiny linear autoencoder learns 8-d Gaussian data around (2, ..., 2)
    through a 6-bit quantiser (64 codes, Adam, 200 steps). The offset puts most of the data on one
    side of the encoder's initial hyperplanes: few codes until something spreads them."""
    torch.manual_seed(seed)
    data = torch.randn(512, 8) + 2.0
    enc, dec = torch.nn.Linear(8, 6), torch.nn.Linear(6, 8)
    # latents here are O(1) and unnormalised at first: T = 0.1 keeps the soft bits from saturating
    q = make(kind, dim=6, entropy_weight=weight, entropy_temperature=0.1)
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-2)

    def loss() -> torch.Tensor:
        opt.zero_grad()
        out = q(enc(data).t()[None])
        value = (dec(out.z_q[0].t()) - data).square().mean() + out.loss
        value.backward()
        return value

    for _ in range(200):
        opt.step(loss)
    with torch.no_grad():
        return float(code_usage(q.indices(enc(data).t()[None]).reshape(-1), q.codebook_size)["usage"])


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("kind", KINDS)
def test_entropy_term_raises_usage(kind, seed):
    base, reg = train_usage(kind, 0.0, seed), train_usage(kind, 1.0, seed)
    assert reg > base + 0.1, (base, reg)


# ---- precision, masks, validation, scale -----------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_bf16_autocast_keeps_float32_and_indices(kind):
    q = make(kind, dim=8, entropy_weight=0.1)
    z = torch.randn(3, 8, 40, generator=torch.Generator().manual_seed(4))
    layer = torch.nn.Conv1d(8, 8, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z_bf16 = layer(z)   # a bf16 layer feeding the quantiser, and a float32 input
        outs = [q(z_bf16), q(z)]
        codes = q.indices_to_codes(outs[1].indices)
    assert z_bf16.dtype == torch.bfloat16 and codes.dtype == torch.float32
    for out, ref in zip(outs, (q(z_bf16.float()), q(z))):
        assert out.z_q.dtype == out.loss.dtype == torch.float32
        assert torch.equal(out.indices, ref.indices) and torch.equal(out.z_q, ref.z_q)
        torch.testing.assert_close(out.loss, ref.loss)


@pytest.mark.parametrize("kind", KINDS)
def test_mask_and_validation(kind):
    q = make(kind, dim=5)
    z = torch.randn(2, 5, 10, generator=torch.Generator().manual_seed(5))
    with pytest.raises(ValueError, match="mask must have shape"):
        q(z, torch.ones(2, 5))
    with pytest.raises(ValueError, match="expects"):
        q(torch.randn(2, 4, 10))
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[0, :3] = mask[1, 5:] = True
    out = q(z, mask)
    want = usage_stats(out.indices, 32, mask)   # base.py's histogram over all 32 codes
    assert float(out.stats["usage"]) == pytest.approx(float(want["usage"]))
    assert float(out.stats["perplexity"]) == pytest.approx(float(want["perplexity"]), rel=1e-6)
    assert float(out.stats["usage"]) == pytest.approx(out.indices[mask].unique().numel() / 32)
    for bad in ([[32]], [[-1, 0]]):
        with pytest.raises(ValueError, match="token ids"):
            q.indices_to_codes(torch.tensor(bad))


@pytest.mark.parametrize("kind", KINDS)
def test_dims_up_to_62_bits_and_key_checks(kind):
    q = make(kind, dim=62)
    top = torch.tensor([[2 ** 62 - 1, 0]])
    assert q.codebook_size == 2 ** 62 and torch.equal(q.indices(q.indices_to_codes(top)), top)
    assert float(q(q.indices_to_codes(top)).stats["usage"]) == pytest.approx(2 / 2 ** 62)
    for dim in (63, 0):
        with pytest.raises(ConfigError, match=r"model.quantizer.dim: must be in \[1, 62\]"):
            load_config(preset="vqgan", overrides=[f"model.quantizer.kind={kind}", f"model.quantizer.dim={dim}"])
        with pytest.raises(ConfigError, match="model.quantizer.dim"):
            make(kind, dim=dim)
    for key, value in (("commitment_weight", -1), ("entropy_weight", -0.1), ("codebook_entropy_weight", -1),
                       ("entropy_temperature", 0)):
        with pytest.raises(ConfigError, match=rf"model.quantizer.{key}: must be"):
            load_config(preset="vqgan", overrides=[f"model.quantizer.kind={kind}", f"model.quantizer.{key}={value}"])


def test_code_usage_equals_the_histogram_statistics():
    ids = torch.randint(0, 50, (300,), generator=torch.Generator().manual_seed(6))
    mine, hist = code_usage(ids, 64), usage_stats(ids, 64)
    for key in ("usage", "perplexity"):
        assert float(mine[key]) == pytest.approx(float(hist[key]), rel=1e-6)
    empty = code_usage(ids[:0], 64)
    assert float(empty["usage"]) == 0 and float(empty["perplexity"]) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_2_16_codes_on_4096_vectors_form_no_n_by_codebook_matrix(kind):
    q = make(kind, dim=16, entropy_weight=0.1)
    z = torch.randn(4, 16, 32, 32, requires_grad=True)   # 4096 latent vectors
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        out = q(z)
        (out.loss + out.z_q.square().mean()).backward()
    assert out.indices.shape == (4, 32, 32) and 0 <= out.indices.min() and out.indices.max() < 2 ** 16
    assert torch.isfinite(out.loss) and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert 0 < float(out.stats["usage"]) <= 4096 / 2 ** 16
    largest = max(e.cpu_memory_usage for e in prof.events())
    assert 0 < largest < 4096 * 2 ** 16 * 4 / 64, largest   # one (4096, 2^16) float32 matrix is 1 GiB


# ---- two processes ---------------------------------------------------------------------------
DDP_SHAPES = {0: (2, 6, 9), 1: (1, 6, 20)}   # the processes hold different numbers of positions


def ddp_batch(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(10 + rank)
    b, d, t = DDP_SHAPES[rank]
    return torch.randn(b, d, t, generator=g) * 0.5, torch.rand(b, t, generator=g) > 0.3


def ddp_config(kind: str):
    # no commitment loss: what is left is a function of the global batch, also its gradient
    return KINDS[kind](dim=6, commitment_weight=0.0, entropy_weight=0.5, entropy_temperature=0.3)


def ddp_worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        results = {}
        for kind in KINDS:
            z, mask = ddp_batch(rank)
            z.requires_grad_()
            out = build_quantizer(ddp_config(kind))(z, mask)
            out.loss.backward()
            results[kind] = {"stats": out.stats, "loss": out.loss.detach(), "grad": z.grad}
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_report_the_global_batchs_usage_and_entropies(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(ddp_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    batches = [ddp_batch(r) for r in (0, 1)]
    kept = [z.movedim(1, -1)[m] for z, m in batches]                       # (n_r, 6) each, n_0 != n_1
    assert kept[0].shape[0] != kept[1].shape[0]
    for kind in KINDS:
        # one process with both processes' kept positions side by side
        joined = torch.cat(kept).t()[None].requires_grad_()
        ref = build_quantizer(ddp_config(kind))(joined)
        ref.loss.backward()
        for r, (z, m) in enumerate(batches):
            got = ranks[r][kind]
            for key in ("usage", "perplexity", "per_sample_entropy", "codebook_entropy"):
                assert float(got["stats"][key]) == pytest.approx(float(ref.stats[key]), rel=1e-5), (kind, r, key)
            torch.testing.assert_close(got["loss"], ref.loss)
            # each process's loss is the global one; its backward sums both processes' gradients (2x),
            # which DDP's gradient averaging then halves
            n0 = kept[0].shape[0]
            part = joined.grad[0].t()[:n0] if r == 0 else joined.grad[0].t()[n0:]
            torch.testing.assert_close(got["grad"].movedim(1, -1)[m], 2 * part)
            assert (got["grad"].movedim(1, -1)[~m] == 0).all()   # masked positions are left out


# ---- the tokenizer and the files around it ---------------------------------------------------
@pytest.mark.parametrize("preset, overrides, signal", [
    ("vqgan", ["model.quantizer.kind=lfq", "model.quantizer.dim=8", "model.backbone.channels=[16,32]"], (3, 32, 32)),
    ("mqgan-refiner", [*TINY, "model.quantizer.kind=bsq", "model.quantizer.dim=12"], (80, 40)),
])
def test_tokenizers_encode_decode_and_train(preset, overrides, signal):
    torch.manual_seed(7)
    tok = Tokenizer(load_config(preset=preset, overrides=overrides))
    dim = tok.config.model.quantizer.dim
    assert tok.codebook_size == 2 ** dim and tok.bits_per_token == dim and tok.quantizer.dim == dim
    x = torch.rand(*signal) * 2 - 1 if preset == "vqgan" else torch.randn(*signal) * 2 - 5
    tok.eval()
    tokens = tok.encode(x)
    assert tokens.dtype == torch.long and 0 <= int(tokens.min()) and int(tokens.max()) < 2 ** dim
    assert tok.decode(tokens).shape == x.shape
    tok.train()
    out = tok(x[None])
    assert torch.equal(out.indices[0], tokens)
    (out.quant_loss + out.draft.square().mean()).backward()
    assert torch.isfinite(out.quant_loss) and "codebook_entropy" in out.stats
    assert sum(p.grad.abs().sum() for p in tok.encoder.parameters() if p.grad is not None) > 0


def test_info_token_files_and_memory_budget(tmp_path, capsys):
    from vqkit.cli import main
    from vqkit.io.memory import MemoryBudgetError
    from vqkit.tokens_io import load_tokens, save_tokens
    from vqkit.training.budget import check_training_memory

    path = save_tiny_tokenizer(tmp_path / "bsq", "model.quantizer.kind=bsq", "model.quantizer.dim=9")
    assert main(["info", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["quantizer"] == "bsq 9 bits = 512 codes"
    # ids above 2^31 are kept as int64 in token files, not wrapped into int32
    cfg = load_config(preset="mqgan-refiner", overrides=[*TINY, "model.quantizer.kind=lfq", "model.quantizer.dim=40"])
    tok = Tokenizer(cfg)
    ids = np.array([0, 2 ** 31, 2 ** 40 - 1], dtype=np.int64)
    back, _ = load_tokens(save_tokens(tmp_path / "t.npy", ids, tok), tok)
    assert back.tolist() == ids.tolist()
    # 2^40 codes need a 2^40-bin usage histogram for evaluation: refused, naming the key that sets it
    with pytest.raises(MemoryBudgetError, match=r"^model.quantizer.dim: "):
        check_training_memory(cfg)
