"""Autoregressive (GPT-style) prior over token sequences: a causal transformer predicting position
t from positions < t and a prefix (start or class token). Generation takes one forward pass per
position; with the KV cache each pass sees only the new position.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config.prior_schema import PriorModelConfig
from ..nn.transformer import KVCache
from .sampling import sample_logits
from .transformer import TokenTransformer, check_tokens


class GPTPrior(TokenTransformer):
    """Inputs at step t: [prefix, tokens[0], ..., tokens[t-1]]; output t: logits of the c indices of
    position t, predicted independently of each other given the past (one head of c x K logits)."""

    def __init__(self, cfg: PriorModelConfig, codebook_size: int, channels: int, max_len: int):
        # the prefix takes position 0 and the last token is never input: max_len positions
        super().__init__(cfg, codebook_size, channels, max_len, extra_ids=0, positions=max_len)

    def _inputs(self, tokens: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """(B, L, dim): the prefix, then the embeddings of tokens[:, :-1] (teacher forcing)."""
        prefix = self.prefix(labels, tokens.shape[0])
        return self.input_dropout(torch.cat([prefix, self.embed(tokens[:, :-1])], dim=1))

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, L, c) -> logits (B, L, c, K); position t sees tokens[:, :t] only."""
        tokens = check_tokens(tokens, self.channels, self.codebook_size, self.max_len)
        return self._logits(self.transformer(self._inputs(tokens, labels), causal=True))

    def loss(self, tokens: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean negative log-likelihood in nats per index, and {"nll", "acc" (top-1)}."""
        logits = self(tokens, labels)
        target = tokens.to(logits.device).long()
        nll = F.cross_entropy(logits.flatten(0, -2).float(), target.flatten())
        acc = (logits.argmax(-1) == target).float().mean()
        return nll, {"nll": float(nll.detach()), "acc": float(acc)}

    @torch.no_grad()
    def generate(self, n: int, length: int, labels: torch.Tensor | None = None, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0, generator: torch.Generator | None = None,
                 use_cache: bool = True, return_logits: bool = False):
        """(n, length, c) sampled tokens, one forward pass per position (`forward_passes` = length).

        use_cache=False recomputes the whole prefix at every step (reference and benchmark). With
        return_logits also the logits each position was sampled from, (n, length, c, K).
        """
        if not 1 <= length <= self.max_len:
            raise ValueError(f"length must be in [1, max_len={self.max_len}], got {length}")
        was_training = self.training
        self.eval()
        try:
            return self._generate(n, length, labels, temperature, top_k, top_p, generator, use_cache, return_logits)
        finally:
            self.train(was_training)

    def _generate(self, n: int, length: int, labels: torch.Tensor | None, temperature: float, top_k: int,
                  top_p: float, generator: torch.Generator | None, use_cache: bool, return_logits: bool):
        self.forward_passes = 0
        device = self.head.weight.device
        prefix = self.prefix(labels, n)
        tokens = torch.zeros(n, length, self.channels, dtype=torch.long, device=device)
        all_logits = [] if return_logits else None
        caches: list[KVCache] | None = None
        if use_cache:
            caches = self.transformer.new_caches(n, self.max_len, device, prefix.dtype)
        step_input = prefix
        for t in range(length):
            if use_cache:   # only the newest position: earlier keys and values come from the cache
                hidden = self.transformer(step_input, causal=True, caches=caches)
            else:           # the full prefix again
                inputs = torch.cat([prefix, self.embed(tokens[:, :t])], dim=1)
                hidden = self.transformer(inputs, causal=True)
            self.forward_passes += 1
            logits = self._logits(hidden[:, -1])                    # (n, c, K)
            tokens[:, t], _ = sample_logits(logits, temperature, top_k, top_p, generator)
            if all_logits is not None:
                all_logits.append(logits)
            step_input = self.embed(tokens[:, t: t + 1])
        if all_logits is not None:
            return tokens, torch.stack(all_logits, dim=1)
        return tokens
