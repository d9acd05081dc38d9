"""The token and bit rates of a tokenizer: bits per token and per position, tokens and bits per
second of audio (mels), the same per number of residual stages decoded, and an image's token grid.
A mixin of Tokenizer (they read its quantizer, frontend, config, downsample and
tokens_per_position), so they are its properties and methods as before: `tok.bits_per_second`."""
from __future__ import annotations

import math


class TokenRates:
    """Tokenizer's rate properties (see the module's docstring)."""

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def bits_per_token(self) -> float:
        return math.log2(self.codebook_size)

    @property
    def tokens_per_second(self) -> float:
        """Mels: tokens per second of audio (all channels of a position counted)."""
        if self.frontend is None:
            raise AttributeError("tokens_per_second applies to tokenizers of a time signal (mels)")
        return self.config.model.mel.frames_per_second / self.downsample * self.tokens_per_position

    @property
    def bits_per_second(self) -> float:
        return self.tokens_per_second * self.bits_per_token

    @property
    def stages(self) -> int | None:
        """Residual quantisers: the stages each position's tokens hold (decodable from the first k)."""
        return self.quantizer.stages

    @property
    def bits_per_position(self) -> float:
        """Bits of all the tokens of one position (all channels, or all stages)."""
        return self.tokens_per_position * self.bits_per_token

    def bits_by_stages(self, per_position: float) -> dict[str, float] | None:
        """Residual quantisers: {"k": bits of `per_position` positions decoded from the first k
        stages} for k = 1..stages (a lower rate from the same model); None for other quantisers."""
        n = self.stages
        if n is None:
            return None
        return {str(k): per_position * k * self.bits_per_token for k in range(1, n + 1)}

    def bits_per_second_by_stages(self) -> dict[str, float] | None:
        """Mels: bits per second of the first k stages, k = 1..stages (residual quantisers; else None)."""
        return self.bits_by_stages(self.tokens_per_second / self.tokens_per_position)

    def token_grid(self, height: int, width: int) -> tuple[int, ...]:
        """Images: token grid shape for an image of this size (with the channel axis when c > 1)."""
        f = self.downsample
        grid = (-(-height // f), -(-width // f))
        return grid + ((self.tokens_per_position,) if self.tokens_per_position > 1 else ())
