"""SentencePiece-style tokenizer (`tokenizer.ggml.model` = "llama"), as llama.cpp runs it.

Not SentencePiece itself: llama.cpp's llm_tokenizer_spm, which starts from single
characters and repeatedly merges the adjacent pair whose concatenation is the vocabulary
token with the highest score (leftmost first on ties), then emits each final symbol as its
token, or as <0xXX> byte tokens when it is not in the vocabulary. Spaces are escaped to
U+2581 first, and when the GGUF asks for a space prefix every plain fragment (the start of
the text, or text after a special token) gets one.
"""

from __future__ import annotations

import heapq

from corral.errors import UnsupportedError
from corral.tokenizer.base import Tokenizer
from corral.tokenizer.vocab import Vocab

ESCAPED_SPACE = "\u2581"


class SPMTokenizer(Tokenizer):
    """llama.cpp's SPM algorithm over the GGUF vocabulary and scores."""

    def __init__(self, vocab: Vocab, scores: list[float]) -> None:
        super().__init__(vocab)
        self._scores = scores
        ids = vocab.token_to_id
        # byte -> token for the fallback: "<0xAB>", else the byte itself as a one-char text
        self._byte_ids: list[int | None] = [
            ids.get(f"<0x{b:02X}>", ids.get(chr(b)) if b < 0x80 else None) for b in range(256)
        ]

    def _encode_fragments(self, frags: list[str | int], out: list[int]) -> None:
        # llama.cpp prefixes a fragment that starts the text or follows a special token;
        # partitioning never leaves two plain fragments side by side, so that is all of them
        prefix = " " if self.vocab.add_space_prefix else ""
        for frag in frags:
            if isinstance(frag, int):
                out.append(frag)
            else:
                self._encode_text((prefix + frag).replace(" ", ESCAPED_SPACE), out)

    def _encode_text(self, text: str, out: list[int]) -> None:
        """Merge characters into tokens by best score, then append the ids to `out`."""
        ids, scores = self.vocab.token_to_id, self._scores
        sym = list(text)  # the symbols; "" once merged into the left neighbour
        n = len(sym)
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        prv = list(range(-1, n - 1))
        heap: list[tuple[float, int, int, int]] = []

        def try_pair(left: int, right: int) -> None:
            if left < 0 or right < 0:
                return
            joined = sym[left] + sym[right]
            tid = ids.get(joined)
            if tid is not None:
                # highest score first, then leftmost: (-score, left) on a min-heap
                heapq.heappush(heap, (-scores[tid], left, right, len(joined)))

        for i in range(1, n):
            try_pair(i - 1, i)
        while heap:
            _, left, right, size = heapq.heappop(heap)
            a, b = sym[left], sym[right]
            # stale entry: one side was merged away or has grown since it was queued
            if not a or not b or len(a) + len(b) != size:
                continue
            sym[left] = a + b
            sym[right] = ""
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prv[nxt[right]] = left
            try_pair(prv[left], left)
            try_pair(left, nxt[left])

        i = 0
        while i >= 0:
            tid = ids.get(sym[i])
            if tid is not None:
                out.append(tid)
            else:
                out.extend(self._byte_token(b) for b in sym[i].encode())
            i = nxt[i]

    def _byte_token(self, byte: int) -> int:
        tid = self._byte_ids[byte]
        if tid is None:
            raise UnsupportedError(f"the vocabulary has no token for byte 0x{byte:02X}")
        return tid

    def _normal_piece(self, text: str) -> bytes:
        return text.replace(ESCAPED_SPACE, " ").encode()
