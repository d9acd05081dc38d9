"""The tokenizer cut into graphs an exporter can trace: small nn.Modules around the tokenizer's own
parts, with the quantiser's id computation written without Python branches on values or shapes.

    EncoderGraph:  signal (natural units) -> pad to a multiple of downsample -> normalise -> encoder
                   -> quantiser ids                                    (= Tokenizer.encode)
    DecoderGraph:  ids -> codes -> decoder -> draft -> refiner -> denormalise
                   -> (output, draft)                                  (= Tokenizer.decode)
    FrontendGraph: waveform -> log-mel                                 (= MelFrontend.forward)

Why not call `quantizer.indices` / `indices_to_codes` as they are: they check id ranges with
`if indices.min() < 0` (a branch on values, which torch.export refuses) and the codebook search
runs `distance_chunk` rows at a time in a Python loop over the input's length (a trace would fix
the number of chunks). The functions here compute the same numbers with the quantisers' own
buffers and helpers (bound, _stage_code, _codes, _to_code_space, ...), in one pass; the tests
compare every exported graph's ids with the tokenizer's. (A codebook search in onnxruntime can
still pick the other code of an exact float32 near-tie: its matrix product adds in another order.)
The ids are not range-checked inside the decoder graph: the runtime checks them against
`codebook_size` (export.json).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..quantizers import FSQ, LFQ, ResidualFSQ
from ..quantizers.codebook import CodebookQuantizer


def channels_last(z: torch.Tensor) -> torch.Tensor:
    """(B, C, *sp) -> (B, *sp, C) with an explicit permutation (no negative axes in the graph)."""
    return z.permute(0, *range(2, z.dim()), 1)


def channels_first(x: torch.Tensor) -> torch.Tensor:
    """(B, *sp, C) -> (B, C, *sp)."""
    return x.permute(0, x.dim() - 1, *range(1, x.dim() - 1))


def _fsq_grid(fsq: FSQ, ids: torch.Tensor) -> torch.Tensor:
    """(B, *sp) ids -> (B, *sp, dim) rounded grid values, as FSQ.indices_to_grid (without its check)."""
    digits = torch.remainder(torch.div(ids.long().unsqueeze(-1), fsq.basis, rounding_mode="floor"), fsq.levels)
    return (digits - torch.div(fsq.levels, 2, rounding_mode="floor")).float()


def quantizer_ids(q: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """The quantiser's ids of latents z (B, dim, *sp): (B, *sp) or (B, *sp, c), as `q.indices(z)`."""
    z = z.float()
    if isinstance(q, ResidualFSQ):
        bounded = q.fsq.bound(channels_last(z))
        first = torch.round(bounded)
        grids = q._residual_grids(bounded / q.half_width - q._stage_code(first, 0), [first])
        return q._stack(grids)
    if isinstance(q, FSQ):
        return q._codes_to_indices(torch.round(q.bound(channels_last(z))))
    if isinstance(q, LFQ):
        zl = channels_last(z)
        zl = F.normalize(zl, dim=-1) if q.spherical else zl
        return ((zl > 0).long() * q.basis).sum(-1)
    if isinstance(q, CodebookQuantizer):
        zl = channels_last(z)                                   # (B, *sp, c*dim)
        lead = zl.shape[:-1]
        h = q._to_code_space(zl.reshape(-1, q.chunk_dim))
        e = q._codes()
        # the tokenizer's _nearest, all rows at once: argmin_k ||e_k||^2 - 2 <h, e_k>
        idx = torch.addmm((e * e).sum(-1), h, e.t(), alpha=-2).argmin(-1)
        ids = idx.reshape(*lead, q.channels)
        return ids.squeeze(-1) if q.channels == 1 else ids
    raise NotImplementedError(f"ONNX export does not know the quantiser {type(q).__name__}; "
                              "add it to vqkit/export/graphs.py (quantizer_ids and quantizer_codes)")


def quantizer_codes(q: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """ids -> quantised latents (B, dim, *sp), as `q.indices_to_codes(ids)` (every stage)."""
    if isinstance(q, ResidualFSQ):
        per = ids.unsqueeze(-1) if q.stages == 1 else ids
        total = None
        for s in range(q.stages):
            code = q._stage_code(_fsq_grid(q.fsq, per[..., s]), s)
            total = code if total is None else total + code
        return channels_first(total)
    if isinstance(q, FSQ):
        half = torch.div(q.levels, 2, rounding_mode="floor").float()
        return channels_first(_fsq_grid(q, ids) / half)
    if isinstance(q, LFQ):
        bits = torch.remainder(torch.div(ids.long().unsqueeze(-1), q.basis, rounding_mode="floor"), 2)
        return channels_first(q._codes(bits))
    if isinstance(q, CodebookQuantizer):
        lead = ids.shape if q.channels == 1 else ids.shape[:-1]
        codes = q._from_code_space(q._codes()[ids.reshape(-1).long()])
        return channels_first(codes.reshape(*lead, q.dim))
    raise NotImplementedError(f"ONNX export does not know the quantiser {type(q).__name__}; "
                              "add it to vqkit/export/graphs.py (quantizer_ids and quantizer_codes)")


class EncoderGraph(nn.Module):
    """Signal (B, C, *spatial) in natural units -> ids. Any size: the graph pads each spatial axis
    up to a multiple of downsample itself (mels with the frontend's silence level, images by edge
    replication), exactly as Tokenizer.encode, so it returns ceil(size / downsample) positions."""

    def __init__(self, tok):
        super().__init__()
        self.tok = tok
        self.f = tok.downsample
        self.silence = tok.frontend.silence_level if tok.frontend is not None else None

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size in reversed(x.shape[2:]):
            pads += [0, (self.f - size % self.f) % self.f]   # always a Pad node (0 when already a multiple)
        if self.silence is not None:
            return F.pad(x, pads, value=self.silence)
        return F.pad(x, pads, mode="replicate")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tok = self.tok
        return quantizer_ids(tok.quantizer, tok.encoder(tok.normalize(self.pad(x.float()))))


class DecoderGraph(nn.Module):
    """ids -> (output, draft) in natural units: output is the refined signal with a refiner, the
    draft without one (then the graph has the one output)."""

    def __init__(self, tok):
        super().__init__()
        self.tok = tok

    def forward(self, ids: torch.Tensor):
        tok = self.tok
        draft, hidden = tok.decoder(quantizer_codes(tok.quantizer, ids))
        if tok.refiner is None:
            return tok.denormalize(draft)
        return tok.denormalize(tok.refiner(draft, hidden)), tok.denormalize(draft)


class FrontendGraph(nn.Module):
    """Waveform (B, samples) in [-1, 1] -> log-mel (B, n_mels, frames), as MelFrontend.forward."""

    def __init__(self, frontend):
        super().__init__()
        self.fe = frontend

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        fe = self.fe
        p = fe.edge_pad
        x = F.pad(audio.float().unsqueeze(1), (p, p), mode="reflect").squeeze(1)
        return fe.log_mel(fe._spectrum(x))
