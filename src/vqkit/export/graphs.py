"""The tokenizer cut into graphs an exporter can trace: small nn.Modules around the tokenizer's own
parts, the quantiser's included in its traceable form (no Python branches on values or shapes).

    EncoderGraph:  signal (natural units) -> pad to a multiple of downsample -> normalise -> encoder
                   -> quantiser ids                                    (= Tokenizer.encode)
    DecoderGraph:  ids -> codes -> decoder -> draft -> refiner -> denormalise
                   -> (output, draft)                                  (= Tokenizer.decode)
    FrontendGraph: waveform -> log-mel                                 (= MelFrontend.forward)

The quantiser runs as `traced_indices` / `traced_codes`, each quantiser's own traceable form of
`indices` / `indices_to_codes` (quantizers/base.py): those check id ranges with
`if indices.min() < 0` (a branch on values, which torch.export refuses) and the codebook search
runs `distance_chunk` rows at a time in a Python loop over the input's length (a trace would fix
the number of chunks); the traced forms compute the same numbers in one pass, and a quantiser
without them cannot be exported. The tests compare every exported graph's ids with the
tokenizer's. (A codebook search in onnxruntime can still pick the other code of an exact float32
near-tie: its matrix product adds in another order.) The ids are not range-checked inside the
decoder graph: the runtime checks them against `codebook_size` (export.json).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
        return tok.quantizer.traced_indices(tok.encoder(tok.normalize(self.pad(x.float()))))


class DecoderGraph(nn.Module):
    """ids -> (output, draft) in natural units: output is the refined signal with a refiner, the
    draft without one (then the graph has the one output)."""

    def __init__(self, tok):
        super().__init__()
        self.tok = tok

    def forward(self, ids: torch.Tensor):
        tok = self.tok
        draft, hidden = tok.decoder(tok.quantizer.traced_codes(ids))
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
