"""Token priors: tiny GPT and MaskGIT models overfit a tiny token set, KV-cache generation equals
full recomputation, MaskGIT decodes in exactly `steps` passes on a cosine schedule, multichannel
(MoVQ) tokens round-trip through a real tokenizer's decode, and the sampling filters do what they say."""
from __future__ import annotations

import math

import pytest
import torch

from vqkit.config import ConfigError, from_dict, load_config, tagged_kinds
from vqkit.config.prior_schema import PriorConfig, PriorModelConfig
from vqkit.models.tokenizer import Tokenizer
from vqkit.priors import GPTPrior, MaskGITPrior, build_prior, masked_counts
from vqkit.priors.sampling import filter_logits, sample_logits, top_k_filter, top_p_filter

pytestmark = pytest.mark.usefixtures("single_thread")   # see conftest.py

K = 16
PRIOR_MODELS = tagged_kinds(PriorModelConfig)   # kind -> its config class


def tiny_cfg(kind: str = "gpt", **kw) -> PriorModelConfig:
    return PRIOR_MODELS[kind](**{"dim": 32, "depth": 2, "heads": 2, **kw}).validate()


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def count_calls(module: torch.nn.Module) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    calls = [0]

    def hook(*_):
        calls[0] += 1
    return calls, module.register_forward_hook(hook)


# ---- config ------------------------------------------------------------------------------------

def test_config_loads_strictly_and_validation_names_the_key():
    cfg = from_dict(PriorConfig, {"model": {"kind": "maskgit", "dim": 64, "heads": 4, "mlp_hidden": None,
                                            "maskgit_temperature": 3}}).validate().model
    assert cfg.kind == "maskgit" and cfg.maskgit_temperature == 3.0 and cfg.mlp_hidden is None
    with pytest.raises(ConfigError, match="depth_typo"):
        from_dict(PriorConfig, {"model": {"depth_typo": 2}})
    with pytest.raises(ConfigError, match="model.kind: unknown kind 'diffusion'; available: gpt, maskgit"):
        from_dict(PriorConfig, {"model": {"kind": "diffusion"}})
    with pytest.raises(ConfigError, match="model.maskgit_steps: applies to kind 'maskgit', not 'gpt'"):
        from_dict(PriorConfig, {"model": {"kind": "gpt", "maskgit_steps": 4}})
    for kind, bad, key in [("gpt", {"dim": 30, "heads": 4}, "dim"), ("gpt", {"dim": 12, "heads": 4}, "heads"),
                           ("gpt", {"depth": 0}, "depth"), ("maskgit", {"dropout": 1.0}, "dropout"),
                           ("maskgit", {"maskgit_steps": 0}, "maskgit_steps"), ("gpt", {"num_classes": -1}, "num_classes")]:
        with pytest.raises(ConfigError, match=f"model.{key}"):
            PRIOR_MODELS[kind](**bad).validate()


