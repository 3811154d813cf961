"""Unigram tokenizer (`tokenizer.ggml.model` = "t5"), as llama.cpp's llm_tokenizer_ugm runs it.

Text is first normalized: user-defined tokens pass through as they are; otherwise the longest
prefix found in the precompiled charsmap (SentencePiece's normalization rules, an
XOR-compressed double array over UTF-8 bytes followed by NUL-terminated replacements) is
replaced, and anything else is copied one character at a time. Spaces become U+2581, a space
is prepended when the GGUF asks for it, and runs of spaces fold into one when it asks to
remove extra whitespace. Then Viterbi picks the tokenization with the highest total score
(user-defined tokens score 0; a character no token covers costs the lowest score minus 10, as
one unknown token, consecutive unknowns merged).
"""

from __future__ import annotations

import struct

import numpy as np

from corral.errors import UnsupportedError
from corral.tokenizer.base import Tokenizer
from corral.tokenizer.vocab import TokenAttr, Vocab

ESCAPED_SPACE = "\u2581"
_SPACE = ESCAPED_SPACE.encode()
_REPLACEMENT = "\ufffd".encode()
_END = ""  # trie key marking a complete token (characters are never empty)
_UNKNOWN_PENALTY = 10.0
# defaults llama.cpp assumes for "t5" vocabularies before reading the GGUF keys
UGM_DEFAULTS = {
    "tokenizer.ggml.eos_token_id": 1,
    "tokenizer.ggml.unknown_token_id": 2,
    "tokenizer.ggml.padding_token_id": 0,
    "tokenizer.ggml.add_bos_token": False,
    "tokenizer.ggml.add_eos_token": True,
    "tokenizer.ggml.add_space_prefix": True,
}


def _utf8_len(data: bytes, i: int) -> int:
    """Bytes of the UTF-8 character at data[i]; 0 if it is not a valid one."""
    lead = data[i]
    n = 1 if lead < 0x80 else 2 if lead >> 5 == 6 else 3 if lead >> 4 == 14 else 4
    if lead >> 3 == 0x1F or (lead >= 0x80 and lead >> 6 == 2):
        return 0
    if i + n > len(data) or any(b >> 6 != 2 for b in data[i + 1 : i + n]):
        return 0
    return n


class CharsMap:
    """SentencePiece's precompiled normalization map: longest-prefix replacement."""

    def __init__(self, blob: bytes) -> None:
        if len(blob) < 4:
            raise UnsupportedError("precompiled charsmap is truncated")
        (size,) = struct.unpack_from("<I", blob)
        if size + 4 >= len(blob):
            raise UnsupportedError("precompiled charsmap is truncated")
        self.units: list[int] = np.frombuffer(blob[4 : 4 + size], dtype="<u4").tolist()
        self.replacements = blob[4 + size :]

    def _base(self, i: int) -> int:
        u = self.units[i]
        return (u >> 10) << ((u & (1 << 9)) >> 6)

    def match(self, data: bytes, start: int) -> tuple[bytes, int] | None:
        """(replacement, bytes consumed) for the longest mapped prefix of data[start:]."""
        units, n_units = self.units, len(self.units)
        node = self._base(0)
        best_len = best_off = 0
        for j in range(start, len(data)):
            c = data[j]
            if c == 0:
                break
            node ^= c
            if node >= n_units or units[node] & ((1 << 31) | 0xFF) != c:
                break
            leaf = (units[node] >> 8) & 1
            node ^= self._base(node)
            if leaf:
                best_len, best_off = j - start + 1, units[node] & ((1 << 31) - 1)
        if not best_len:
            return None
        end = self.replacements.find(b"\x00", best_off)
        return self.replacements[best_off : end if end >= 0 else None], best_len


