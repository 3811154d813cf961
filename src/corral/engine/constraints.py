"""Constrained decoding hook: a per-request object that masks the logits before each draw.

Grammar engines (JSON Schema, GBNF, tool-call formats) implement `LogitsConstraint`; the
engine calls `mask` before sampling, `accept` with the chosen token, and ends the request
when `is_done` says the grammar has been completed. Each request owns its constraint, so
constrained and free requests share one continuous batch.
"""

from __future__ import annotations

from typing import Protocol

import torch


class LogitsConstraint(Protocol):
    """A matcher that allows only the tokens that keep the output valid."""

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """logits [V] float32 -> logits with every disallowed token set to -inf."""
        ...

    def accept(self, token: int) -> None:
        """Advance past the token that was drawn."""
        ...

    def is_done(self) -> bool:
        """The output is complete: nothing more may be generated."""
        ...


class AllowedTokens:
    """The simplest constraint: a fixed set of allowed tokens, for `max_steps` steps."""

    def __init__(self, allowed: set[int], max_steps: int) -> None:
        self.allowed = torch.tensor(sorted(allowed), dtype=torch.long)
        self.left = max_steps

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        out = torch.full_like(logits, float("-inf"))
        out[self.allowed] = logits[self.allowed]
        return out

    def accept(self, token: int) -> None:
        self.left -= 1

    def is_done(self) -> bool:
        return self.left <= 0