def test_build_prior_picks_the_kind_and_checks_inputs():
    gpt = build_prior(tiny_cfg("gpt"), K, 2, 12)
    mg = build_prior(tiny_cfg("maskgit"), K, 2, 12)
    assert isinstance(gpt, GPTPrior) and isinstance(mg, MaskGITPrior)
    x = torch.randint(0, K, (3, 12, 2), generator=seeded())
    assert gpt(x).shape == mg(x).shape == (3, 12, 2, K)
    with pytest.raises(ValueError, match="token ids"):
        gpt(x.clamp(max=K - 1) + 1)        # K is not a valid index (in another channel's table it would be)
    with pytest.raises(ValueError, match="max_len"):
        gpt(torch.zeros(1, 13, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="unconditional"):
        gpt(x, labels=torch.zeros(3, dtype=torch.long))


# ---- training: both priors overfit four sequences -----------------------------------------------

def fit(model: torch.nn.Module, data: torch.Tensor, steps: int, labels: torch.Tensor | None = None) -> list[float]:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = seeded(1)
    losses = []
    for _ in range(steps):
        loss, _ = model.loss(data, labels) if isinstance(model, GPTPrior) else model.loss(data, labels, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


FOUR = torch.randint(0, K, (4, 16, 1), generator=seeded(3))


def test_tiny_gpt_overfits_and_greedy_generation_returns_training_sequences():
    torch.manual_seed(0)
    model = GPTPrior(tiny_cfg("gpt", dim=48), K, channels=1, max_len=16)
    losses = fit(model, FOUR, 250)
    assert losses[0] > 0.8 * math.log(K)
    with torch.no_grad():
        nll, stats = model.loss(FOUR)
    # The first index of each sequence is a 1-in-4 guess (ln 4 / 16 per index); the rest is memorised.
    assert float(nll) < 0.25 * math.log(K), losses[-5:]
    assert stats["acc"] > 0.85
    out = model.generate(8, 16, top_k=1, generator=seeded())
    for row in out:
        assert any(torch.equal(row, seq) for seq in FOUR)


def test_tiny_class_conditional_maskgit_overfits_and_decodes_each_class():
    # Class-conditional: unconditionally, a fully masked sample (a fifth of the cosine draws at
    # 16 entries) can only guess among the four sequences, a floor of about 0.45 nats per entry.
    torch.manual_seed(0)
    model = MaskGITPrior(tiny_cfg("maskgit", dim=48, num_classes=4), K, channels=1, max_len=16)
    labels = torch.arange(4)
    losses = fit(model, FOUR.repeat(4, 1, 1), 300, labels.repeat(4))   # 4 mask draws per sequence per step
    assert sum(losses[:10]) / 10 > 0.8 * math.log(K)
    gen = seeded(5)
    with torch.no_grad():
        nll = sum(float(model.loss(FOUR, labels, generator=gen)[0]) for _ in range(20)) / 20
    assert nll < 0.25 * math.log(K), (nll, losses[-5:])
    out = model.generate(4, 16, labels=labels, top_k=1, generator=seeded())   # 8 parallel steps
    assert float((out == FOUR).float().mean()) > 0.9   # exact here; other seeds gave 97-100 %


def test_maskgit_masking_is_per_entry_with_at_least_one_masked():
    model = MaskGITPrior(tiny_cfg("maskgit"), K, channels=3, max_len=10)
    mask = model.random_mask(2000, 30, torch.device("cpu"), seeded())
    per_sample = mask.sum(1)
    assert per_sample.min() >= 1 and per_sample.max() == 30
    # Mean of cos(pi/2 u), u ~ U(0, 1), is 2/pi; entries within a position are masked independently.
    assert abs(float(mask.float().mean()) - 2 / math.pi) < 0.03
    by_position = mask.view(2000, 10, 3)
    partial = (by_position.any(-1) & ~by_position.all(-1)).float().mean()
    assert partial > 0.2


# ---- generation -----------------------------------------------------------------------------------

@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("conditional", [False, True])
def test_gpt_kv_cache_generation_equals_full_recomputation(channels, conditional):
    torch.manual_seed(channels)
    cfg = tiny_cfg("gpt", num_classes=3 if conditional else 0)
    model = GPTPrior(cfg, K, channels, max_len=24)
    labels = torch.tensor([0, 2, 1, 3]) if conditional else None   # 3 = the null class
    runs = {}
    for use_cache in (True, False):
        calls, handle = count_calls(model.transformer)
        runs[use_cache] = model.generate(4, 24, labels=labels, temperature=1.0, top_k=8, generator=seeded(7),
                                         use_cache=use_cache, return_logits=True)
        handle.remove()
        assert model.forward_passes == calls[0] == 24
    (tok_c, log_c), (tok_f, log_f) = runs[True], runs[False]
    assert tok_c.shape == (4, 24, channels) and torch.equal(tok_c, tok_f)
    assert torch.allclose(log_c, log_f, atol=1e-5)
    assert torch.allclose(log_c, model(tok_c, labels), atol=1e-5)   # and the teacher-forced forward


def test_gpt_labels_condition_the_prediction():
    torch.manual_seed(0)
    model = GPTPrior(tiny_cfg("gpt", num_classes=2), K, 1, max_len=8)
    x = torch.randint(0, K, (1, 8, 1), generator=seeded())
    assert not torch.allclose(model(x, torch.tensor([0])), model(x, torch.tensor([1])))
    with torch.no_grad():
        model.head.weight.mul_(200)   # sharpen an untrained model so the class decides the samples
    a = model.generate(1, 8, labels=torch.tensor([0]), generator=seeded())
    b = model.generate(1, 8, labels=torch.tensor([1]), generator=seeded())
    assert not torch.equal(a, b)
    with pytest.raises(ValueError, match="labels must be in"):
        model.generate(1, 8, labels=torch.tensor([3]))


@pytest.mark.parametrize("steps", [1, 5, 8])
def test_maskgit_generates_in_exactly_steps_passes_on_the_cosine_schedule(steps):
    torch.manual_seed(0)
    model = MaskGITPrior(tiny_cfg("maskgit", maskgit_steps=8), K, channels=2, max_len=20)
    calls, handle = count_calls(model)
    out = model.generate(3, 20, steps=None if steps == 8 else steps, generator=seeded())
    handle.remove()
    assert model.forward_passes == calls[0] == steps
    assert out.shape == (3, 20, 2) and out.dtype == torch.long
    assert int(out.min()) >= 0 and int(out.max()) < K          # never the mask id K
    counts = model.masked_per_step                             # measured after each step
    assert counts == masked_counts(40, steps)
    assert all(a >= b for a, b in zip(counts, counts[1:])) and counts[-1] == 0


def test_maskgit_schedule_is_cosine_monotone_and_ends_at_zero():
    assert masked_counts(256, 8) == [math.floor(256 * math.cos(math.pi / 2 * s / 8)) for s in range(1, 8)] + [0]
    for total, steps in [(1, 1), (1, 5), (7, 3), (40, 40), (40, 100), (4096, 12)]:
        counts = masked_counts(total, steps)
        assert len(counts) == steps and counts[-1] == 0 and counts[0] < total
        assert all(a >= b for a, b in zip(counts, counts[1:]))
        assert all(a > b for a, b in zip([total] + counts, counts) if a > 0)   # progress while any remain


def test_multichannel_priors_generate_grids_that_a_movq_tokenizer_decodes():
    torch.manual_seed(0)
    cfg = load_config("movq", overrides=["model.backbone.channels=[16, 32]", "model.backbone.spatial_norm_blocks=2",
                                         "model.quantizer.codebook_size=64"])
    tok = Tokenizer(cfg).eval()
    assert tok.tokens_per_position == 4
    h, w = tok.token_grid(32, 24)[:2]
    for kind in ("gpt", "maskgit"):
        prior = build_prior(tiny_cfg(kind), tok.codebook_size, tok.tokens_per_position, max_len=h * w)
        flat = prior.generate(2, h * w, generator=seeded())
        assert flat.shape == (2, h * w, 4) and int(flat.max()) < tok.codebook_size
        grid = flat.view(2, h, w, 4)
        assert torch.equal(grid[:, 1, 2], flat[:, 1 * w + 2])   # raster order: row-major positions
        assert tok.decode(grid).shape == (2, 3, 32, 24)
    # Real tokens, flattened the same way, are what the prior models: they reshape back unchanged.
    image = torch.rand(2, 3, 32, 24) * 2 - 1
    real = tok.encode(image)
    assert real.shape == (2, h, w, 4)
    assert torch.equal(real.reshape(2, h * w, 4).view(2, h, w, 4), real)


# ---- sampling -------------------------------------------------------------------------------------

def test_top_k_one_is_argmax_and_small_temperature_approaches_argmax():
    logits = torch.randn(64, 5, K, generator=seeded())
    best = logits.argmax(-1)
    for seed in range(5):
        idx, _ = sample_logits(logits, top_k=1, generator=seeded(seed))
        assert torch.equal(idx, best)
    assert torch.equal(sample_logits(logits, temperature=0)[0], best)
    assert torch.equal(sample_logits(logits, temperature=1e-4, generator=seeded())[0], best)
    hot = sample_logits(logits, temperature=1.0, generator=seeded())[0]
    assert (hot != best).any()
    kept = torch.isfinite(top_k_filter(logits, 3)).sum(-1)
    assert (kept == 3).all()


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.tensor([0.05, 0.5, 0.15, 0.3]).log()
    kept = lambda p: set(torch.isfinite(top_p_filter(logits, p)).nonzero().flatten().tolist())  # noqa: E731
    assert kept(0.4) == {1} and kept(0.5) == {1}
    assert kept(0.7) == {1, 3} and kept(0.9) == {1, 3, 2} and kept(0.99) == {0, 1, 2, 3}
    assert kept(1.0) == {0, 1, 2, 3}
    # Random rows: the kept mass reaches p, and without its least likely member it would not.
    rows = torch.randn(200, K, generator=seeded()) * 2
    p = 0.8
    filtered = top_p_filter(rows, p)
    probs = rows.softmax(-1)
    keep = torch.isfinite(filtered)
    mass = (probs * keep).sum(-1)
    smallest_kept = probs.masked_fill(~keep, 2).min(-1).values
    assert (mass >= p - 1e-6).all() and (mass - smallest_kept < p).all()
    idx, _ = sample_logits(rows, top_p=p, generator=seeded())
    assert keep.gather(-1, idx[:, None]).all()


def test_sampling_follows_the_softmax_and_is_reproducible():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    draws, log_prob = sample_logits(logits.expand(20000, 4), generator=seeded())
    freq = torch.bincount(draws, minlength=4).float() / 20000
    assert torch.allclose(freq, logits.softmax(-1), atol=0.015)
    assert torch.allclose(log_prob, logits.log_softmax(-1)[draws])
    again, _ = sample_logits(logits.expand(20000, 4), generator=seeded())
    assert torch.equal(draws, again)
    assert torch.allclose(filter_logits(logits, temperature=2.0), logits / 2)
