"""The few collectives that keep per-process state identical under multi-process training.

DDP averages gradients, but state a module changes itself (codebook usage counters, dead-code
restarts, LeCam EMAs) would drift apart between processes. These helpers make that state a function
of the *global* batch. Every one is a no-op in a single process, so models call them unconditionally.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def all_reduce_sum_(t: torch.Tensor) -> torch.Tensor:
    """Sum over processes, in place (no gradient)."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_mean_(t: torch.Tensor) -> torch.Tensor:
    """Mean over processes, in place (no gradient)."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t.div_(dist.get_world_size())
    return t


class _SumOverProcesses(torch.autograd.Function):
    # d(sum_p x_p)/d(x_q) is the identity, and every process's loss uses the sum: the gradient that
    # reaches x_q is the sum of all processes' incoming gradients.
    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def differentiable_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over processes that gradients flow through (each process gets d(sum)/d(its own part))."""
    return _SumOverProcesses.apply(t) if is_distributed() else t


def broadcast_(t: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite `t` with process `src`'s value, in place."""
    if is_distributed():
        dist.broadcast(t, src)
    return t


def all_true(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True only when `flag` is true in every process (the same answer everywhere)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0)


def same_everywhere(value: str) -> bool:
    """True when every process holds the same `value` (e.g. a hash of its weights)."""
    if not is_distributed():
        return True
    values: list = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return all(v == values[0] for v in values)

