"""The vocabulary as llama.cpp sees it: token texts, attributes, special ids, EOG set.

GGUF stores a token type per token; llama.cpp turns it into attribute flags and then patches
them from the token texts (EOT / FIM / end-of-generation tokens become CONTROL, "unused"
control tokens become UNUSED, a few model-specific fixes). Tokenizing and detokenizing
depend on those flags, so they are reproduced here exactly, in one place shared by the BPE
and SPM tokenizers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, IntFlag
from functools import cached_property

import numpy as np

from corral.errors import UnsupportedError


class VocabType(Enum):
    """Tokenizer algorithm named by `tokenizer.ggml.model`."""

    SPM = "llama"  # SentencePiece-style: scores, U+2581 for spaces, <0xXX> byte fallback
    BPE = "gpt2"  # GPT-2 style byte-level BPE with merges and a regex pre-tokenizer
    WPM = "bert"
    UGM = "t5"
    RWKV = "rwkv"
    PLAMO2 = "plamo2"
    NONE = "no_vocab"

    @classmethod
    def from_name(cls, name: str) -> VocabType:
        """The type for a `tokenizer.ggml.model` value; UnsupportedError if unknown."""
        if name == "none":
            return cls.NONE
        try:
            return cls(name)
        except ValueError:
            raise UnsupportedError(f"tokenizer model {name!r} is not supported") from None


class TokenAttr(IntFlag):
    """llama.cpp's per-token attribute bits."""

    UNDEFINED = 0
    UNKNOWN = 1 << 0
    UNUSED = 1 << 1
    NORMAL = 1 << 2
    CONTROL = 1 << 3
    USER_DEFINED = 1 << 4
    BYTE = 1 << 5
    NORMALIZED = 1 << 6
    LSTRIP = 1 << 7
    RSTRIP = 1 << 8
    SINGLE_WORD = 1 << 9


# GGUF token_type value -> attribute (0 UNDEFINED, 1 NORMAL, 2 UNKNOWN, 3 CONTROL,
# 4 USER_DEFINED, 5 UNUSED, 6 BYTE); anything else is UNDEFINED.
_TYPE_TO_ATTR = np.array(
    [0, TokenAttr.NORMAL, TokenAttr.UNKNOWN, TokenAttr.CONTROL]
    + [TokenAttr.USER_DEFINED, TokenAttr.UNUSED, TokenAttr.BYTE],
    dtype=np.int32,
)

_CONTROL = TokenAttr.CONTROL.value
_SPECIAL = (TokenAttr.CONTROL | TokenAttr.USER_DEFINED | TokenAttr.UNKNOWN).value

