"""SimVQ (Zhu et al. 2024, "Addressing representation collapse in vector quantized models with one
linear layer"): the codebook C (K x d) stays at its random initialisation and the codes used are
C W, with one learned linear map W (d x d).

Plain VQ updates only the codes that latents chose, so the rest fall behind and die. Here the
codebook loss trains W, and every code is a function of W: all K codes move together with the
latents, and none is left behind (the paper reports 100% usage at 65,536 codes).

C is a buffer, not a parameter: no optimiser or weight decay moves it, and a checkpoint still holds
it (the codes are a function of C and W). Only a dead-code restart (restart_dead_codes) rewrites
rows of C: row k becomes v W^+ (pseudo-inverse), so that code k equals the batch latent v. Layout,
lookup, losses, gradient estimator, restarts and usage statistics are codebook.py's, as for VQ.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config.quantizer_schema import SimVQConfig
from .codebook import CodebookQuantizer


class SimVQ(CodebookQuantizer):
    """forward(z (B, channels*dim, *spatial), mask (B, *spatial) | None) -> QuantizerOutput with
    indices (B, *spatial) for channels == 1, else (B, *spatial, channels)."""

    label = "SimVQ"

    def __init__(self, cfg: SimVQConfig):
        super().__init__(cfg)
        self.code_dim = cfg.dim
        # N(0, 1/d) rows, as the paper: codes of about unit length before W learns their scale
        self.register_buffer("codebook", torch.randn(cfg.codebook_size, cfg.dim) * cfg.dim ** -0.5)
        # W without a bias: a bias would shift every code alike and is not part of the method
        self.codebook_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def extra_repr(self) -> str:
        c = self.cfg
        return f"codebook_size={c.codebook_size}, dim={c.dim}, channels={c.channels}, gradient={c.gradient}"

    def _codes(self) -> torch.Tensor:
        """C W^T (rows: codes), in float32 whatever the module's dtype; differentiable in W only.
        C is cloned: F.linear saves it for W's gradient, and a restart rewrites C after forward."""
        return F.linear(self.codebook.float().clone(), self.codebook_proj.weight.float())

    def _seed_codes(self, ids: torch.Tensor, vectors: torch.Tensor) -> None:
        # C_k W^T = v  <=>  C_k = v (W^T)^+ ; exact while W is invertible, least squares if not
        w = self.codebook_proj.weight.detach().float()
        self.codebook[ids] = (vectors.float() @ torch.linalg.pinv(w).t()).to(self.codebook.dtype)

    def _codebook_trains(self) -> bool:
        return self.codebook_proj.weight.requires_grad
