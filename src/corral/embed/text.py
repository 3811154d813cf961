"""Texts -> token ids for an encoder: the model's special tokens, cut to its maximum input.

`TextEncoder` wraps the tokenizer a model comes with: a folder's tokenizer.json, or a GGUF
vocabulary (WordPiece rebuilt as tokenizer.json would have it; BPE / SPM through corral's own
tokenizers). Texts are tokenized without special tokens first, then cut to what is left of the
maximum after the specials, then wrapped in them: a cut never loses "[CLS]" or "[SEP]",
as with sentence-transformers' own truncation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from corral.errors import ContextOverflowError, InvalidRequestError, UnsupportedError

if TYPE_CHECKING:
    import tokenizers

    from corral.tokenizer import Tokenizer


class Truncation(Enum):
    """What to do with a text longer than the model reads."""

    ERROR = "error"  # refuse it (ContextOverflowError)
    RIGHT = "right"  # keep the start, drop the end (sentence-transformers, TEI's default)
    LEFT = "left"  # keep the end

    @classmethod
    def of(cls, value: Truncation | bool | str) -> Truncation:
        """True -> RIGHT, False -> ERROR, or the enum / its name."""
        if isinstance(value, Truncation):
            return value
        if isinstance(value, bool):
            return cls.RIGHT if value else cls.ERROR
        try:
            return cls(str(value).lower())
        except ValueError:
            raise InvalidRequestError(
                f"truncate must be one of error, right, left (got {value!r})"
            ) from None


@dataclass(frozen=True)
class TokenInfo:
    """One token of a tokenized text, as TEI's /tokenize shows it."""

    id: int
    text: str
    special: bool
    start: int | None  # character offsets into the text; None where unknown
    stop: int | None


class _Backend(Protocol):
    def plain(self, texts: list[str]) -> list[list[int]]: ...

    def specials(self) -> tuple[list[int], list[int]]: ...

    def detail(self, text: str, add_special: bool) -> list[TokenInfo]: ...

    def decode(self, ids: Sequence[int], skip_special: bool) -> str: ...


class _HFBackend:
    """A Hugging Face `tokenizers.Tokenizer` (tokenizer.json, or WordPiece from a GGUF)."""

    def __init__(self, tok: tokenizers.Tokenizer) -> None:
        # tokenizer.json files often carry padding / truncation settings (MiniLM's pads every
        # text to 128): we cut and pad ourselves
        tok.no_padding()
        tok.no_truncation()
        self.tok = tok

    def plain(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def specials(self) -> tuple[list[int], list[int]]:
        # what the post-processor puts around a text, found by tokenizing a probe both ways
        probe = "hello"
        plain = self.tok.encode(probe, add_special_tokens=False).ids
        full = self.tok.encode(probe, add_special_tokens=True).ids
        for i in range(len(full) - len(plain) + 1):
            if full[i : i + len(plain)] == plain:
                return full[:i], full[i + len(plain) :]
        return [], []

    def detail(self, text: str, add_special: bool) -> list[TokenInfo]:
        enc = self.tok.encode(text, add_special_tokens=add_special)
        return [
            TokenInfo(i, t, bool(s), a if not s else None, b if not s else None)
            for i, t, s, (a, b) in zip(
                enc.ids, enc.tokens, enc.special_tokens_mask, enc.offsets, strict=True
            )
        ]

    def decode(self, ids: Sequence[int], skip_special: bool) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=skip_special)


