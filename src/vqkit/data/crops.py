"""Training batches of random mel crops.

Batch `step` is a pure function of (seed, step): clips are drawn with probability proportional to
their length, crops at random offsets, short clips padded with silence and masked. No sampler state
exists, so a resumed run sees exactly the batches an uninterrupted run would, and DataLoader workers
can produce any step independently.
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset


class MelCropBatches(Dataset):
    """`batches[step]` -> (mel (B, n_mels, segment), mask (B, segment)) for clips given as (n_mels, T)."""

    def __init__(self, mels: list[torch.Tensor], segment_frames: int, batch_size: int, seed: int,
                 pad_value: float):
        if not mels:
            raise ValueError("no clips to train on")
        self.mels = mels
        self.segment = segment_frames
        self.batch_size = batch_size
        self.seed = seed
        self.pad_value = pad_value
        self.weights = torch.tensor([m.shape[-1] for m in mels], dtype=torch.float)

    def __len__(self) -> int:
        return 2**62   # indexed by step; never iterated to the end

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + step) % (2**63))
        picks = torch.multinomial(self.weights, self.batch_size, replacement=True, generator=g)
        n_mels = self.mels[0].shape[0]
        mel = torch.full((self.batch_size, n_mels, self.segment), self.pad_value)
        mask = torch.zeros(self.batch_size, self.segment)
        for row, i in enumerate(picks.tolist()):
            clip = self.mels[i]
            length = clip.shape[-1]
            start = int(torch.randint(0, max(1, length - self.segment + 1), (1,), generator=g))
            piece = clip[:, start: start + self.segment]
            mel[row, :, : piece.shape[-1]] = piece
            mask[row, : piece.shape[-1]] = 1
        return mel, mask


def normalization_stats(mels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-bin mean and one global standard deviation (broadcast per bin) over all frames."""
    frames = torch.cat([m.float() for m in mels], dim=-1)
    mean = frames.mean(-1)
    std = (frames - mean[:, None]).std().clamp(min=1e-3)
    return mean, torch.full_like(mean, float(std))
