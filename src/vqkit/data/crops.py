"""Training batches of random mel crops.

Batch `step` is a pure function of (seed, step) (data/step_batches.py): clips are drawn with
probability proportional to their length, crops at random offsets, short clips padded with silence
and masked.

Clips may be torch tensors or numpy arrays, including the memory-mapped items of a feature cache
(data/shards.py): only the cropped pieces are read, and a float32 store gives bitwise the batches
that the same clips as tensors give.
"""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch

from .step_batches import StepBatches

Clip = Union[torch.Tensor, np.ndarray]   # (n_mels, T)


def _as_tensor(piece: Clip) -> torch.Tensor:
    if isinstance(piece, torch.Tensor):
        return piece
    return torch.from_numpy(np.array(piece, dtype=np.float32))   # a writable float32 copy of the crop only


class MelCropBatches(StepBatches):
    """`batches[step]` -> (mel (B, n_mels, segment), mask (B, segment)) for clips given as (n_mels, T).

    Pass a store (ShardedArrays) itself rather than a list of its items: it pickles as its path,
    so DataLoader workers started by spawn/forkserver reopen the maps instead of copying the data.
    """

    def __init__(self, mels: Sequence[Clip], segment_frames: int, batch_size: int, seed: int,
                 pad_value: float):
        if not mels:
            raise ValueError("no clips to train on")
        self.mels = mels
        self.segment = segment_frames
        self.batch_size = batch_size
        self.seed = seed
        self.pad_value = pad_value
        # A store lists its shapes without mapping any item.
        shapes = getattr(mels, "shapes", None) or [m.shape for m in mels]
        self.weights = torch.tensor([s[-1] for s in shapes], dtype=torch.float)
        self.count = len(shapes)

    def batch(self, picks: list[int], g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n_mels = self.mels[0].shape[0]
        mel = torch.full((self.batch_size, n_mels, self.segment), self.pad_value)
        mask = torch.zeros(self.batch_size, self.segment)
        for row, i in enumerate(picks):
            clip = self.mels[i]
            length = clip.shape[-1]
            start = int(torch.randint(0, max(1, length - self.segment + 1), (1,), generator=g))
            piece = _as_tensor(clip[:, start: start + self.segment])
            mel[row, :, : piece.shape[-1]] = piece
            mask[row, : piece.shape[-1]] = 1
        return mel, mask


def normalization_stats(mels: Sequence[Clip]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-bin mean and one global standard deviation (broadcast per bin) over all frames.

    Streams one clip at a time (float64 running sums, combined by Chan et al.'s pairwise update), so
    a memory-mapped corpus is never concatenated in memory. The std is the unbiased std of all
    frames minus their bin's mean, clamped at 1e-3.
    """
    count, mean, m2 = 0, None, None
    for m in mels:
        x = m.detach().to("cpu", torch.float64).numpy() if isinstance(m, torch.Tensor) else np.asarray(m, np.float64)
        n = x.shape[-1]
        if n == 0:
            continue
        mu = x.mean(-1)
        sq = np.square(x - mu[:, None]).sum(-1)
        if mean is None:
            count, mean, m2 = n, mu, sq
            continue
        delta = mu - mean
        total = count + n
        mean = mean + delta * (n / total)
        m2 = m2 + sq + np.square(delta) * (count * n / total)
        count = total
    if mean is None:
        raise ValueError("no frames to compute normalization statistics from")
    values = count * mean.shape[0]
    std = max(float(np.sqrt(m2.sum() / (values - 1))) if values > 1 else 0.0, 1e-3)
    mean_t = torch.from_numpy(mean.astype(np.float32))
    return mean_t, torch.full_like(mean_t, std)
