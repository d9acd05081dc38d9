"""The interface every quantiser implements (FSQ now; codebook VQ variants plug in here)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..distributed import all_reduce_sum_


@dataclass
class QuantizerOutput:
    z_q: torch.Tensor                 # quantised latents, same shape as the input (B, D, ...)
    indices: torch.Tensor             # integer codes (B, ...), one per position
    loss: torch.Tensor                # auxiliary loss (0 for FSQ)
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


class Quantizer(nn.Module):
    """forward(z: (B, dim, ...)) -> QuantizerOutput; indices_to_codes(indices) -> z_q."""

    dim: int
    codebook_size: int
    tokens_per_position: int = 1
    stages: int | None = None   # residual quantisers: stages per code, decodable from the first k

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """The codes of z only (inference: no loss, no usage statistics); the same as forward's."""
        return self(z).indices


def usage_stats(indices: torch.Tensor, codebook_size: int, mask: torch.Tensor | None = None,
                across_processes: bool = False) -> dict[str, torch.Tensor]:
    """Fraction of the codebook used and perplexity (exp of code entropy) over the given codes;
    across_processes: over every process's codes (a collective: every process must call it)."""
    counts = code_counts(indices.unsqueeze(-1), codebook_size, mask)[0]
    return usage_of_counts(all_reduce_sum_(counts) if across_processes else counts)


def code_counts(indices: torch.Tensor, codebook_size: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(groups, K) float histograms of (..., groups) ids, one per trailing group (a residual
    quantiser's stages); ids outside [0, K) (non-finite latents give garbage ids) and masked
    positions (mask: the leading shape) are not counted."""
    groups = indices.shape[-1]
    flat = indices.reshape(-1, groups)
    keep = (flat >= 0) & (flat < codebook_size)
    if mask is not None:
        keep &= mask.reshape(-1, 1).bool()
    offset = torch.arange(groups, device=flat.device) * codebook_size   # group g counts into row g
    ids = (flat.long() + offset)[keep]
    return torch.bincount(ids, minlength=groups * codebook_size).float().view(groups, codebook_size)


def usage_of_counts(counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Usage (fraction of codes seen) and perplexity (exp of code entropy) of a (K,) histogram."""
    probs = counts / counts.sum().clamp(min=1)
    entropy = -(probs * torch.log(probs.clamp(min=1e-12))).sum()
    return {"usage": (counts > 0).float().mean(), "perplexity": entropy.exp()}


def usage_from_counts(counts: torch.Tensor) -> dict:
    """Usage (fraction of codes seen), perplexity and codes used, from a (K,) assignment histogram
    accumulated over a whole evaluation set."""
    counts = torch.as_tensor(counts).reshape(-1)
    probs = counts.double() / counts.sum().clamp(min=1)
    nz = probs[probs > 0]
    return {"codebook_usage": float((counts > 0).double().mean()), "perplexity": math.exp(float(-(nz * nz.log()).sum())),
            "codes_used": int((counts > 0).sum()), "codebook_size": int(counts.numel())}
