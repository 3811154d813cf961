"""corral's vocabulary as llguidance sees it: one `LLTokenizer` per tokenizer, built once.

llguidance needs the bytes of every token and a way to tokenize text (it re-tokenizes
forced text and checks token healing). Control tokens, and user-defined tokens written like
markup (`<|im_end|>`, `<start_of_turn>`), are marked special with a 0xFF prefix, as
llama.cpp's integration does: a grammar can then name them (`<|im_end|>` in Lark) but no
text rule ever matches them, so a JSON string cannot smuggle an end-of-turn token.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any

from corral.tokenizer.vocab import TokenAttr

if TYPE_CHECKING:
    import llguidance

    from corral.tokenizer import Tokenizer

# Building the tokenizer info walks the whole vocabulary (0.1-1 s for 262k tokens): once per
# tokenizer, shared by every request and thread.
_CACHE: weakref.WeakKeyDictionary[Any, llguidance.LLTokenizer] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def is_marked_special(tok: Tokenizer, i: int, piece: bytes) -> bool:
    """Whether token `i` (whose bytes are `piece`) is a special token to llguidance."""
    attr = tok.vocab.attrs[i]
    if attr & TokenAttr.CONTROL:
        return True
    return bool(attr & TokenAttr.USER_DEFINED) and piece.startswith(b"<") and piece.endswith(b">")


class _Wrapper:
    """The duck type `llguidance.TokenizerWrapper` expects, over a corral Tokenizer."""

    is_tokenizer_wrapper = True

    def __init__(self, tok: Tokenizer) -> None:
        self._tok = tok
        eos = tok.eos_id if tok.eos_id is not None else min(tok.eog_ids, default=0)
        self.eos_token_id = eos
        self.bos_token_id = tok.bos_id
        tokens: list[bytes] = []
        special: list[int] = []
        for i in range(tok.vocab_size):
            piece = tok.token_to_piece(i, special=True)
            if is_marked_special(tok, i, piece):
                special.append(i)
                piece = b"\xff" + piece
            tokens.append(piece)
        self.tokens = tokens
        self.special_token_ids = special

    def __call__(self, text: str | bytes) -> list[int]:
        """Token ids of plain text (no BOS, special-token texts stay text)."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        return self._tok.encode(text, add_special=False, parse_special=False)


def llg_tokenizer_wrapper(tok: Tokenizer) -> _Wrapper:
    """The raw wrapper (for benchmarks that time the LLTokenizer build themselves)."""
    return _Wrapper(tok)


def llg_tokenizer(tok: Tokenizer) -> llguidance.LLTokenizer:
    """The LLTokenizer for `tok`, built on first use; every end-of-generation token ends
    a grammar."""
    with _LOCK:
        cached = _CACHE.get(tok)
        if cached is not None:
            return cached
    import llguidance

    eog = sorted(tok.eog_ids) or None
    built = llguidance.LLTokenizer(_Wrapper(tok), n_vocab=tok.vocab_size, eos_token=eog)
    with _LOCK:
        _CACHE[tok] = built
    return built
