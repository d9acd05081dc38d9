"""Helpers of the quantiser tests (test_vq.py, test_simvq.py)."""
from __future__ import annotations

from typing import Callable

import torch

from vqkit.quantizers import Quantizer


def fit_usage(build: Callable[[], Quantizer], data: torch.Tensor, dim: int, steps: int,
              held_out: torch.Tensor | None = None) -> float:
    """Codebook usage after a linear autoencoder learns `data` (N, F) through the quantiser that
    `build` makes (latent width `dim`; Adam 1e-2 on everything), measured in eval mode on
    `held_out` (default: the training data). The encoder and decoder are made before the quantiser,
    so a seeded caller gets the same initialisation as before this helper existed."""
    enc, dec = torch.nn.Linear(data.shape[1], dim), torch.nn.Linear(dim, data.shape[1])
    q = build()
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters(), *q.parameters()], lr=1e-2)
    for _ in range(steps):
        out = q(enc(data).t()[None])
        loss = (dec(out.z_q[0].t()) - data).square().mean() + out.loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    q.eval()
    with torch.no_grad():
        return float(q(enc(data if held_out is None else held_out).t()[None]).stats["usage"])