class UGMTokenizer(Tokenizer):
    """llama.cpp's Unigram (T5) algorithm over the GGUF vocabulary, scores and charsmap."""

    def __init__(
        self,
        vocab: Vocab,
        scores: list[float],
        charsmap: bytes | None = None,
        remove_extra_whitespaces: bool = False,
    ) -> None:
        super().__init__(vocab)
        self._charsmap = CharsMap(charsmap) if charsmap else None
        self._merge_spaces = remove_extra_whitespaces
        unk = vocab.special_ids.get("unk")
        if unk is None:
            raise UnsupportedError("a Unigram (t5) vocabulary needs an unknown token")
        self._unk = unk
        self._trie: dict[str, dict] = {}
        self._scores = list(scores)
        user: list[bytes] = []
        normal_scores = []
        for tid, (text, attr) in enumerate(zip(vocab.tokens, vocab.attrs, strict=True)):
            if attr & TokenAttr.NORMAL:
                normal_scores.append(scores[tid])
            if attr & (TokenAttr.NORMAL | TokenAttr.USER_DEFINED | TokenAttr.UNUSED) and text:
                node = self._trie
                for ch in text:
                    node = node.setdefault(ch, {})
                node[_END] = tid  # type: ignore[assignment]
            if attr & TokenAttr.USER_DEFINED:
                self._scores[tid] = 0.0  # more likely than any log probability
                if text:
                    user.append(text.encode())
        self._user = sorted(set(user), key=len, reverse=True)  # longest match first
        self._unk_score = min(normal_scores, default=0.0) - _UNKNOWN_PENALTY

    # -- normalization ------------------------------------------------------------------

    def _normalize_prefix(self, data: bytes, i: int) -> tuple[bytes, int]:
        for text in self._user:
            if data.startswith(text, i):
                return text, len(text)
        if self._charsmap is not None and (m := self._charsmap.match(data, i)) is not None:
            return m
        n = _utf8_len(data, i)
        return (data[i : i + n], n) if n else (_REPLACEMENT, 1)

    def normalize(self, text: str) -> str:
        """The text Viterbi runs on: charsmap applied, spaces escaped and folded."""
        data = text.encode()
        out = bytearray()
        prepend, merge = self.vocab.add_space_prefix, self._merge_spaces
        prepended = in_word = False
        i = 0
        while i < len(data):
            rep, used = self._normalize_prefix(data, i)
            for c in rep:
                if c != 0x20:
                    if not in_word:
                        in_word = True
                        if (prepend and not prepended) or merge:
                            out += _SPACE
                            prepended = True
                    out.append(c)
                else:
                    in_word = False
                    if not merge:
                        out += _SPACE
            i += used
        return out.decode("utf-8", "replace")

    # -- Viterbi ------------------------------------------------------------------------

    def _encode_fragments(self, frags: list[str | int], out: list[int]) -> None:
        for frag in frags:
            if isinstance(frag, int):
                out.append(frag)
            else:
                self._encode_text(self.normalize(frag), out)

    def _encode_text(self, s: str, out: list[int]) -> None:
        """Append the best-scoring tokenization of normalized text `s` to `out`."""
        n = len(s)
        if not n:
            return
        score = [-float("inf")] * (n + 1)
        token = [self._unk] * (n + 1)
        start = [0] * (n + 1)  # where the best token ending here begins
        score[0] = 0.0
        for i in range(n):
            here = score[i]
            node: dict | None = self._trie
            j, single = i, False
            while j < n and node is not None:
                node = node.get(s[j])
                j += 1
                if node is not None and (tid := node.get(_END)) is not None:
                    single = single or j == i + 1
                    cand = here + self._scores[tid]
                    if cand > score[j]:
                        score[j], token[j], start[j] = cand, tid, i
            if not single:  # nothing covers this character: one unknown token
                cand = here + self._unk_score
                if cand > score[i + 1]:
                    score[i + 1], token[i + 1], start[i + 1] = cand, self._unk, i
        ids: list[int] = []
        pos, prev_unk = n, False
        while True:
            is_unk = token[pos] == self._unk
            if not (prev_unk and is_unk):
                ids.append(token[pos])
            if start[pos] == 0:
                break
            prev_unk = is_unk
            pos = start[pos]
        out.extend(reversed(ids))

    def _normal_piece(self, text: str) -> bytes:
        return text.replace(ESCAPED_SPACE, " ").encode()
