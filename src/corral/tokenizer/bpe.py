"""GPT-2 style byte-level BPE (`tokenizer.ggml.model` = "gpt2"), matching llama.cpp.

Text is cut into words by a pre-tokenizer that reproduces llama.cpp's: the regex list of the
GGUF's `tokenizer.ggml.pre` family (HF `tokenizers` regex splits), each regex splitting the
pieces of the previous one with matches and gaps both kept ("isolated"). Each word is then
merged as llama.cpp merges it, in C (corral._bpe, tokenizer/bpe.c): its tables cost ~20 ms
to build where an HF BPE model costs 50-70 ms, a third of a whole llama.cpp load. Without
the extension, an HF BPE model (with its ByteLevel mapping) does the merging. Special tokens
never reach either: the base class cuts them out of the text first.
"""

from __future__ import annotations

import warnings
from typing import Any

from tokenizers import Regex, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from corral.errors import UnsupportedError
from corral.tokenizer.base import Tokenizer
from corral.tokenizer.pretok import PreConfig, regexes_for
from corral.tokenizer.vocab import Vocab

try:  # llama.cpp's merging in C; HF's BPE model otherwise
    from corral import _bpe
except ImportError:  # pragma: no cover - built by pip install
    _bpe = None
try:  # merges split in one C call (corral/gguf/strings.c); the Python split does the same
    from corral._gguf_strings import merge_pairs as _merge_pairs_c
except ImportError:  # pragma: no cover - built by pip install
    _merge_pairs_c = None


def _byte_to_char() -> dict[int, str]:
    """GPT-2's table that gives each byte a printable character (bytes_to_unicode)."""
    kept = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table = {b: chr(b) for b in kept}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_TO_CHAR = _byte_to_char()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


class BPETokenizer(Tokenizer):
    """Byte-level BPE with a llama.cpp pre-tokenizer and llama.cpp's merging."""

    def __init__(
        self,
        vocab: Vocab,
        merges: list[str],
        pre: PreConfig,
        *,
        merger: Any = None,
        use_c: bool = True,
    ) -> None:
        """merger: `build_merger(vocab.tokens, merges, pre)` when the caller has it already;
        use_c=False merges with HF's BPE model instead (the fallback, kept for tests)."""
        super().__init__(vocab)
        self.pre = pre
        self._splitter = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in regexes_for(pre.type)]
        )
        self._hf: HFTokenizer | None = None
        self._merger = merger if merger is not None else (
            build_merger(vocab.tokens, merges, pre) if use_c else None
        )  # fmt: skip
        if self._merger is not None:
            return
        hf = HFTokenizer(_build_model(vocab.token_to_id, merges, pre.ignore_merges))
        hf.pre_tokenizer = pre_tokenizers.Sequence(
            [self._splitter, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
        self._hf = hf

    def split_words(self, text: str) -> list[str]:
        """The words the pre-tokenizer cuts plain text into (merging runs inside each)."""
        return [w for w, _ in self._splitter.pre_tokenize_str(text)]

    def _encode_fragments(self, frags: list[str | int], out: list[int]) -> None:
        if self._merger is not None:
            split, merge = self._splitter.pre_tokenize_str, self._merger.encode
            for frag in frags:
                if isinstance(frag, int):
                    out.append(frag)
                else:
                    out.extend(merge(split(frag)))
            return
        # one call per fragment: encode_batch would start HF's thread pool, which then
        # warns and turns itself off in any process that forks later
        assert self._hf is not None
        encode = self._hf.encode
        for frag in frags:
            if isinstance(frag, int):
                out.append(frag)
            else:
                out.extend(encode(frag, add_special_tokens=False).ids)

    def _normal_piece(self, text: str) -> bytes:
        try:
            return bytes(CHAR_TO_BYTE[c] for c in text)
        except KeyError:
            return _decode_with_unknowns(text)


def build_merger(tokens: list[str], merges: list[str], pre: PreConfig) -> Any:
    """llama.cpp's merge tables in C (corral._bpe.Merger), or None without the extension.
    Warns about merges whose pieces are not tokens (hand-made files only)."""
    if _bpe is None or type(merges) is not list or type(tokens) is not list:
        return None
    merger = _bpe.build(tokens, merges, pre.ignore_merges)
    if merger.foreign_merges:
        warnings.warn(
            f"{merger.foreign_merges} BPE merges of this GGUF refer to texts that are not "
            "tokens; they apply by text, as in llama.cpp, and a piece that ends as no token "
            "is encoded byte by byte",
            stacklevel=3,
        )
    return merger


def _build_model(ids: dict[str, int], merges: list[str], ignore_merges: bool) -> models.BPE:
    """The HF BPE model for the GGUF's vocabulary and merges."""
    pairs = merge_pairs(merges)
    try:
        return models.BPE(vocab=ids, merges=pairs, ignore_merges=ignore_merges)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # noqa: BLE001 - HF *panics* (a BaseException) on bad merges
        pass
    # A merge whose sides or result are not tokens. Files converted from HF tokenizers never
    # have one (HF refuses them too), so dropping them only matters for hand-made files,
    # where llama.cpp's own result is ill-defined anyway. Checked only on failure: it costs
    # as much as the split above.
    good = [p for p in pairs if len(p) == 2 and p[0] in ids and p[1] in ids and p[0] + p[1] in ids]
    warnings.warn(
        f"{len(pairs) - len(good)} BPE merges of this GGUF refer to tokens that are not in "
        "its vocabulary and are ignored",
        stacklevel=4,
    )
    try:
        return models.BPE(vocab=ids, merges=good, ignore_merges=ignore_merges)
    except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exception types
        raise UnsupportedError(f"cannot build the BPE tokenizer from this GGUF: {e}") from e


def merge_pairs(merges: list[str]) -> list[tuple[str, str]]:
    """Each merge as (left, right), split as llama.cpp splits them (see _split_merge)."""
    if _merge_pairs_c is not None and type(merges) is list:
        return _merge_pairs_c(merges)
    if any(m[:1] == " " for m in merges):
        return [_split_merge(m) for m in merges]
    # the usual case, and 3x faster: no merge text starts with a space
    return [tuple(m.split(" ", 1)) for m in merges]  # type: ignore[misc]


def _split_merge(merge: str) -> tuple[str, str]:
    # llama.cpp splits at the first space after the first character, so a merge whose
    # left side starts with a space still parses
    cut = merge.find(" ", 1)
    if cut < 0:
        return merge, ""
    return merge[:cut], merge[cut + 1 :]


def _decode_with_unknowns(text: str) -> bytes:
    """A token text with characters outside the byte table, marked the way llama.cpp does."""
    out = bytearray()
    for c in text:
        if c in CHAR_TO_BYTE:
            out.append(CHAR_TO_BYTE[c])
        else:
            out += f"[UNK_BYTE_0x{c.encode().hex()}{text}]".encode()
    return bytes(out)
