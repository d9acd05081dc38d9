"""MaskGIT prior: a bidirectional transformer that predicts masked token entries from the visible
ones. Training masks a cosine-scheduled fraction of the (position, channel) entries; generation
starts fully masked and, over a fixed number of forward passes, keeps the most confident samples
and re-masks the rest, so the cost is `steps` passes whatever the sequence length.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..config.prior_schema import PriorModelConfig
from .sampling import gumbel_noise, sample_logits
from .transformer import TokenTransformer, check_tokens


def mask_ratio(u: torch.Tensor | float) -> torch.Tensor | float:
    """Cosine schedule: the fraction of entries masked at progress u in [0, 1] (1 at u=0, 0 at u=1)."""
    if isinstance(u, torch.Tensor):
        return torch.cos(0.5 * math.pi * u)
    return math.cos(0.5 * math.pi * u)


def masked_counts(total: int, steps: int) -> list[int]:
    """Entries still masked after each of `steps` decoding steps: floor(total * cos(pi/2 * s/steps)),
    lowered where needed so every step fixes at least one entry while any remain, and 0 at the end."""
    counts, remaining = [], total
    for s in range(1, steps + 1):
        target = 0 if s == steps else math.floor(total * mask_ratio(s / steps))
        remaining = max(0, min(target, remaining - 1))
        counts.append(remaining)
    return counts


class MaskGITPrior(TokenTransformer):
    """Inputs: [prefix, tokens with masked entries set to the mask id K]; output: logits (B, L, c, K)
    for every entry (only masked entries are trained and sampled)."""

    def __init__(self, cfg: PriorModelConfig, codebook_size: int, channels: int, max_len: int):
        # + the mask id in every channel's table, + the prefix position
        super().__init__(cfg, codebook_size, channels, max_len, extra_ids=1, positions=max_len + 1)
        self.mask_id = codebook_size
        self.masked_per_step: list[int] = []   # entries per sample still masked after each generate step

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, L, c) in [0, K] (K = mask id) -> logits (B, L, c, K), every position sees all."""
        tokens = check_tokens(tokens, self.channels, self.codebook_size + 1, self.max_len)
        prefix = self.prefix(labels, tokens.shape[0])
        x = self.input_dropout(torch.cat([prefix, self.embed(tokens)], dim=1))
        return self._logits(self.transformer(x, causal=False)[:, 1:])

    def random_mask(self, batch: int, entries: int, device: torch.device,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """(batch, entries) bool: per sample, ratio = cos(pi/2 u), u ~ U(0, 1), of the entries masked,
        chosen uniformly (independently of position and channel), and at least one."""
        where = generator.device if generator is not None else device
        u = torch.rand(batch, 1, generator=generator, device=where)
        n_masked = torch.ceil(mask_ratio(u) * entries).clamp(1, entries)
        scores = torch.rand(batch, entries, generator=generator, device=where)
        rank = scores.argsort(dim=1).argsort(dim=1)   # a uniformly random permutation per sample
        return (rank < n_masked).to(device)

    def loss(self, tokens: torch.Tensor, labels: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean negative log-likelihood (nats) over the masked entries, and {"nll", "acc", "mask_ratio"}."""
        tokens = check_tokens(tokens, self.channels, self.codebook_size, self.max_len)
        b, length, c = tokens.shape
        mask = self.random_mask(b, length * c, tokens.device, generator).view(b, length, c)
        logits = self(tokens.masked_fill(mask, self.mask_id), labels)
        target = tokens[mask]
        picked = logits[mask].float()
        nll = F.cross_entropy(picked, target)
        acc = (picked.argmax(-1) == target).float().mean()
        return nll, {"nll": float(nll.detach()), "acc": float(acc), "mask_ratio": float(mask.float().mean())}

    @torch.no_grad()
    def generate(self, n: int, length: int, labels: torch.Tensor | None = None, steps: int | None = None,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, length, c) tokens in [0, K) after exactly `steps` forward passes (default cfg.maskgit_steps)."""
        steps = self.cfg.maskgit_steps if steps is None else steps
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if not 1 <= length <= self.max_len:
            raise ValueError(f"length must be in [1, max_len={self.max_len}], got {length}")
        was_training = self.training
        self.eval()
        try:
            return self._generate(n, length, labels, steps, temperature, top_k, top_p, generator)
        finally:
            self.train(was_training)

    def _generate(self, n: int, length: int, labels: torch.Tensor | None, steps: int, temperature: float,
                  top_k: int, top_p: float, generator: torch.Generator | None) -> torch.Tensor:
        self.forward_passes = 0
        self.masked_per_step = []
        device = self.head.weight.device
        entries = length * self.channels
        tokens = torch.full((n, entries), self.mask_id, dtype=torch.long, device=device)
        for s, n_masked in enumerate(masked_counts(entries, steps), start=1):
            logits = self(tokens.view(n, length, self.channels), labels).flatten(1, 2)   # (n, entries, K)
            self.forward_passes += 1
            masked = tokens == self.mask_id
            sampled, log_prob = sample_logits(logits, temperature, top_k, top_p, generator)
            tokens = torch.where(masked, sampled, tokens)
            if n_masked > 0:
                tokens = self._remask(tokens, masked, log_prob, n_masked, s / steps, generator)
            self.masked_per_step.append(int((tokens == self.mask_id).sum(1).max()))
        return tokens.view(n, length, self.channels)

    def _remask(self, tokens: torch.Tensor, was_masked: torch.Tensor, log_prob: torch.Tensor, n_masked: int,
                progress: float, generator: torch.Generator | None) -> torch.Tensor:
        """Mask again the n_masked least confident of the entries sampled this step. Confidence =
        log-prob + Gumbel noise annealed from cfg.maskgit_temperature to 0 at the last step, so early
        steps do not keep only the easiest entries. Entries fixed earlier are never re-masked."""
        anneal = self.cfg.maskgit_temperature * (1.0 - progress)
        confidence = log_prob + anneal * gumbel_noise(log_prob.shape, generator, log_prob.device)
        confidence = confidence.masked_fill(~was_masked, float("inf"))
        remask = confidence.topk(n_masked, dim=1, largest=False).indices
        return tokens.scatter(1, remask, self.mask_id)