class _CorralBackend:
    """corral's llama.cpp-exact BPE / SPM tokenizers, for encoder GGUFs that use them."""

    def __init__(self, tok: Tokenizer) -> None:
        self.tok = tok

    def plain(self, texts: list[str]) -> list[list[int]]:
        return [self.tok.encode(t, add_special=False) for t in texts]

    def specials(self) -> tuple[list[int], list[int]]:
        t = self.tok
        prefix = [t.bos_id] if t.add_bos and t.bos_id is not None else []
        suffix = [t.eos_id] if t.add_eos and t.eos_id is not None else []
        return prefix, suffix

    def detail(self, text: str, add_special: bool) -> list[TokenInfo]:
        ids = self.tok.encode(text, add_special=add_special)
        return [
            TokenInfo(
                i,
                self.tok.token_to_piece(i, special=True).decode("utf-8", "replace"),
                self.tok.is_special(i),
                None,
                None,
            )
            for i in ids
        ]

    def decode(self, ids: Sequence[int], skip_special: bool) -> str:
        return self.tok.decode(ids, render_special=not skip_special)


class TextEncoder:
    """The model's tokenizer, its special-token wrapping and its maximum input."""

    def __init__(self, backend: _Backend, max_tokens: int, pad_id: int = 0) -> None:
        self.backend = backend
        self.prefix, self.suffix = backend.specials()
        self.max_tokens = max_tokens
        self.pad_id = pad_id
        if self.max_content < 1:
            raise UnsupportedError(f"a maximum input of {max_tokens} tokens leaves no room")

    @classmethod
    def from_tokenizer_json(cls, path: Path, max_tokens: int) -> TextEncoder:
        """A folder's tokenizer.json."""
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception for bad files
            raise UnsupportedError(f"{path.parent.name}/{path.name}: unreadable ({e})") from None
        pad = tok.padding["pad_id"] if tok.padding else (tok.token_to_id("[PAD]") or 0)
        return cls(_HFBackend(tok), max_tokens, pad)

    @classmethod
    def from_gguf(cls, meta: dict, max_tokens: int) -> TextEncoder:
        """A GGUF's vocabulary (WordPiece, or BPE / SPM)."""
        pad = int(meta.get("tokenizer.ggml.padding_token_id", 0) or 0)
        if meta.get("tokenizer.ggml.model") == "bert":
            from corral.tokenizer.wpm import wordpiece_from_gguf

            return cls(_HFBackend(wordpiece_from_gguf(meta)), max_tokens, pad)
        from corral.tokenizer import load_tokenizer

        return cls(_CorralBackend(load_tokenizer(meta)), max_tokens, pad)

    @property
    def n_special(self) -> int:
        """Special tokens around every text ([CLS] and [SEP]: 2)."""
        return len(self.prefix) + len(self.suffix)

    @property
    def max_content(self) -> int:
        """Tokens of text that fit once the special tokens are in."""
        return self.max_tokens - self.n_special

    def count(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text takes, special tokens included, before any cut."""
        return [len(ids) + self.n_special for ids in self.backend.plain(list(texts))]

    def encode(
        self, texts: Sequence[str], truncate: Truncation = Truncation.RIGHT
    ) -> list[list[int]]:
        """Token ids of each text, wrapped in the special tokens, cut to max_tokens."""
        return self.wrap(self.backend.plain(list(texts)), truncate)

    def wrap(self, plain: Sequence[Sequence[int]], truncate: Truncation) -> list[list[int]]:
        """Cut plain token ids to fit and add the special tokens."""
        out = []
        keep = self.max_content
        for i, ids in enumerate(plain):
            if len(ids) > keep:
                if truncate is Truncation.ERROR:
                    raise ContextOverflowError(
                        f"input {i} has {len(ids) + self.n_special} tokens; this model reads "
                        f"at most {self.max_tokens} (pass truncate to cut it)"
                    )
                ids = ids[:keep] if truncate is Truncation.RIGHT else ids[len(ids) - keep :]
            out.append([*self.prefix, *ids, *self.suffix])
        return out

    def detail(self, text: str, add_special: bool = True) -> list[TokenInfo]:
        """Each token of `text` with its text and character span (TEI's /tokenize)."""
        return self.backend.detail(text, add_special)

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        """Text of token ids."""
        return self.backend.decode(ids, skip_special)
