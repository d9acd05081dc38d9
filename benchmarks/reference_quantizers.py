"""The vector-quantize-pytorch counterpart of each bench_quantizers option (benchmark-only
dependency: `pip install -e '.[bench]'`, pinned to the version named in pyproject.toml).

Each counterpart is configured to do the same work as vqkit's option: a codebook trained by its
gradient (ema_update=False, learnable_codebook=True) with the same commitment weight, the same
gradient estimator (straight-through unless the option names another), cosine similarity for l2
codes (which vector-quantize-pytorch trains by EMA only: the one difference in work). Options without a counterpart there (index backprop, dead-code restart by gradient-trained
codebooks) have none: their rows say n/a.

Each gets the very tensor layout vqkit's option gets, channels first ((B, C, H, W) or (1, C, n)), and
returns z_q in it, each side paying for its own transposes. (Until 2026-12-02 the counterparts were
given channels-last (1, n, C) latents: no transpose at all, while ours did two; at C = 256 that was
~10% of our step.) With `with_stats`, the step also computes vqkit's usage statistics over their
indices, the histogram over K codes vqkit's quantisers compute every training step (and theirs
do not): the same work on both sides, reported beside the plain figure.
"""
from __future__ import annotations

from typing import Callable

import torch

from vqkit.quantizers.base import code_counts, usage_of_counts  # noqa: E402

try:
    import vector_quantize_pytorch as vqp
    VERSION = getattr(vqp, "__version__", None)
    if VERSION is None:
        from importlib.metadata import version

        VERSION = version("vector-quantize-pytorch")
except ImportError:   # the comparison is skipped, with the reason in the report
    vqp, VERSION = None, None


def _vq(**extra) -> Callable[[dict, int, int], torch.nn.Module]:
    def build(cfg: dict, size: int, dim: int) -> torch.nn.Module:
        kw = dict(dim=dim, codebook_size=size, ema_update=False, learnable_codebook=True,
                  commitment_weight=cfg.get("beta", 0.25), rotation_trick=False,
                  # channels first, as vqkit's latents: (B, C, H, W) or (1, C, n)
                  accept_image_fmap=cfg["input_ndim"] == 4, channel_last=False)
        kw.update(extra)
        if cfg.get("l2_norm"):   # their cosine codebooks are EMA-updated only ("not compatible with learnable")
            kw.update(use_cosine_sim=True, ema_update=True, learnable_codebook=False)
        if cfg.get("codebook_dim"):
            kw["codebook_dim"] = cfg["codebook_dim"]
        if cfg.get("channels", 1) > 1:   # MoVQ multichannel: heads sharing one codebook
            kw.update(heads=cfg["channels"], codebook_dim=dim // cfg["channels"], separate_codebook_per_head=False)
        return vqp.VectorQuantize(**kw)
    return build


def _vq_gradient(cfg: dict, size: int, dim: int) -> torch.nn.Module | None:
    gradient = cfg.get("gradient", "straight_through")
    if gradient == "index_backprop" or cfg.get("restart_dead_codes"):
        return None
    extra = {"rotation_trick": gradient == "rotation"}
    if cfg.get("entropy_weight"):   # their nearest analogue of an entropy regulariser
        extra["codebook_diversity_loss_weight"] = cfg["entropy_weight"]
    return _vq(**extra)(cfg, size, dim)


def _lfq(spherical: bool):
    def build(cfg: dict, size: int, dim: int) -> torch.nn.Module:
        return vqp.LFQ(dim=dim, codebook_size=size, entropy_loss_weight=cfg.get("entropy_weight", 0.1),
                       commitment_loss_weight=cfg.get("commitment_weight", 0.25), spherical=spherical,
                       channel_first=True)
    return build


# vqkit kind -> builder(vqkit config fields, codebook size (per stage), input width)
BUILDERS: dict[str, Callable[[dict, int, int], torch.nn.Module | None]] = {
    "fsq": lambda cfg, size, dim: vqp.FSQ(levels=cfg["levels"], channel_first=True),
    "rfsq": lambda cfg, size, dim: vqp.ResidualFSQ(levels=cfg["levels"], num_quantizers=cfg["stages"], dim=dim,
                                                   is_channel_first=True),
    "vq": _vq_gradient,
    "simvq": lambda cfg, size, dim: vqp.SimVQ(dim=dim, codebook_size=size, rotation_trick=False, channel_first=True),
    "lfq": _lfq(spherical=False),
    "bsq": _lfq(spherical=True),
}



def reference_step(fields: dict, size: int, dim: int, shape: tuple[int, ...], device: torch.device,
                   with_stats: bool = False) -> Callable[[], None] | None:
    """One forward + backward of the counterpart on random latents of `shape` ((B, dim, ...), vqkit's
    layout), as vqkit's step; with_stats: plus vqkit's usage statistics of its indices (per stage
    and pooled for rfsq, as ResidualFSQ.stage_stats). None when there is no counterpart."""
    if vqp is None or fields["kind"] not in BUILDERS:
        return None
    torch.manual_seed(0)
    q = BUILDERS[fields["kind"]]({**fields, "input_ndim": len(shape)}, size, dim)
    if q is None:
        return None
    q.to(device).train()
    z = torch.randn(shape, device=device, requires_grad=True)
    stages = fields.get("stages") if fields["kind"] == "rfsq" else None

    def step() -> None:
        z.grad = None
        q.zero_grad(set_to_none=True)
        out = q(z)
        loss = out[0].square().mean()
        if len(out) > 2 and torch.is_tensor(out[2]):
            loss = loss + out[2].sum()
        loss.backward()
        if with_stats:   # rfsq indices (B, stages, ...) channel first; the rest (B, ...) [x heads]
            ids = out[1].detach()
            ids = ids.movedim(1, -1) if stages else ids.unsqueeze(-1)
            counts = code_counts(ids, size)
            usage_of_counts(counts.sum(0))
            if stages:
                for s in range(stages):
                    usage_of_counts(counts[s])

    return step
