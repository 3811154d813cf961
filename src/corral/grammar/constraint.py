"""`GrammarConstraint`: an llguidance matcher as the engine's `LogitsConstraint`.

Each request gets its own matcher (they hold the parse state), built from the compiled
grammar text in about a millisecond; the tokenizer side is built once per model
(corral.grammar.vocab). Per token: the matcher fills a bitmask (one bit per token, computed
in Rust without the GIL), `apply_bitmask` turns it into -inf on the logits, and the drawn
token advances the matcher.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from corral.grammar.mask import apply_bitmask, bitmask_words
from corral.grammar.numbers import NumberLimit
from corral.grammar.spec import GrammarError, GrammarKind, GrammarSpec, to_llguidance
from corral.grammar.vocab import llg_tokenizer

if TYPE_CHECKING:
    from corral.tokenizer import Tokenizer


class GrammarConstraint:
    """Allows only tokens that keep the output inside a grammar; done when it is complete."""

    def __init__(self, tokenizer: Tokenizer, grammar: str, json_numbers: bool = False) -> None:
        import llguidance

        self._lltok = llg_tokenizer(tokenizer)
        self._matcher = llguidance.LLMatcher(self._lltok, grammar, log_level=0)
        if self._matcher.is_error():
            raise GrammarError(f"the grammar does not compile: {self._matcher.get_error()}")
        self._bitmask = torch.full((bitmask_words(tokenizer.vocab_size),), -1, dtype=torch.int32)
        # what to allow when the matcher failed (it never should): end the generation
        self._end_ids = torch.tensor(sorted(tokenizer.eog_ids) or [0], dtype=torch.long)
        # JSON output: number literals bounded as llama.cpp's schema grammars bound them
        self._numbers = NumberLimit(tokenizer) if json_numbers else None

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        m = self._matcher
        m.unsafe_compute_mask_ptr(self._bitmask.data_ptr(), self._bitmask.numel() * 4)
        if m.is_error():
            out = torch.full_like(logits, float("-inf"))
            out[self._end_ids] = logits[self._end_ids]
            return out
        out = apply_bitmask(logits, self._bitmask)
        return out if self._numbers is None else self._numbers.mask(out)

    def accept(self, token: int) -> None:
        self._matcher.consume_token(token)
        if self._numbers is not None:
            self._numbers.accept(token)

    def is_done(self) -> bool:
        return self._matcher.is_stopped()

    def consume_text(self, data: bytes) -> bool:
        """Advance past text produced outside the mask (as tokens llguidance chooses);
        False, leaving the matcher failed, if the grammar does not allow it."""
        ids = self._lltok.tokenize_bytes(data)
        if self._numbers is not None:
            self._numbers.feed(data)
        return self._matcher.consume_tokens(ids)

    @property
    def complete(self) -> bool:
        """The output so far is a whole sentence of the grammar (it may go on)."""
        return self._matcher.is_accepting() and not self._matcher.is_error()

    @property
    def error(self) -> str:
        """Why the matcher failed, or ""."""
        return self._matcher.get_error()


def make_constraint(
    tokenizer: Tokenizer, spec: GrammarSpec | str, json_numbers: bool | None = None
) -> GrammarConstraint:
    """A fresh constraint for one request: `spec`, or llguidance grammar text already
    checked by `to_llguidance`. Raises GrammarError for a bad spec. `json_numbers` bounds
    the digits of JSON numbers (default: for JSON schema / JSON object specs)."""
    grammar = spec if isinstance(spec, str) else to_llguidance(spec)
    if json_numbers is None:
        json_numbers = isinstance(spec, GrammarSpec) and spec.kind in _JSON_KINDS
    return GrammarConstraint(tokenizer, grammar, json_numbers)


_JSON_KINDS = (GrammarKind.JSON_SCHEMA, GrammarKind.JSON_OBJECT)
