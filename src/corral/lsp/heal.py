"""Token healing for the indentation typed before the cursor.

A prompt that ends in the blanks the user typed ends mid-token: code is tokenized as
`"   " + " return"`, so after a prompt ending in four spaces the model sees an unlikely
split and writes a stray space, or gives up on code altogether. The healed prompt leaves
the blanks out, and this constraint makes the first tokens write them again (any tokens
whose text starts with them, or spells a part of them), so the model chooses its own
split. The answer then starts with exactly those blanks, which are dropped.
"""

from __future__ import annotations

import torch

from corral.engine.constraints import LogitsConstraint
from corral.tokenizer import Tokenizer


class BlankPieces:
    """The vocabulary's tokens that start with a space or tab, by text (built once)."""

    def __init__(self, tok: Tokenizer) -> None:
        self.text: dict[int, str] = {}
        for i in range(tok.vocab_size):
            piece = tok.token_to_piece(i)
            if piece[:1] in (b" ", b"\t"):
                self.text[i] = piece.decode("utf-8", "replace")
        self._allowed: dict[str, torch.Tensor] = {}

    def allowed(self, rest: str) -> torch.Tensor:
        """Ids of tokens that write `rest` next: starting with it, or a part of it."""
        if rest not in self._allowed:
            ids = [i for i, s in self.text.items() if s.startswith(rest) or rest.startswith(s)]
            self._allowed[rest] = torch.tensor(sorted(ids), dtype=torch.long)
        return self._allowed[rest]


class HealBlanks:
    """A LogitsConstraint: the first tokens write `blanks`; then `inner` (if any) rules."""

    def __init__(
        self, pieces: BlankPieces, blanks: str, inner: LogitsConstraint | None = None
    ) -> None:
        self.pieces = pieces
        self.rest = blanks
        self.inner = inner

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        if self.rest:
            allowed = self.pieces.allowed(self.rest)
            if len(allowed):
                out = torch.full_like(logits, float("-inf"))
                out[allowed] = logits[allowed]
                logits = out
        return self.inner.mask(logits) if self.inner is not None else logits

    def accept(self, token: int) -> None:
        if self.rest:
            piece = self.pieces.text.get(token, "")
            self.rest = "" if piece.startswith(self.rest) else self.rest[len(piece) :]
        if self.inner is not None:
            self.inner.accept(token)

    def is_done(self) -> bool:
        return self.inner.is_done() if self.inner is not None else False
