"""How the gradient passes the nearest-code lookup (`model.quantizer.gradient`), for every codebook
quantiser alike (VQ, SimVQ).

Each estimator takes latents h (N, d) and their nearest codes q = e[idx] (N, d), both in code space,
and returns z_q whose *value* is exactly q and whose *gradient* is the estimator's:

- straight_through: dL/dh = dL/dz_q; the codes get no gradient through z_q (van den Oord et al.).
- rotation (Fifty et al. 2024): z_q = (|q|/|h|) R h with R the rotation taking h's direction u to
  q's direction v (in the plane of u and v), R and the scale held constant. dL/dh = (|q|/|h|) R^T dL/dz_q:
  the gradient is rotated and rescaled as h would have to move, so latents that land in one code's
  cell get different gradients depending on where in the cell they lie.
- index_backprop (IBQ, Shi et al. 2024): z_q = (hard - sg(soft) + soft) @ e with soft = softmax(-||h - e_k||^2)
  over ALL K codes and hard the one-hot of the nearest: every code, used or not, gets a gradient.

Each is written as q + (y - sg(y)): y - sg(y) is exactly 0, so forward's z_q is bit-identical to
indices_to_codes, while the gradient is y's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

# latents shorter than this have no direction to rotate from: their gradient passes unchanged
_TINY = 1e-6


def soft_assignment(h: torch.Tensor, e: torch.Tensor, e_sq: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """softmax_k(-||h_i - e_k||^2 / T) -> (N, K). ||h_i||^2 is the same for every k and cancels in the
    softmax, so it is left out; e_sq = ||e_k||^2."""
    return torch.softmax((2 * h @ e.t() - e_sq) / temperature, dim=-1)


def straight_through(h: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return q.detach() + (h - h.detach())


def rotation(h: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The rotation trick: with u = h/|h|, v = q/|q|, r = (u+v)/|u+v|, R h = h - 2 (h.r) r + 2 (h.u) v.
    When v = -u, r = 0 and R = I - 2 u u^T, the reflection that still takes u to v."""
    with torch.no_grad():   # R and the scale are constants of the backward pass
        h_norm = h.norm(dim=-1, keepdim=True)
        q_norm = q.norm(dim=-1, keepdim=True)
        flat = h_norm < _TINY
        u = torch.where(flat, 0.0, h / h_norm.clamp(min=_TINY))
        v = torch.where(flat, 0.0, q / q_norm.clamp(min=_TINY))
        r = F.normalize(u + v, dim=-1, eps=_TINY)
        scale = torch.where(flat, 1.0, q_norm / h_norm.clamp(min=_TINY))
    y = scale * (h - 2 * (h * r).sum(-1, keepdim=True) * r + 2 * (h * u).sum(-1, keepdim=True) * v)
    return q.detach() + (y - y.detach())


def _chunk_soft_codes(h: torch.Tensor, e: torch.Tensor, e_sq: torch.Tensor, e_value: torch.Tensor) -> torch.Tensor:
    # soft @ e with e detached in the product: through z_q's value (hard @ e) the codes get the gradient
    # of the code each latent chose (q carries it); through soft's logits every code gets one
    return soft_assignment(h, e, e_sq) @ e_value


def index_backprop(h: torch.Tensor, q: torch.Tensor, e: torch.Tensor, chunk: int) -> torch.Tensor:
    """IBQ, `chunk` latents at a time: each chunk runs under activation checkpointing, so only its
    (chunk, d) result is kept and its (chunk, K) softmax is rebuilt in backward (memory O(chunk * K),
    not O(N * K), at 16384+ codes)."""
    if not (torch.is_grad_enabled() and (h.requires_grad or e.requires_grad)):
        return q   # no backward will run (inference): skip the softmax over all codes
    e_sq = (e * e).sum(-1)
    e_value = e.detach()
    soft = torch.cat([checkpoint(_chunk_soft_codes, h[s:s + chunk], e, e_sq, e_value, use_reentrant=False)
                      for s in range(0, h.shape[0], chunk)])
    return q + (soft - soft.detach())


def pass_gradient(kind: str, h: torch.Tensor, q: torch.Tensor, e: torch.Tensor, chunk: int) -> torch.Tensor:
    """z_q for latents h whose nearest codes are q (rows of the codebook e), by estimator `kind`."""
    if kind == "straight_through":
        return straight_through(h, q)
    if kind == "rotation":
        return rotation(h, q)
    if kind == "index_backprop":
        return index_backprop(h, q, e, chunk)
    raise ValueError(f"unknown gradient estimator {kind!r}")
