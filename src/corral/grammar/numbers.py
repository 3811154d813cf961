"""A bound on the digits of JSON numbers, on top of a JSON grammar.

llguidance's JSON accepts number literals of any length, and a small model sampling inside
one can write digits until max_tokens cuts the JSON (seen with SmolLM2: "0.7599999999...").
llama.cpp's JSON-schema grammars allow at most 16 digits in each part of a number (integral,
fraction, exponent); `NumberLimit` enforces the same: outside strings, once the current run
of digits reaches 16, tokens that would add more digits are masked (the grammar then allows
only what may follow: '.', 'e', ',', '}', ']').
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from corral.tokenizer import Tokenizer

MAX_DIGITS = 16  # per part of a number, as llama.cpp's json-schema-to-grammar

_CACHE: weakref.WeakKeyDictionary[Any, tuple[torch.Tensor, list[bytes]]] = (
    weakref.WeakKeyDictionary()
)
_LOCK = threading.Lock()


def _vocab_digits(tok: Tokenizer) -> tuple[torch.Tensor, list[bytes]]:
    """(leading ASCII digits of each token [V] int32, each token's bytes), once per tokenizer."""
    with _LOCK:
        hit = _CACHE.get(tok)
        if hit is None:
            pieces = [tok.token_to_piece(i, special=True) for i in range(tok.vocab_size)]
            lead = [len(p) - len(p.lstrip(b"0123456789")) for p in pieces]
            hit = (torch.tensor(lead, dtype=torch.int32), pieces)
            _CACHE[tok] = hit
        return hit


class NumberLimit:
    """Tracks the JSON text produced so far (strings, escapes, the current digit run) and
    masks tokens whose leading digits would make a number part longer than MAX_DIGITS."""

    def __init__(self, tok: Tokenizer) -> None:
        self._lead, self._pieces = _vocab_digits(tok)
        self._in_string = False
        self._escape = False
        self._run = 0  # digits in the number part being written (0 outside numbers)

    def feed(self, data: bytes) -> None:
        for ch in data:
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif ch == 0x5C:  # backslash
                    self._escape = True
                elif ch == 0x22:  # closing quote
                    self._in_string = False
            elif ch == 0x22:
                self._in_string, self._run = True, 0
            elif 0x30 <= ch <= 0x39:
                self._run += 1
            else:  # '.', 'e', '-', ',', ... end the part
                self._run = 0

    def accept(self, token: int) -> None:
        if 0 <= token < len(self._pieces):
            self.feed(self._pieces[token])

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        if self._in_string or self._run == 0:
            return logits
        too_long = (self._lead > MAX_DIGITS - self._run).to(logits.device)
        return logits.masked_fill(too_long, float("-inf"))
