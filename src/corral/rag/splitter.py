"""Blocks -> chunks that the embedding model reads whole.

Defaults (`SplitOptions.for_model`): a chunk holds at most the embedder's own maximum input
(all-MiniLM-L6-v2: 256 tokens, [CLS]/[SEP] and the heading line included), and repeats up
to 1/8 of that (32 tokens for MiniLM) from the end of the previous chunk of the same section.

Tokens are counted with the embedder's tokenizer (`Embedder.count_tokens`), and every chunk's
final text is counted again before it is emitted, so no chunk is ever cut by the model: a
hand-sized character splitter silently loses the tail of chunks that tokenize long.

Structure is kept: a chunk never spans two headings; paragraphs are packed whole; one
paragraph too long for a chunk is cut at lines, then sentences, then words, then characters
(each level only where the one above does not fit).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import groupby

from corral.rag.types import Block, Chunk

Counter = Callable[[Sequence[str]], list[int]]
"""Token count of each text, special tokens included (`Embedder.count_tokens`)."""

_SENTENCE = re.compile(r"(?<=[.!?;:])\s+")


@dataclass(frozen=True)
class SplitOptions:
    """How big chunks are, in the embedding model's tokens."""

    max_tokens: int
    overlap_tokens: int = 0

    def __post_init__(self) -> None:
        if self.max_tokens < 8:
            raise ValueError(f"max_tokens {self.max_tokens} is too small for a chunk")
        if not 0 <= self.overlap_tokens < self.max_tokens // 2:
            raise ValueError("overlap_tokens must be >= 0 and under half of max_tokens")

    @classmethod
    def for_model(cls, max_tokens: int, overlap_tokens: int | None = None) -> SplitOptions:
        """The documented defaults for an embedder reading `max_tokens`."""
        return cls(max_tokens, max_tokens // 8 if overlap_tokens is None else overlap_tokens)


@dataclass(frozen=True)
class _Piece:
    text: str
    start: int
    end: int
    sep: str  # what joins it to the piece before it in the same block/section
    tokens: int  # without special tokens


class Splitter:
    """Splits one document's blocks into chunks; see the module docstring."""

    def __init__(self, count: Counter, options: SplitOptions) -> None:
        self.count = count
        self.options = options
        self._special = count([""])[0]  # [CLS] + [SEP] for BERT: counted once per chunk

    def split(self, blocks: Sequence[Block], path: str) -> list[Chunk]:
        chunks: list[Chunk] = []
        for heading, group in groupby(blocks, key=lambda b: b.heading):
            prefix = Chunk("", path, 0, 0, heading).embed_text  # heading line (+ newline)
            budget = self.options.max_tokens - self._prefix_tokens(prefix)
            if budget < 4:  # an absurd heading: drop it rather than starve the text
                heading, budget = (), self.options.max_tokens - self._special
            pieces = self._pieces(list(group), budget)
            chunks.extend(self._pack(pieces, budget, path, heading))
        return chunks

    def _prefix_tokens(self, prefix: str) -> int:
        return self.count([prefix])[0] if prefix else self._special

    def _tokens(self, texts: Sequence[str]) -> list[int]:
        return [n - self._special for n in self.count(texts)] if texts else []

    # -- blocks -> pieces that fit -----------------------------------------------------------

    def _pieces(self, blocks: list[Block], budget: int) -> list[_Piece]:
        out: list[_Piece] = []
        for block, n in zip(blocks, self._tokens([b.text for b in blocks]), strict=True):
            if n <= budget:
                out.append(_Piece(block.text, block.start_line, block.end_line, "\n\n", n))
            else:
                parts = self._cut(block.text, block.start_line, budget, 0)
                out.extend(
                    _Piece(p.text, p.start, p.end, "\n\n" if i == 0 else p.sep, p.tokens)
                    for i, p in enumerate(parts)
                )
        return out

    def _cut(self, text: str, line: int, budget: int, level: int) -> list[_Piece]:
        """`text` (starting at `line`) cut into pieces of at most `budget` tokens each."""
        if level == 0:
            parts = [(t, line + i, "\n") for i, t in enumerate(text.split("\n"))]
        elif level == 1:
            parts = [(t, line, " ") for t in _SENTENCE.split(text)]
        elif level == 2:
            parts = [(t, line, " ") for t in text.split(" ")]
        else:
            return self._cut_chars(text, line, budget)
        parts = [p for p in parts if p[0].strip()]
        out: list[_Piece] = []
        for (t, ln, sep), n in zip(parts, self._tokens([p[0] for p in parts]), strict=True):
            if n <= budget:
                out.append(_Piece(t, ln, ln, sep, n))
            else:
                sub = self._cut(t, ln, budget, level + 1)
                out.extend(_Piece(p.text, p.start, p.end, sep if i == 0 else p.sep, p.tokens)
                           for i, p in enumerate(sub))  # fmt: skip
        return out

    def _cut_chars(self, text: str, line: int, budget: int) -> list[_Piece]:
        """A "word" longer than a chunk (a base64 blob, a URL): the longest prefix that
        fits, found by bisection on characters, again and again."""
        out: list[_Piece] = []
        while text:
            lo, hi = 1, len(text)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self._tokens([text[:mid]])[0] <= budget:
                    lo = mid
                else:
                    hi = mid - 1
            head = text[:lo]
            out.append(_Piece(head, line, line, "", self._tokens([head])[0]))
            text = text[lo:]
        return out

    # -- pieces -> chunks ---------------------------------------------------------------------

    def _pack(
        self, pieces: list[_Piece], budget: int, path: str, heading: tuple[str, ...]
    ) -> list[Chunk]:
        """Greedy packing; each chunk's exact count is checked, and pieces that push it over
        (tokenizers may count a joined text differently from its parts) move on."""
        out: list[Chunk] = []
        i = 0
        carry: list[_Piece] = []  # overlap from the previous chunk
        while i < len(pieces):
            cur = list(carry)
            used = sum(p.tokens for p in cur)
            fresh = 0
            # the estimate (sum of parts) is exact for WordPiece; other tokenizers may count a
            # join differently, which the exact check below corrects
            while i < len(pieces) and used + pieces[i].tokens <= budget:
                cur.append(pieces[i])
                used += pieces[i].tokens
                i += 1
                fresh += 1
            if fresh == 0:  # the overlap leaves no room for the next piece: drop it
                if carry:
                    carry = []
                    continue
                cur, i, fresh = [pieces[i]], i + 1, 1
            while len(cur) > 1 and fresh > 1 and not self._fits(cur, heading, path):
                cur.pop()
                i -= 1
                fresh -= 1
            while len(cur) > 1 and len(cur) > fresh and not self._fits(cur, heading, path):
                cur.pop(0)  # overlap pieces go first when the exact count is over
            out.append(self._chunk(cur, path, heading))
            carry = self._overlap(cur[len(cur) - fresh :]) if i < len(pieces) else []
        return out

    def _overlap(self, pieces: list[_Piece]) -> list[_Piece]:
        """The trailing pieces of a chunk that fit in the overlap budget (never all of it)."""
        keep: list[_Piece] = []
        total = 0
        for p in reversed(pieces[1:]):
            if total + p.tokens > self.options.overlap_tokens:
                break
            keep.insert(0, p)
            total += p.tokens
        return keep

    def _fits(self, pieces: list[_Piece], heading: tuple[str, ...], path: str) -> bool:
        chunk = self._chunk(pieces, path, heading)
        return self.count([chunk.embed_text])[0] <= self.options.max_tokens

    @staticmethod
    def _chunk(pieces: list[_Piece], path: str, heading: tuple[str, ...]) -> Chunk:
        text = pieces[0].text + "".join(p.sep + p.text for p in pieces[1:])
        return Chunk(text, path, pieces[0].start, max(p.end for p in pieces), heading)


def split_blocks(
    blocks: Sequence[Block], path: str, count: Counter, options: SplitOptions
) -> list[Chunk]:
    """Chunks of one document (see `Splitter`)."""
    return Splitter(count, options).split(blocks, path)
