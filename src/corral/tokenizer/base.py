"""The Tokenizer base class: what BPE and SPM share, following llama.cpp's llama_vocab.

Encoding first cuts the text on special-token texts (`partition`), then hands the plain
fragments to the algorithm of the subclass. Decoding is llama_token_to_piece per token plus
llama_detokenize's optional clean-up, on bytes; `decode` turns the bytes into text.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from functools import cached_property

from corral.tokenizer.stream import StreamDecoder
from corral.tokenizer.vocab import TokenAttr, Vocab, VocabType

_SPECIAL = TokenAttr.CONTROL | TokenAttr.UNKNOWN  # hidden unless asked to render them
_C_SPACE = " \t\n\v\f\r"  # C isspace(), used by the LSTRIP / RSTRIP attributes


class Tokenizer(ABC):
    """Text <-> token ids for one GGUF vocabulary, with llama.cpp's exact results."""

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        self._pieces: list[bytes | None] = [None] * len(vocab.tokens)

    # -- properties -------------------------------------------------------------------

    @property
    def model(self) -> VocabType:
        """The tokenizer algorithm (`tokenizer.ggml.model`)."""
        return self.vocab.type

    @property
    def vocab_size(self) -> int:
        """Number of tokens in the vocabulary."""
        return len(self.vocab.tokens)

    @property
    def bos_id(self) -> int | None:
        """Beginning-of-sequence token id, or None if the vocabulary has none."""
        return self.vocab.id("bos")

    @property
    def eos_id(self) -> int | None:
        """End-of-sequence token id, or None if the vocabulary has none."""
        return self.vocab.id("eos")

    @property
    def eot_id(self) -> int | None:
        """End-of-turn token id (from the GGUF, else found by text), or None."""
        return self.vocab.id("eot")

    @property
    def eog_ids(self) -> frozenset[int]:
        """Every token that ends generation (EOS, EOT, EOM, <|im_end|>, ...)."""
        return self.vocab.eog_ids

    @property
    def add_bos(self) -> bool:
        """Whether `encode(add_special=True)` puts BOS first."""
        return self.vocab.add_bos

    @property
    def add_eos(self) -> bool:
        """Whether `encode(add_special=True)` puts EOS last."""
        return self.vocab.add_eos

    def is_eog(self, token_id: int) -> bool:
        """True if `token_id` ends generation."""
        return token_id in self.vocab.eog_ids

    def token_attr(self, token_id: int) -> TokenAttr:
        """The llama.cpp attribute flags of a token."""
        return TokenAttr(self.vocab.attrs[self._check(token_id)])

    def is_special(self, token_id: int) -> bool:
        """True for control, user-defined and unknown tokens (those matched by text first)."""
        attr = self.vocab.attrs[self._check(token_id)]
        return bool(attr & (TokenAttr.CONTROL | TokenAttr.USER_DEFINED | TokenAttr.UNKNOWN))

    def token_text(self, token_id: int) -> str:
        """The token's text as stored in the vocabulary (escaped form, e.g. 'Ġthe', '▁the')."""
        return self.vocab.tokens[self._check(token_id)]

    # -- encoding ---------------------------------------------------------------------

    def encode(self, text: str, add_special: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of `text`, as llama_tokenize gives them.

        add_special: put BOS / EOS around the ids, each only if the GGUF asks for it.
        parse_special: also turn the texts of control tokens ("<|im_start|>") into those
        tokens; user-defined tokens are always matched, as in llama.cpp.
        """
        out: list[int] = []
        if add_special and self.vocab.add_bos:
            out.append(self.vocab.special_ids["bos"])  # type: ignore[arg-type]
        if text:
            self._encode_fragments(self.partition(text, parse_special), out)
        if add_special and self.vocab.add_eos:
            out.append(self.vocab.special_ids["eos"])  # type: ignore[arg-type]
        return out

    def partition(self, text: str, parse_special: bool) -> list[str | int]:
        """Cut `text` into plain-text fragments and special token ids.

        Like llama.cpp's tokenizer_st_partition: special tokens are tried longest text
        first, each one splitting every occurrence in all the fragments left so far, so a
        long token wins over a shorter one even when the shorter one starts earlier.
        """
        frags: list[str | int] = [text]
        skip = 0 if parse_special else _SPECIAL
        tokens, attrs = self.vocab.tokens, self.vocab.attrs
        found = [
            rank
            for prefix, group in self._special_index.items()
            if prefix in text
            for rank, tid in group
            if not attrs[tid] & skip and tokens[tid] in text
        ]
        for rank in sorted(found):  # back to longest-first order
            tid = self.vocab.special_cache[rank]
            frags = _split_on(frags, tokens[tid], tid, attrs[tid])
        return frags

    @cached_property
    def _special_index(self) -> dict[str, list[tuple[int, int]]]:
        # Special tokens grouped by their first two characters, as (rank, id), so that a
        # text is only checked against the groups whose prefix it contains: Gemma has 6k
        # specials and a per-token scan would cost milliseconds on every call.
        index: dict[str, list[tuple[int, int]]] = {}
        for rank, tid in enumerate(self.vocab.special_cache):
            index.setdefault(self.vocab.tokens[tid][:2], []).append((rank, tid))
        return index

    @abstractmethod
    def _encode_fragments(self, frags: list[str | int], out: list[int]) -> None:
        """Append the ids of the partitioned fragments to `out`."""

    # -- decoding ---------------------------------------------------------------------

    def token_to_piece(self, token_id: int, special: bool = False) -> bytes:
        """The bytes a token stands for (llama_token_to_piece, no leading-space strip).

        Control and unknown tokens give b"" unless `special`; user-defined tokens always
        give their text. A piece can be part of a UTF-8 character (byte tokens).
        """
        attr = self.vocab.attrs[self._check(token_id)]
        if attr & _SPECIAL and not special:
            return b""
        piece = self._pieces[token_id]
        if piece is None:
            piece = self._pieces[token_id] = self._make_piece(token_id, attr)
        return piece

    def _make_piece(self, token_id: int, attr: int) -> bytes:
        text = self.vocab.tokens[token_id]
        if attr & (_SPECIAL | TokenAttr.USER_DEFINED):
            return text.encode()
        if attr & TokenAttr.NORMAL:
            return self._normal_piece(text)
        if attr & TokenAttr.BYTE:  # "<0xAB>"; llama.cpp's strtol reads garbage as 0
            try:
                return bytes([int(text[3:5], 16)])
            except ValueError:
                return b"\x00"
        return b""  # unused / undefined tokens print nothing

    @abstractmethod
    def _normal_piece(self, text: str) -> bytes:
        """The bytes of a NORMAL token's vocabulary text."""

    def detokenize(
        self, ids: Iterable[int], remove_special: bool = False, unparse_special: bool = False
    ) -> bytes:
        """llama_detokenize, returning raw bytes.

        remove_special: drop a leading BOS / trailing EOS that encoding would have added.
        unparse_special: render control tokens as their text instead of dropping them.
        """
        ids = list(ids)
        v = self.vocab
        remove_space = v.add_space_prefix  # encoding added a space before the first word
        if remove_special and v.add_bos and ids and ids[0] == v.special_ids["bos"]:
            remove_space = False
            ids = ids[1:]
        if remove_special and v.add_eos and ids and ids[-1] == v.special_ids["eos"]:
            ids = ids[:-1]
        parts = [self.token_to_piece(t, unparse_special) for t in ids]
        if remove_space and parts and parts[0][:1] == b" ":
            parts[0] = parts[0][1:]
        data = b"".join(parts)
        return _clean_spaces(data) if v.clean_spaces else data

    def decode(
        self, ids: Iterable[int], render_special: bool = False, remove_special: bool = False
    ) -> str:
        """Text of `ids` (see `detokenize`); bytes that are not UTF-8 become U+FFFD.

        By default control tokens (BOS, <|im_end|>, ...) are left out of the text, which
        is what a user reading model output wants; `render_special=True` shows them.
        """
        return self.detokenize(ids, remove_special, render_special).decode("utf-8", "replace")

    def stream_decoder(self, render_special: bool = False) -> StreamDecoder:
        """A decoder for generated tokens: push ids one by one, get text without ever
        splitting a UTF-8 character."""
        return StreamDecoder(lambda t: self.token_to_piece(t, render_special))

    def _check(self, token_id: int) -> int:
        if not 0 <= token_id < len(self.vocab.tokens):
            raise ValueError(
                f"token id {token_id} is outside the vocabulary (0..{self.vocab_size - 1})"
            )
        return token_id


def _split_on(frags: list[str | int], text: str, tid: int, attr: int) -> list[str | int]:
    """Replace every occurrence of `text` in the string fragments by `tid`."""
    out: list[str | int] = []
    for frag in frags:
        if isinstance(frag, int) or text not in frag:
            out.append(frag)
            continue
        start = 0
        while (hit := frag.find(text, start)) >= 0:
            left = frag[start:hit]
            if attr & TokenAttr.LSTRIP:
                left = left.rstrip(_C_SPACE)
            if left:
                out.append(left)
            out.append(tid)
            start = hit + len(text)
            if attr & TokenAttr.RSTRIP:
                while start < len(frag) and frag[start] in _C_SPACE:
                    start += 1
        if start < len(frag):
            out.append(frag[start:])
    return out


def _clean_spaces(data: bytes) -> bytes:
    """llama_detokenize's clean-up for BPE vocabularies (clean_up_tokenization_spaces).

    Ported step by step, in place on one buffer like the original, because its quirks
    depend on that (the second pass blanks the space it skips, and its next step reads it).
    """
    if not data:
        return data
    # pass 1: drop every space right before ? ! . , (the first byte included)
    buf = bytearray(_SPACE_BEFORE_PUNCT.sub(b"", data))
    if b"'" not in buf:
        return bytes(buf)
    # pass 2: " ' " -> "'"
    n, total = len(buf), 1
    i = 1
    while i < n:
        x = buf[i]
        if x == 0x27 and i + 1 < n and buf[i - 1] == 0x20 and buf[i + 1] == 0x20:
            total -= 1
            i += 1
            buf[i] = 0
        buf[total] = x
        total += 1
        i += 1
    del buf[total:]
    # pass 3: " 's", " 'm", " 're", " 've" lose the space (" 't", " 'd", " 'll" keep it)
    n, total = len(buf), 1
    for i in range(1, n):
        x = buf[i]
        if buf[i - 1] == 0x20 and x == 0x27 and i + 1 < n:
            x1 = buf[i + 1]
            pair = (x1, buf[i + 2]) if i + 2 < n else None
            if x1 in b"sm" or (x1 not in b"td" and pair in _RE_VE):
                total -= 1
        buf[total] = x
        total += 1
    del buf[total:]
    return bytes(buf)


_RE_VE = {(ord("r"), ord("e")), (ord("v"), ord("e"))}
_SPACE_BEFORE_PUNCT = re.compile(rb" (?=[?!.,])")
