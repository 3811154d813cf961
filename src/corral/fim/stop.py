"""Ending a middle on the model's own section markers, the same way on every route.

The engine stops on the vocabulary's end-of-generation set, which holds some FIM tokens
(padding, Qwen's file separator) but not all: StarCoder2's `<file_sep>`, CodeLlama's
`▁<EOT>`, CodeGemma's `<|file_separator|>` or a fresh `<fim_prefix>` would otherwise be
generated past. `FimStop` plugs into the engine's per-request constraint hook: it masks
nothing itself (or what an inner constraint masks, a grammar or the LSP's blank healing) and
ends the request right after one of those tokens. Control tokens decode to no text; for
markers that do render, their texts are also stop strings so the marker never reaches the
client.

`FimStops` is the one piece every suffix-aware caller uses (llama.cpp /infill, Tabby, the
OpenAI and ollama `suffix` fields, `corral lsp`): `FimStops.of_model(...)` for a model's
markers, then `.stop_strings(given)` and `.constraint(inner)` for the engine request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from corral.fim.tokens import find_fim_tokens
from corral.tokenizer import Tokenizer

if TYPE_CHECKING:
    from corral.engine.constraints import LogitsConstraint


class FimStop:
    """A LogitsConstraint that is done after a stop token; `inner` (if any) does the
    masking and may end the request too."""

    def __init__(self, stop_ids: frozenset[int], inner: LogitsConstraint | None = None) -> None:
        self.stop_ids = stop_ids
        self.inner = inner
        self.done = False

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        return logits if self.inner is None else self.inner.mask(logits)

    def accept(self, token: int) -> None:
        if token in self.stop_ids:
            self.done = True
        elif self.inner is not None:
            self.inner.accept(token)

    def is_done(self) -> bool:
        return self.done or (self.inner is not None and self.inner.is_done())


def stop_texts(tok: Tokenizer, stop_ids: frozenset[int]) -> list[str]:
    """The visible texts of `stop_ids` (control tokens have none)."""
    texts = (tok.token_to_piece(t).decode("utf-8", "replace") for t in sorted(stop_ids))
    return [s for s in texts if s.strip()]


@dataclass(frozen=True)
class FimStops:
    """The tokens that end a middle and the texts of those that render."""

    ids: frozenset[int]
    texts: tuple[str, ...] = ()

    @staticmethod
    def of(tok: Tokenizer, ids: frozenset[int]) -> FimStops:
        """Stops for `ids` (a FimPrompt's `stop_ids`)."""
        return FimStops(ids, tuple(stop_texts(tok, ids)))

    @staticmethod
    def of_model(tok: Tokenizer, metadata: Mapping[str, Any] | None = None) -> FimStops:
        """The model's FIM markers; none for a model without FIM tokens."""
        found = find_fim_tokens(tok, metadata)
        return FimStops.of(tok, found.stop_ids if found is not None else frozenset())

    def stop_strings(self, given: Iterable[str] = ()) -> list[str]:
        """The request's own stop strings, then the markers' texts."""
        return [*given, *self.texts]

    def constraint(self, inner: LogitsConstraint | None = None) -> LogitsConstraint | None:
        """The request's constraint: `inner` ended also by the markers."""
        return FimStop(self.ids, inner) if self.ids else inner

    def factory(
        self, inner: Callable[[], LogitsConstraint | None] | None = None
    ) -> Callable[[], LogitsConstraint | None]:
        """A per-request constraint factory (the server's `submit` takes one) made from
        an inner factory."""
        return lambda: self.constraint(inner() if inner is not None else None)
