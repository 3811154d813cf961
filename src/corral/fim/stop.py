"""Ending a middle on the model's own section markers.

The engine stops on the vocabulary's end-of-generation set, which holds some FIM tokens
(padding, Qwen's file separator) but not all: StarCoder2's `<file_sep>`, CodeLlama's
`▁<EOT>` or a fresh `<fim_prefix>` would otherwise be generated past. `FimStop` plugs into
the engine's per-request constraint hook: it masks nothing and ends the request right after
one of those tokens. Control tokens decode to no text; for markers that do render, their
texts are also returned as stop strings so the marker never reaches the client.
"""

from __future__ import annotations

import torch

from corral.tokenizer import Tokenizer


class FimStop:
    """A LogitsConstraint that allows everything and is done after a stop token."""

    def __init__(self, stop_ids: frozenset[int]) -> None:
        self.stop_ids = stop_ids
        self.done = False

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def accept(self, token: int) -> None:
        if token in self.stop_ids:
            self.done = True

    def is_done(self) -> bool:
        return self.done


def stop_texts(tok: Tokenizer, stop_ids: frozenset[int]) -> list[str]:
    """The visible texts of `stop_ids` (control tokens have none)."""
    texts = (tok.token_to_piece(t).decode("utf-8", "replace") for t in sorted(stop_ids))
    return [s for s in texts if s.strip()]
