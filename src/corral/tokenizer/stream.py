"""Streaming detokenizer: token ids in, text out, never half a UTF-8 character.

A token's piece can end inside a multi-byte character (byte-fallback tokens, byte-level BPE
pieces of an emoji), so the bytes are fed through an incremental UTF-8 decoder that holds
back an incomplete tail until the next piece completes it. Bytes that can never become
valid UTF-8 come out as U+FFFD instead of stalling the stream.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable


class StreamDecoder:
    """Turns generated token ids into text as they arrive.

    The text is the concatenation of the tokens' pieces (llama_token_to_piece), which is
    what llama.cpp's own streaming prints: no leading-space strip and no space clean-up,
    since those only make sense for a whole text.
    """

    def __init__(self, piece: Callable[[int], bytes]) -> None:
        self._piece = piece
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """Add one token; return the text that is complete now (may be "")."""
        return self._utf8.decode(self._piece(token_id))

    def flush(self) -> str:
        """End of stream: return what is held back (an incomplete tail becomes U+FFFD)."""
        text = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return text
