"""The interface every quantiser implements, and the layout helpers and usage statistics they share."""
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
    """forward(z: (B, dim, ...)) -> QuantizerOutput; indices_to_codes(indices) -> z_q.

    traced_indices / traced_codes: the same numbers as indices / indices_to_codes, written so that
    torch.export can trace them (ONNX export, export/graphs.py): no range checks (a branch on
    values), no Python loops over data-dependent chunk counts."""

    dim: int
    codebook_size: int
    tokens_per_position: int = 1
    stages: int | None = None   # residual quantisers: stages per code, decodable from the first k

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def check_ids(self, indices: torch.Tensor) -> None:
        """Refuse ids outside [0, codebook_size), naming the range found (empty ids pass)."""
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.codebook_size):
            raise ValueError(f"token ids must be in [0, {self.codebook_size}), "
                             f"got range [{int(indices.min())}, {int(indices.max())}]")

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """The codes of z only (inference: no loss, no usage statistics); the same as forward's."""
        return self(z).indices

    def traced_indices(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, dim, *sp) -> ids, as `indices(z)`, traceable."""
        raise NotImplementedError(self._untraceable())

    def traced_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """ids -> quantised latents (B, dim, *sp), as `indices_to_codes(ids)`, traceable."""
        raise NotImplementedError(self._untraceable())

    def _untraceable(self) -> str:
        return (f"{type(self).__name__} cannot be exported: it has no traceable id computation; "
                "add traced_indices(z) and traced_codes(indices) to it (see Quantizer)")


def channels_last(z: torch.Tensor) -> torch.Tensor:
    """(B, C, *sp) -> (B, *sp, C) with an explicit permutation (no negative axes in an exported graph)."""
    return z.permute(0, *range(2, z.dim()), 1)


def channels_first(x: torch.Tensor) -> torch.Tensor:
    """(B, *sp, C) -> (B, C, *sp), channels_last's inverse."""
    return x.permute(0, x.dim() - 1, *range(1, x.dim() - 1))


def _transpose_examples(x: torch.Tensor, b: int, rows: int, cols: int) -> torch.Tensor:
    """(b, rows, cols) view of x -> contiguous (b, cols, rows), one 2-D transpose per example: torch
    copies a transposed 2-D matrix with a blocked kernel, ~3x faster than the strided copy a 3-D+
    permute gets (9 vs 3 ms at 16 x 256 x 32 x 32, one thread). The same values, bit for bit."""
    src = x.reshape(b, rows, cols)
    out = x.new_empty(b, src.shape[2], src.shape[1])
    for i in range(b):
        out[i].copy_(src[i].t())
    return out


def _fast(shape: torch.Size) -> bool:
    # one example: movedim + reshape is a view (no copy); small ones: the loop costs more
    return shape[0] > 1 and shape.numel() // shape[0] >= 32768


class _ChannelRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z):
        ctx.shape = z.shape
        return _transpose_examples(z, z.shape[0], z.shape[1], -1).view(-1, z.shape[1])

    @staticmethod
    def backward(ctx, g):
        return _transpose_examples(g, ctx.shape[0], -1, ctx.shape[1]).view(ctx.shape)


class _RowsToChannels(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rows, shape):
        ctx.b, ctx.c = shape[0], shape[1]
        return _transpose_examples(rows, shape[0], -1, shape[1]).view(shape)

    @staticmethod
    def backward(ctx, g):
        if g.movedim(1, -1).is_contiguous():   # already channels last in memory: a view
            return g.movedim(1, -1).reshape(-1, ctx.c), None
        return _transpose_examples(g, ctx.b, ctx.c, -1).view(-1, ctx.c), None


def channel_rows(z: torch.Tensor) -> torch.Tensor:
    """(B, C, *sp) -> (B * prod(sp), C): each position's channels as one row, in position order."""
    if _fast(z.shape) and z.is_contiguous():
        return _ChannelRows.apply(z)
    return z.movedim(1, -1).reshape(-1, z.shape[1])


def rows_to_channels(rows: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """channel_rows' inverse: (B * prod(sp), C) -> (B, C, *sp) of `shape`; contiguous where it is
    fast to make so (a consumer's gradient then comes back without a strided 4-D copy)."""
    if _fast(shape):
        return _RowsToChannels.apply(rows, shape)
    return rows.reshape(shape[0], *shape[2:], shape[1]).movedim(-1, 1)


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
    groups, size = indices.shape[-1], codebook_size
    flat = indices.reshape(-1, groups)
    keep = (flat >= 0) & (flat < size)
    if mask is not None:
        keep &= mask.reshape(-1, 1).bool()
    ids = flat.long()
    if groups > 1:   # group g counts into row g
        ids = ids + torch.arange(groups, device=flat.device) * size
    # what is not counted goes to one bin past the end: no boolean indexing (a sync and two passes)
    ids = torch.where(keep, ids, groups * size)
    return torch.bincount(ids.reshape(-1), minlength=groups * size + 1)[:-1].float().view(groups, size)


def usage_of_counts(counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Usage (fraction of codes seen) and perplexity (exp of code entropy) of a (K,) histogram."""
    probs = counts / counts.sum().clamp(min=1)
    entropy = -(probs * torch.log(probs.clamp(min=1e-12))).sum()
    return {"usage": torch.count_nonzero(counts) / counts.numel(), "perplexity": entropy.exp()}


def usage_from_counts(counts: torch.Tensor) -> dict:
    """Usage (fraction of codes seen), perplexity and codes used, from a (K,) assignment histogram
    accumulated over a whole evaluation set."""
    counts = torch.as_tensor(counts).reshape(-1)
    probs = counts.double() / counts.sum().clamp(min=1)
    nz = probs[probs > 0]
    return {"codebook_usage": float((counts > 0).double().mean()), "perplexity": math.exp(float(-(nz * nz.log()).sum())),
            "codes_used": int((counts > 0).sum()), "codebook_size": int(counts.numel())}
