"""Prices and per-call cost: from real token usage when known, estimated from text when not.

Conventions: prices are US dollars per 1 million tokens (what providers publish); costs are
US dollars per call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from metarouter.errors import ConfigError
from metarouter.validation import MAX_PRICE_PER_MILLION_USD, check_fields

__all__ = [
    "CHARS_PER_TOKEN",
    "DEFAULT_OUTPUT_TOKENS",
    "Price",
    "estimate_tokens",
]

#: Rule of thumb for English text with BPE tokenizers (OpenAI's published estimate): ~4 chars/token.
CHARS_PER_TOKEN = 4.0

#: Output length assumed when a call's answer length is unknown (LLMRouter logs carry no
#: responses). A per-model constant, as the dataset README suggests; see docs/data.md.
DEFAULT_OUTPUT_TOKENS = 256


def estimate_tokens(text: str) -> int:
    """Estimate the token count of ``text`` as ``ceil(len(text) / 4)`` (at least 1)."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


@dataclass(frozen=True)
class Price:
    """A model's token prices.

    Attributes:
        input_per_million: USD per 1M prompt tokens.
        output_per_million: USD per 1M completion tokens.
    """

    input_per_million: float
    output_per_million: float

    def __post_init__(self) -> None:
        check_fields(
            self,
            ("input_per_million", "output_per_million"),
            error=ConfigError,
            maximum=MAX_PRICE_PER_MILLION_USD,
            fix="Fix: copy the provider's published price in USD per 1M tokens, e.g. 0.15.",
        )

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """Cost in USD of a call with the given real token usage."""
        return (
            input_tokens * self.input_per_million + output_tokens * self.output_per_million
        ) / 1e6

    def estimate(self, text: str, output_tokens: int = DEFAULT_OUTPUT_TOKENS) -> float:
        """Estimated cost in USD of sending ``text`` and receiving ``output_tokens`` tokens."""
        return self.cost(estimate_tokens(text), output_tokens)
