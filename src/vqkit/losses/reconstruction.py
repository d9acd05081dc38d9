"""Reconstruction losses that ignore padded frames."""
from __future__ import annotations

import torch


def masked_mean(err: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of err (B, C, T) over the frames where mask (B, T) is 1."""
    if mask is None:
        return err.mean()
    m = mask[:, None, :].to(err.dtype)
    return (err * m).sum() / (m.sum() * err.shape[1]).clamp(min=1)


def mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    return masked_mean((pred.float() - target.float()).pow(2), mask)


def l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    return masked_mean((pred.float() - target.float()).abs(), mask)
