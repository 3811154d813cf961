"""The RWKV "world" tokenizer (`tokenizer.ggml.model` = "rwkv"), as llama.cpp runs it.

Every token stands for a byte string, stored in the GGUF escaped the way Python prints bytes
(`\\xNN`, `\\t`, `\\n`, `\\r`, `\\\\`, `\\'`). Encoding walks the UTF-8 bytes of a fragment and
takes, at each position, the longest token in a trie of all the vocabulary's byte strings
(control tokens such as "<s>" included, as in llama.cpp's llm_tokenizer_rwkv); a byte no
token starts with gives the unknown token, if the vocabulary has one.
"""

from __future__ import annotations

from corral.tokenizer.base import Tokenizer
from corral.tokenizer.vocab import Vocab

_ESCAPES = {ord("t"): 0x09, ord("n"): 0x0A, ord("r"): 0x0D}


def unescape_rwkv_token(text: str) -> bytes:
    """The bytes of an escaped token text (llama.cpp's llama_unescape_rwkv_token)."""
    out = bytearray()
    data = text.encode()
    i, n = 0, len(data)
    while i < n:
        c = data[i]
        i += 1
        if c != 0x5C:
            out.append(c)
            continue
        if i >= n:  # a trailing backslash is dropped, as llama.cpp does
            break
        e = data[i]
        i += 1
        if e == ord("x"):
            out.append(_hex(data[i : i + 2]))
            i += 2
        else:
            out.append(_ESCAPES.get(e, e))
    return bytes(out)


def _hex(two: bytes) -> int:
    # llama.cpp reads a digit as c - 'a' + 10 when c >= 'a', else c - '0', without checks
    v = 0
    for c in two:
        v = ((v << 4) + (c - 0x61 + 10 if c >= 0x61 else c - 0x30)) & 0xFF
    return v


class _Node:
    __slots__ = ("children", "value")

    def __init__(self) -> None:
        self.children: dict[int, _Node] = {}
        self.value: int | None = None


class RWKVTokenizer(Tokenizer):
    """Greedy longest match over a byte trie of the vocabulary."""

    def __init__(self, vocab: Vocab) -> None:
        super().__init__(vocab)
        self._root = _Node()
        for tid, text in enumerate(vocab.tokens):
            node = self._root
            for b in unescape_rwkv_token(text):
                node = node.children.setdefault(b, _Node())
            node.value = tid  # a later duplicate wins, as in llama.cpp's naive_trie

    def _encode_fragments(self, frags: list[str | int], out: list[int]) -> None:
        for frag in frags:
            if isinstance(frag, int):
                out.append(frag)
            else:
                self._encode_bytes(frag.encode(), out)

    def _encode_bytes(self, data: bytes, out: list[int]) -> None:
        unk = self.vocab.special_ids.get("unk")
        pos, n = 0, len(data)
        while pos < n:
            node = self._root.children.get(data[pos])
            if node is None:
                if unk is not None:
                    out.append(unk)
                pos += 1
                continue
            best_id, best_len, i = 0, 0, pos
            while node is not None:
                i += 1
                if node.value is not None:
                    best_id, best_len = node.value, i - pos
                node = node.children.get(data[i]) if i < n else None
            # llama.cpp: a prefix with no token of its own gives token 0 for its length 0,
            # then moves on one byte; every World vocabulary has all single bytes
            out.append(best_id)
            pos += max(best_len, 1)

    def _normal_piece(self, text: str) -> bytes:
        return unescape_rwkv_token(text)
