"""llama.cpp's SPM algorithm on synthetic vocabularies: scores, ties, bytes, spaces."""

from __future__ import annotations

import pytest
from synth_vocab import ids_of, spm_metadata

from corral.tokenizer import SPMTokenizer, load_tokenizer


def test_highest_score_pair_merges_first() -> None:
    low_ab = load_tokenizer(spm_metadata({"a": -9, "b": -9, "c": -9, "ab": -2, "bc": -1}))
    low_bc = load_tokenizer(spm_metadata({"a": -9, "b": -9, "c": -9, "ab": -1, "bc": -2}))
    assert isinstance(low_ab, SPMTokenizer)
    assert low_ab.encode("abc", add_special=False) == ids_of(low_ab, "a", "bc")
    assert low_bc.encode("abc", add_special=False) == ids_of(low_bc, "ab", "c")


def test_equal_scores_merge_leftmost_first() -> None:
    tok = load_tokenizer(spm_metadata({"a": -9, "aa": -1}))
    assert tok.encode("aaa", add_special=False) == ids_of(tok, "aa", "a")
    assert tok.encode("aaaaa", add_special=False) == ids_of(tok, "aa", "aa", "a")


def test_merges_only_through_vocabulary_tokens() -> None:
    # "abcd" is a token but "abc" / "bcd" are not, and "ab" + "cd" can still reach it
    tok = load_tokenizer(
        spm_metadata({"a": -9, "b": -9, "c": -9, "d": -9, "ab": -3, "cd": -3, "abcd": -1})
    )
    assert tok.encode("abcd", add_special=False) == ids_of(tok, "abcd")
    tok = load_tokenizer(spm_metadata({"a": -9, "b": -9, "c": -9, "d": -9, "bc": -3, "abcd": -1}))
    assert tok.encode("abcd", add_special=False) == ids_of(tok, "a", "bc", "d")


def test_unknown_characters_fall_back_to_byte_tokens() -> None:
    tok = load_tokenizer(spm_metadata({"a": -1}))
    assert tok.encode("aé", add_special=False) == ids_of(tok, "a", "<0xC3>", "<0xA9>")
    emoji = tok.encode("😀", add_special=False)
    assert emoji == ids_of(tok, "<0xF0>", "<0x9F>", "<0x98>", "<0x80>")
    assert tok.decode(emoji) == "😀"


def test_spaces_are_escaped_and_prefixed_when_asked() -> None:
    pieces = {"a": -5, "▁": -5, "▁a": -1}
    plain = load_tokenizer(spm_metadata(pieces))
    prefixed = load_tokenizer(spm_metadata(pieces, add_space_prefix=True))
    assert plain.encode(" a", add_special=False) == ids_of(plain, "▁a")
    assert plain.encode("a", add_special=False) == ids_of(plain, "a")
    assert prefixed.encode("a", add_special=False) == ids_of(prefixed, "▁a")
    # the text after a special token gets the prefix again
    assert prefixed.encode("<s>a", add_special=False, parse_special=True) == [
        1,
        *ids_of(prefixed, "▁a"),
    ]
    assert prefixed.decode(ids_of(prefixed, "▁a")) == "a"  # decoding strips that space
    assert plain.decode(ids_of(plain, "▁a")) == " a"


def test_bos_is_added_by_default_and_by_the_gguf() -> None:
    tok = load_tokenizer(spm_metadata({"a": -1}))  # no add_bos_token key: SPM adds BOS
    assert (tok.add_bos, tok.bos_id, tok.eos_id) == (True, 1, 2)
    assert tok.encode("a") == [1, *ids_of(tok, "a")]
    assert tok.encode("") == [1]
    off = load_tokenizer(spm_metadata({"a": -1}, add_bos_token=False, add_eos_token=True))
    assert off.encode("a") == [*ids_of(off, "a"), 2]
    assert off.decode([*ids_of(off, "a"), 2], remove_special=True) == "a"


def test_user_defined_tokens_match_without_parse_special() -> None:
    tok = load_tokenizer(spm_metadata({"a": -1, "!\n\n": 0.0, "#<ctl>": 0.0}))
    nn, ctl = ids_of(tok, "\n\n", "<ctl>")
    assert tok.encode("a\n\na", add_special=False) == [ids_of(tok, "a")[0], nn, ids_of(tok, "a")[0]]
    assert ctl not in tok.encode("<ctl>", add_special=False)
    assert tok.encode("<ctl>", add_special=False, parse_special=True) == [ctl]
    assert tok.decode([ctl, nn]) == "\n\n"
    assert tok.decode([ctl, nn], render_special=True) == "<ctl>\n\n"


def test_unused_tokens_print_nothing() -> None:
    meta = spm_metadata({"a": -1, "b": -1})
    meta["tokenizer.ggml.token_type"][-1] = 5  # UNUSED
    tok = load_tokenizer(meta)
    assert tok.token_to_piece(ids_of(tok, "b")[0], special=True) == b""


@pytest.mark.parametrize("n_kb", [10])
def test_long_text_is_fast(n_kb: int) -> None:
    import time

    pieces = {c: -10.0 for c in "abcdefghij"}
    pieces.update({"▁": -10.0, "ab": -1.0, "cd": -2.0, "abcd": -0.5, "▁ab": -0.7})
    tok = load_tokenizer(spm_metadata(pieces))
    text = ("abcd efgh ij abab " * 1000)[: n_kb * 1024]
    start = time.perf_counter()
    ids = tok.encode(text)
    assert time.perf_counter() - start < 1.0
    assert tok.decode(ids) == text
