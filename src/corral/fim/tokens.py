"""Which fill-in-the-middle tokens a model has, and which family's layout they belong to.

The tokenizer already resolves llama.cpp's FIM ids (GGUF `tokenizer.ggml.fim_*_token_id`
keys, else known token texts) into `vocab.special_ids`. Here they are sorted into a family,
because families differ in more than the three markers: StarCoder2 and Qwen2.5-Coder have
repository-level tokens (repo name, file separator), CodeLlama ends the middle with its own
EOT, and Codestral has no middle token at all and puts the suffix first. Tokens the
tokenizer does not look for (StarCoder's `<file_sep>`, Codestral's `[SUFFIX]`) are found
here by text, so the tokenizer stays untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from corral.errors import InvalidRequestError
from corral.tokenizer import Tokenizer
from corral.tokenizer.vocab import TokenAttr


class FimFamily(Enum):
    """A FIM token layout, named after the models that were trained on it."""

    STARCODER = "starcoder"  # <fim_prefix> <fim_suffix> <fim_middle>, <repo_name> <file_sep>
    QWEN = "qwen"  # <|fim_prefix|> ..., <|repo_name|> <|file_sep|> (Qwen2.5-Coder, CodeGemma)
    CODELLAMA = "codellama"  # ▁<PRE> ▁<SUF> ▁<MID>, ends with ▁<EOT>
    DEEPSEEK = "deepseek"  # <｜fim▁begin｜> <｜fim▁hole｜> <｜fim▁end｜>
    CODESTRAL = "codestral"  # [SUFFIX] suffix [PREFIX] prefix: no middle token
    OTHER = "other"  # ids the GGUF names, with texts none of the above uses


class FimOrder(Enum):
    """Where the suffix goes: after the prefix (PSM) or before it (SPM)."""

    PSM = "psm"
    SPM = "spm"


class NoFimError(InvalidRequestError):
    """The model has no fill-in-the-middle tokens, so a suffix cannot be honoured."""


@dataclass(frozen=True)
class _Texts:
    pre: tuple[str, ...]
    suf: tuple[str, ...]
    mid: tuple[str, ...] = ()
    pad: tuple[str, ...] = ()
    rep: tuple[str, ...] = ()
    sep: tuple[str, ...] = ()
    eot: tuple[str, ...] = ()


# Per family, the texts of its tokens (alternatives in preference order). The prefix texts
# also identify the family of ids that came from GGUF keys.
_FAMILIES: dict[FimFamily, _Texts] = {
    FimFamily.STARCODER: _Texts(
        ("<fim_prefix>", "<fim-prefix>"), ("<fim_suffix>", "<fim-suffix>"),
        ("<fim_middle>", "<fim-middle>"), ("<fim_pad>", "<fim-pad>"),
        ("<repo_name>", "<reponame>"), ("<file_sep>",),
    ),
    FimFamily.QWEN: _Texts(
        ("<|fim_prefix|>",), ("<|fim_suffix|>",), ("<|fim_middle|>",), ("<|fim_pad|>",),
        ("<|repo_name|>", "<|fim_repo|>"), ("<|file_sep|>",),
    ),
    FimFamily.CODELLAMA: _Texts(
        ("▁<PRE>", "<PRE>"), ("▁<SUF>", "<SUF>"), ("▁<MID>", "<MID>"), eot=("▁<EOT>", "<EOT>"),
    ),
    FimFamily.DEEPSEEK: _Texts(("<｜fim▁begin｜>",), ("<｜fim▁hole｜>",), ("<｜fim▁end｜>",)),
    FimFamily.CODESTRAL: _Texts(("[PREFIX]",), ("[SUFFIX]",), ("[MIDDLE]",)),
}  # fmt: skip
_GGUF_KEY = "tokenizer.ggml.{}_token_id"
# Markers that end a middle although no family's prompt uses them: CodeGemma's file
# separator, and end-of-text tokens a GGUF may leave out of its end-of-generation set.
# Taken only where the vocabulary marks them special, never as ordinary text.
_END_TEXTS = ("<|file_separator|>", "<|endoftext|>", "<|end_of_text|>", "<｜end▁of▁sentence｜>")
_SPECIAL = TokenAttr.CONTROL | TokenAttr.USER_DEFINED


@dataclass(frozen=True)
class FimTokens:
    """The FIM token ids of one model; `mid` is None only for Codestral."""

    family: FimFamily
    pre: int
    suf: int
    mid: int | None
    pad: int | None = None
    rep: int | None = None  # repository-name marker (repo-level prompts)
    sep: int | None = None  # file separator (repo-level prompts)
    eot: int | None = None
    bos: int | None = None  # put first when the vocabulary asks for BOS
    ends: frozenset[int] = frozenset()  # other special tokens that end a middle (_END_TEXTS)

    @property
    def repo_level(self) -> bool:
        """True if extra files can be given their own file-separator tokens."""
        return self.sep is not None

    @property
    def native_order(self) -> FimOrder | None:
        """The only order the family was trained on, or None if both work."""
        return FimOrder.SPM if self.family is FimFamily.CODESTRAL else None

    @property
    def stop_ids(self) -> frozenset[int]:
        """Tokens that end a middle: padding, end of turn, and any marker of a new section
        (a model that starts another file or another FIM block is done with this one)."""
        ids = (self.pad, self.rep, self.sep, self.eot, self.pre, self.suf, self.mid)
        return frozenset(i for i in ids if i is not None) | self.ends


def _first(tok: Tokenizer, texts: tuple[str, ...]) -> int | None:
    return next((i for i in map(tok.vocab.find, texts) if i is not None), None)


def _family_of(text: str) -> FimFamily:
    for family, texts in _FAMILIES.items():
        if text in texts.pre:
            return family
    return FimFamily.OTHER


def find_fim_tokens(tok: Tokenizer, metadata: Mapping[str, Any] | None = None) -> FimTokens | None:
    """The model's FIM tokens, or None if it has none.

    Ids named by GGUF keys win; the family's own texts fill in what the keys leave out
    (the tokenizer's text search only knows Qwen's file separator, and prefers StarCoder1's
    `<reponame>` over StarCoder2's `<repo_name>`).
    """
    meta = metadata or {}
    ids = tok.vocab.special_ids
    pre, suf, mid = ids.get("fim_pre"), ids.get("fim_suf"), ids.get("fim_mid")
    if pre is None or suf is None or mid is None:
        pre = _first(tok, _FAMILIES[FimFamily.CODESTRAL].pre)
        suf = _first(tok, _FAMILIES[FimFamily.CODESTRAL].suf)
        if pre is None or suf is None:
            return None
        family = FimFamily.CODESTRAL
        mid = _first(tok, _FAMILIES[family].mid)
    else:
        family = _family_of(tok.vocab.tokens[pre])
    texts = _FAMILIES.get(family, _Texts((), ()))

    def pick(name: str, own: tuple[str, ...]) -> int | None:
        if meta.get(_GGUF_KEY.format(name)) is not None:
            return ids.get(name)
        return _first(tok, own) if _first(tok, own) is not None else ids.get(name)

    bos = tok.bos_id if tok.add_bos else None
    ends = map(tok.vocab.find, _END_TEXTS)
    return FimTokens(
        family, pre, suf, mid,
        pad=pick("fim_pad", texts.pad), rep=pick("fim_rep", texts.rep),
        sep=pick("fim_sep", texts.sep), eot=_first(tok, texts.eot), bos=bos,
        ends=frozenset(i for i in ends if i is not None and tok.vocab.attrs[i] & _SPECIAL),
    )  # fmt: skip


def require_fim_tokens(
    tok: Tokenizer, metadata: Mapping[str, Any] | None = None, model_name: str = "the model"
) -> FimTokens:
    """The model's FIM tokens; NoFimError (a 400 in the server) if it has none, so that
    a suffix is never silently dropped into a prefix-only completion."""
    found = find_fim_tokens(tok, metadata)
    if found is None:
        raise NoFimError(
            f"{model_name} has no fill-in-the-middle tokens (no FIM prefix/suffix/middle in "
            "its vocabulary), so it cannot complete between a prefix and a suffix; use a "
            "code model trained for FIM (StarCoder2, Qwen2.5-Coder, CodeLlama, "
            "DeepSeek-Coder, Codestral)"
        )
    return found
