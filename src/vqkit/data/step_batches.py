"""Training batches indexed by step: the one base of mel crops, image crops and token crops.

Batch `step` is a pure function of (seed, step): a generator seeded from both picks the examples
(with probability proportional to `weights`, or uniformly) and the subclass cuts them with the same
generator. No sampler state exists, so a resumed run sees exactly the batches an uninterrupted run
would, and DataLoader workers can produce any step independently.
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset


class StepBatches(Dataset):
    """Subclasses set `seed`, `batch_size`, `count` (examples to pick from) and `weights` (a (count,)
    tensor, or None for uniform picks), and implement `batch(picks, generator)`."""

    seed: int
    batch_size: int
    count: int
    weights: torch.Tensor | None = None

    def __len__(self) -> int:
        return 2**62   # indexed by step; never iterated to the end

    def __getitem__(self, step: int):
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + step) % (2**63))
        if self.weights is None:
            picks = torch.randint(0, self.count, (self.batch_size,), generator=g)
        else:
            picks = torch.multinomial(self.weights, self.batch_size, replacement=True, generator=g)
        return self.batch(picks.tolist(), g)

    def batch(self, picks: list[int], g: torch.Generator):
        raise NotImplementedError
