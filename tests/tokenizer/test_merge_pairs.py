"""BPE merges split in C (corral._gguf_strings.merge_pairs) as llama.cpp splits them: at the
first space after the first character, so a left side may start with a space."""

from __future__ import annotations

import pytest

from corral.tokenizer import bpe

TRICKY = [" a b", "a b", "a", "", " ", "ab  c", "é ñ", "  x", "Ġ t", "x y z"]


def test_c_split_matches_llama_cpp_rule() -> None:
    assert bpe._merge_pairs_c is not None, "the C extension corral._gguf_strings is not built"
    assert bpe.merge_pairs(TRICKY) == [bpe._split_merge(m) for m in TRICKY]
    assert bpe.merge_pairs(["Ġ t", "x y z"]) == [("Ġ", "t"), ("x", "y z")]


def test_python_fallback_gives_the_same_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    merges = ["Ġ t", "h e", "Ġt he", "x y z"]
    with_c = bpe.merge_pairs(merges)
    monkeypatch.setattr(bpe, "_merge_pairs_c", None)
    assert bpe.merge_pairs(merges) == with_c
    assert bpe.merge_pairs(TRICKY[:2]) == [(" a", "b"), ("a", "b")]  # a left side with a space


def test_c_split_rejects_non_strings() -> None:
    with pytest.raises(TypeError):
        bpe._merge_pairs_c(["a b", 3])  # type: ignore[misc]