# Texts llama.cpp recognises, in the order it lists them.
_EOT_TEXTS = (
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
    "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>",
)  # fmt: skip
_EOM_TEXTS = ("<|eom_id|>",)
# FIM kinds: the first text found becomes that kind's id (and CONTROL) unless the GGUF
# names it; pad / repo / file-separator tokens also end generation.
_FIM_TEXTS = {
    "fim_pre": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>",
                "▁<PRE>", "<|code_prefix|>", "<|prefix|>"),
    "fim_suf": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>",
                "▁<SUF>", "<|code_suffix|>", "<|suffix|>"),
    "fim_mid": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>",
                "▁<MID>", "<|code_middle|>", "<|middle|>"),
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
}  # fmt: skip
_EOG_TEXTS = (
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>", "[e~[",
)  # fmt: skip
# gpt-oss: llama.cpp always renders these, so it makes them USER_DEFINED.
_FORCE_USER_DEFINED = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")

# Special ids llama.cpp assumes before reading the GGUF keys (None = no such token).
_DEFAULT_IDS: dict[VocabType, dict[str, int]] = {
    VocabType.SPM: {"bos": 1, "eos": 2, "unk": 0},
    VocabType.BPE: {"bos": 11, "eos": 11},
}
# name -> GGUF keys that set it, later keys winning (the FIM ones have deprecated spellings)
_ID_KEYS: dict[str, tuple[str, ...]] = {
    "bos": ("bos_token_id",),
    "eos": ("eos_token_id",),
    "eot": ("eot_token_id",),
    "eom": ("eom_token_id",),
    "unk": ("unknown_token_id",),
    "sep": ("seperator_token_id",),  # sic: the GGUF key is spelled this way
    "pad": ("padding_token_id",),
    "mask": ("mask_token_id",),
    "fim_pre": ("fim_pre_token_id", "prefix_token_id"),
    "fim_suf": ("fim_suf_token_id", "suffix_token_id"),
    "fim_mid": ("fim_mid_token_id", "middle_token_id"),
    "fim_pad": ("fim_pad_token_id",),
    "fim_rep": ("fim_rep_token_id",),
    "fim_sep": ("fim_sep_token_id",),
}


@dataclass
class Vocab:
    """Everything about the vocabulary that encoding and decoding need."""

    type: VocabType
    tokens: list[str]
    attrs: list[int]
    special_ids: dict[str, int | None]
    eog_ids: frozenset[int]
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    clean_spaces: bool
    special_cache: list[int]  # CONTROL / USER_DEFINED / UNKNOWN ids, longest text first
    # text -> id from tables the tokenizer already has (the C BPE merger's); None: the dict
    finder: Callable[[str], int | None] | None = field(default=None, compare=False, repr=False)

    def id(self, name: str) -> int | None:
        """A named special id ("bos", "eos", "eot", ...) or None."""
        return self.special_ids.get(name)

    def find(self, text: str) -> int | None:
        """The id of the token whose text is `text` (the first of duplicates), or None."""
        if self.finder is not None:
            return self.finder(text)
        return self.token_to_id.get(text)

    @cached_property
    def token_to_id(self) -> dict[str, int]:
        """Text -> id for every token, built on first use (~10 ms for 50k tokens, which a
        BPE load with the C merger skips: its tables answer `find`)."""
        return first_ids(self.tokens)


def vocab_tokens(meta: dict) -> list[str]:
    """The token texts, an empty one renamed as llama.cpp does (it would match anywhere)."""
    tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
    if "" in tokens:
        tokens = [t or f"[EMPTY_{i}]" for i, t in enumerate(tokens)]
    return tokens


def first_ids(tokens: list[str]) -> dict[str, int]:
    """Text -> id; a duplicated text keeps its first id, the one llama.cpp would report
    (it refuses such files), where dict(zip) alone would keep the last."""
    n = len(tokens)
    token_to_id = dict(zip(tokens, range(n), strict=True))
    if len(token_to_id) != n:
        for i in range(n - 1, -1, -1):
            token_to_id[tokens[i]] = i
    return token_to_id


def build_vocab(
    meta: dict,
    vtype: VocabType,
    *,
    clean_spaces: bool,
    add_bos_default: bool,
    tokens: list[str] | None = None,
    finder: Callable[[str], int | None] | None = None,
) -> Vocab:
    """Read the vocabulary from GGUF metadata and derive attributes the way llama.cpp does.

    tokens: `vocab_tokens(meta)` when the caller already has it. finder: text -> id over
    those tokens (first id of duplicates) when the caller has such tables; without it the
    text -> id dict is built here."""
    if tokens is None:
        tokens = vocab_tokens(meta)
    n = len(tokens)
    types = meta.get("tokenizer.ggml.token_type")
    if types is None:
        attrs_np = np.full(n, int(TokenAttr.NORMAL), dtype=np.int32)
    else:
        t = np.asarray(types, dtype=np.int64)[:n]
        t = np.where((t >= 0) & (t < len(_TYPE_TO_ATTR)), t, 0)
        attrs_np = _TYPE_TO_ATTR[t]
    token_to_id = first_ids(tokens) if finder is None else None
    find = token_to_id.get if token_to_id is not None else finder
    assert find is not None

    ids: dict[str, int | None] = dict.fromkeys(_ID_KEYS)
    ids.update({k: v for k, v in _DEFAULT_IDS.get(vtype, {}).items() if v < n})
    for name, keys in _ID_KEYS.items():
        for key in keys:
            v = meta.get("tokenizer.ggml." + key)
            if v is not None and 0 <= int(v) < n:  # out of range: keep the default
                ids[name] = int(v)

    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", add_bos_default))
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
    for flag, name in ((add_bos, "bos"), (add_eos, "eos")):
        if flag and ids[name] is None:
            raise UnsupportedError(f"GGUF asks to add a {name.upper()} token but defines none")

    def lookup(texts: tuple[str, ...]) -> list[int]:
        return [i for i in map(find, texts) if i is not None]

    # Ids the GGUF leaves unset are found by text, and the token found is forced to CONTROL.
    # llama.cpp takes the first match in its hash-map order; list order here is deterministic.
    for name, texts in (("eot", _EOT_TEXTS), ("eom", _EOM_TEXTS), *_FIM_TEXTS.items()):
        found = lookup(texts)
        if ids[name] is None and found:
            ids[name] = found[0]
            attrs_np[found[0]] |= _CONTROL

    controls = np.flatnonzero(attrs_np & _CONTROL).tolist()
    unused = [tid for tid in controls if "unused" in tokens[tid]]
    attrs_np[unused] |= TokenAttr.UNUSED.value

    eog = {ids[k] for k in ("fim_pad", "fim_rep", "fim_sep") if ids[k] is not None}
    for tid in lookup(_EOG_TEXTS):
        eog.add(tid)
        attrs_np[tid] |= _CONTROL
    for tid in lookup(_FORCE_USER_DEFINED):
        attrs_np[tid] = TokenAttr.USER_DEFINED.value
    eog.update(ids[k] for k in ("eos", "eot", "eom") if ids[k] is not None)
    _apply_eog_workarounds(tokens, attrs_np, eog)
    _apply_name_workarounds(meta, attrs_np, find)

    special_np = np.flatnonzero(attrs_np & _SPECIAL)
    # llama.cpp sorts by byte length, longest first; ties keep id order here.
    special_cache = sorted(special_np.tolist(), key=lambda i: -len(tokens[i].encode()))

    vocab = Vocab(
        type=vtype,
        tokens=tokens,
        attrs=attrs_np.tolist(),
        special_ids=ids,
        eog_ids=frozenset(eog),
        add_bos=add_bos,
        add_eos=add_eos,
        add_space_prefix=bool(meta.get("tokenizer.ggml.add_space_prefix", vtype is VocabType.SPM)),
        clean_spaces=clean_spaces,
        special_cache=special_cache,
        finder=finder,
    )
    if token_to_id is not None:  # built already: the cached property takes it
        vocab.__dict__["token_to_id"] = token_to_id
    return vocab


def _apply_eog_workarounds(tokens: list[str], attrs: np.ndarray, eog: set[int]) -> None:
    """Drop tokens llama.cpp special-cases out of the end-of-generation set."""
    texts = {tokens[i]: i for i in eog}
    # gpt-oss / solar-open: "<|end|>" ends a message, not the generation
    if "<|end|>" in texts and (
        ("<|return|>" in texts and ("<|call|>" in texts or "<|calls|>" in texts))
        or (("<|call|>" in texts or "<|calls|>" in texts) and "<|flush|>" in texts)
    ):
        eog.discard(texts["<|end|>"])
        attrs[texts["<|end|>"]] = TokenAttr.USER_DEFINED.value
    # Gemma 4: "</s>" is ordinary text there
    if "<|tool_response>" in texts and "</s>" in texts:
        eog.discard(texts["</s>"])
        attrs[texts["</s>"]] = TokenAttr.NORMAL.value


def _apply_name_workarounds(
    meta: dict, attrs: np.ndarray, find: Callable[[str], int | None]
) -> None:
    """Per-model strip flags llama.cpp sets from the model name (Phi-3 only, for now).

    The embedding-model cases (jina, modern-bert <mask> LSTRIP) are left out: those use
    the BERT tokenizer, which corral does not support yet.
    """
    name = str(meta.get("general.name", "")).lower()
    if "phi-3" not in name and "phi3" not in name:
        return
    rstrip = TokenAttr.RSTRIP.value
    attrs[(attrs & _SPECIAL) != 0] |= rstrip
    for text, on in (("</s>", True), ("<unk>", False), ("<s>", False), ("<|endoftext|>", False)):
        i = find(text)
        if i is not None:
            attrs[i] = (attrs[i] | rstrip) if on else (attrs[i] & ~rstrip)
