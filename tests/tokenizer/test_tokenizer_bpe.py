"""Byte-level BPE on synthetic vocabularies: pre-tokenizer splits, merges, special tokens."""

from __future__ import annotations

from dataclasses import replace

import pytest
from synth_vocab import CONTROL, GPT2_BYTE_CHARS, NORMAL, USER_DEFINED, bpe_metadata, ids_of

from corral.tokenizer import BPETokenizer, bpe, load_tokenizer

TRICKY = "Don't 12345  go!\n\n hi"

# What each family's regex list must cut TRICKY into, worked out by hand from the
# llama.cpp regexes (see pretok.py): digits grouped by 3 / one by one / whole, contractions,
# the "\s+(?!\S)" space left before a word, newlines kept apart or glued to punctuation.
SPLITS = {
    "gpt-2": ["Don", "'t", " 12345", " ", " go", "!", "\n\n", " hi"],
    "starcoder": ["Don", "'t", " ", "1", "2", "3", "4", "5", " ", " go", "!", "\n\n", " hi"],
    "smollm": ["Don", "'t", " ", "1", "2", "3", "4", "5", " ", " go", "!", "\n\n", " hi"],
    "llama-bpe": ["Don", "'t", " ", "123", "45", " ", " go", "!\n\n", " hi"],
    "llama3": ["Don", "'t", " ", "123", "45", " ", " go", "!\n\n", " hi"],
    "qwen2": ["Don", "'t", " ", "1", "2", "3", "4", "5", " ", " go", "!\n\n", " hi"],
    "default": ["Don", "'", "t", " ", "123", "45", " ", " go", "!", "\n\n", " hi"],
    "deepseek-coder": ["Don", "'", "t", " ", "1", "2", "3", "4", "5", " ", " go", "!"]
    + ["\n", "\n", " hi"],
    "deepseek-llm": ["Don", "'", "t", " ", "12345", " ", " go", "!", "\n", "\n", " hi"],
}


def test_byte_characters_are_gpt2s() -> None:
    assert GPT2_BYTE_CHARS[0x20] == "Ġ" and GPT2_BYTE_CHARS[0x0A] == "Ċ"
    tok = load_tokenizer(bpe_metadata())
    assert tok.encode(" \n") == ids_of(tok, "Ġ", "Ċ")


@pytest.mark.parametrize("pre", sorted(SPLITS))
def test_pre_tokenizer_split(pre: str) -> None:
    tok = load_tokenizer(bpe_metadata(pre=pre))
    assert isinstance(tok, BPETokenizer)
    assert tok.split_words(TRICKY) == SPLITS[pre]


def test_llama3_contractions_ignore_case_gpt2_does_not() -> None:
    llama3 = load_tokenizer(bpe_metadata(pre="llama-bpe"))
    gpt2 = load_tokenizer(bpe_metadata(pre="gpt-2"))
    assert llama3.split_words("WE'LL") == ["WE", "'LL"]
    assert gpt2.split_words("WE'LL") == ["WE", "'", "LL"]


def test_unknown_pre_falls_back_to_default_with_warning() -> None:
    with pytest.warns(UserWarning, match="no-such-pre"):
        tok = load_tokenizer(bpe_metadata(pre="no-such-pre"))
    assert tok.split_words(TRICKY) == SPLITS["default"]
    assert load_tokenizer(bpe_metadata(pre=None)).split_words(TRICKY) == SPLITS["default"]


def test_merges_apply_by_rank() -> None:
    # "b c" ranked first: "abc" -> a + bc; "a b" first: ab + c
    first_bc = load_tokenizer(bpe_metadata(["b c", "a b"]))
    first_ab = load_tokenizer(bpe_metadata(["a b", "b c"]))
    assert first_bc.encode("abc") == ids_of(first_bc, "a", "bc")
    assert first_ab.encode("abc") == ids_of(first_ab, "ab", "c")


def test_merges_chain_into_whole_words(gpt2_bpe) -> None:
    assert gpt2_bpe.encode("hello world") == ids_of(gpt2_bpe, "hello", "Ġworld")
    assert gpt2_bpe.encode("hello  world") == ids_of(gpt2_bpe, "hello", "Ġ", "Ġworld")


def test_ignore_merges_only_for_llama3_family() -> None:
    # "abc" is in the vocabulary but no merge path reaches it
    meta = {"merges": ["a b"], "extra_tokens": ["abc"]}
    llama3 = load_tokenizer(bpe_metadata(**meta, pre="llama-bpe", bos_token_id=0))
    gpt2 = load_tokenizer(bpe_metadata(**meta, pre="gpt-2"))
    assert llama3.encode("abc", add_special=False) == ids_of(llama3, "abc")
    assert gpt2.encode("abc") == ids_of(gpt2, "ab", "c")


def test_control_tokens_need_parse_special_user_defined_do_not() -> None:
    tok = load_tokenizer(bpe_metadata(specials={"<|im_start|>": CONTROL, "<tool>": USER_DEFINED}))
    start, tool = ids_of(tok, "<|im_start|>", "<tool>")
    plain = tok.encode("<tool>x<|im_start|>")
    assert plain[0] == tool and start not in plain
    assert plain[1:] == tok.encode("x<|im_start|>")
    assert tok.encode("<tool>x<|im_start|>", parse_special=True) == [tool, *ids_of(tok, "x"), start]


def test_partition_takes_longest_special_first() -> None:
    # llama.cpp tries "bcd" before "ab" although "ab" starts earlier
    tok = load_tokenizer(bpe_metadata(specials={"ab": CONTROL, "bcd": CONTROL}))
    assert tok.encode("abcd", parse_special=True) == ids_of(tok, "a", "bcd")
    assert tok.encode("abab", parse_special=True) == ids_of(tok, "ab", "ab")


def test_phi3_special_tokens_eat_following_whitespace() -> None:
    specials = {"<|end|>": CONTROL}
    meta = bpe_metadata(specials=specials)
    meta["general.name"] = "Phi-3 mini"
    phi3 = load_tokenizer(meta)
    other = load_tokenizer(bpe_metadata(specials=specials))
    assert phi3.encode("a<|end|> \n b", parse_special=True) == ids_of(phi3, "a", "<|end|>", "b")
    assert other.encode("a<|end|>  b", parse_special=True) == ids_of(
        other, "a", "<|end|>", "Ġ", "Ġ", "b"
    )


def test_add_bos_and_eos_follow_the_gguf() -> None:
    specials = {"<s>": CONTROL, "</s>": CONTROL}
    meta = bpe_metadata(specials=specials, bos_token_id=0, eos_token_id=1)
    both = load_tokenizer(
        {**meta, "tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_eos_token": True}
    )
    assert (both.add_bos, both.add_eos) == (True, True)
    assert both.encode("a") == [0, *ids_of(both, "a"), 1]
    assert both.encode("") == [0, 1]
    assert both.encode("a", add_special=False) == ids_of(both, "a")
    neither = load_tokenizer(meta)  # gpt-2 pre: no BOS unless the GGUF says so
    assert neither.encode("a") == ids_of(neither, "a")
    # the llama3 family adds BOS when the GGUF is silent
    assert load_tokenizer({**meta, "tokenizer.ggml.pre": "llama-bpe"}).encode("a")[0] == 0


def test_decode_cleans_spaces_only_where_llama_cpp_does() -> None:
    text = "Hello , world ! it ' s I 'm don 't"
    gpt2 = load_tokenizer(bpe_metadata(pre="gpt-2"))  # clean_up_tokenization_spaces on
    smollm = load_tokenizer(bpe_metadata(pre="smollm"))  # off
    assert gpt2.decode(gpt2.encode(text)) == "Hello, world! it's I'm don 't"
    assert smollm.decode(smollm.encode(text)) == text


def test_decode_hides_control_tokens_unless_asked(gpt2_bpe) -> None:
    ids = gpt2_bpe.encode("<|im_start|>hello<|im_end|>", parse_special=True)
    assert ids[0] == ids_of(gpt2_bpe, "<|im_start|>")[0]
    assert gpt2_bpe.decode(ids) == "hello"
    assert gpt2_bpe.decode(ids, render_special=True) == "<|im_start|>hello<|im_end|>"
    assert gpt2_bpe.token_to_piece(ids[0]) == b""
    assert gpt2_bpe.token_to_piece(ids[0], special=True) == b"<|im_start|>"
    assert gpt2_bpe.is_special(ids[0]) and not gpt2_bpe.is_special(ids[1])
    assert gpt2_bpe.token_text(ids_of(gpt2_bpe, "Ġworld")[0]) == "Ġworld"


def test_end_of_generation_tokens_found_by_text() -> None:
    # <|im_end|> is stored as a NORMAL token: llama.cpp still makes it a control EOG token
    specials = {"<|endoftext|>": CONTROL, "<|im_end|>": NORMAL, "<reponame>": CONTROL}
    tok = load_tokenizer(bpe_metadata(specials=specials, eos_token_id=0))
    assert tok.eog_ids == frozenset(ids_of(tok, "<|endoftext|>", "<|im_end|>", "<reponame>"))
    assert tok.is_eog(0) and tok.eos_id == 0
    im_end = ids_of(tok, "<|im_end|>")[0]
    assert tok.is_special(im_end) and im_end not in tok.encode("<|im_end|>")


def test_gpt_oss_end_token_is_not_end_of_generation() -> None:
    specials = {"<|return|>": CONTROL, "<|call|>": CONTROL, "<|end|>": CONTROL}
    tok = load_tokenizer(bpe_metadata(specials=specials, eos_token_id=0))
    end = ids_of(tok, "<|end|>")[0]
    assert end not in tok.eog_ids and ids_of(tok, "<|return|>")[0] in tok.eog_ids
    assert tok.encode("<|end|>") == [end]  # now user-defined: matched without parse_special


def test_out_of_range_ids_are_rejected(gpt2_bpe) -> None:
    with pytest.raises(ValueError, match="outside the vocabulary"):
        gpt2_bpe.decode([gpt2_bpe.vocab_size])
    with pytest.raises(ValueError):
        gpt2_bpe.token_to_piece(-1)


def test_merges_outside_the_vocabulary_warn_and_end_byte_by_byte() -> None:
    meta = bpe_metadata(["a b"])
    meta["tokenizer.ggml.merges"] = ["a b", "x y"]  # "xy" is not a token
    with pytest.warns(UserWarning, match="1 BPE merges"):
        tok = load_tokenizer(meta)
    assert tok.encode("abxy") == ids_of(tok, "ab", "x", "y")


def test_merges_through_pieces_that_are_not_tokens_apply_as_in_llama_cpp() -> None:
    # llama.cpp looks merges up by text: "ab" is no token, yet "a b" then "ab c" make "abc"
    meta = bpe_metadata(["a b"], extra_tokens=["abc"])
    meta["tokenizer.ggml.tokens"] = [t for t in meta["tokenizer.ggml.tokens"] if t != "ab"]
    meta["tokenizer.ggml.token_type"] = meta["tokenizer.ggml.token_type"][:-1]
    meta["tokenizer.ggml.merges"] = ["a b", "ab c"]
    with pytest.warns(UserWarning, match="2 BPE merges"):
        tok = load_tokenizer(meta)
    assert tok.encode("abc") == ids_of(tok, "abc")
    assert tok.encode("ab") == ids_of(tok, "a", "b")  # "ab" ends as no token: its bytes


def test_a_byte_character_missing_from_the_vocabulary_is_dropped_as_in_llama_cpp() -> None:
    meta = bpe_metadata()
    gone = meta["tokenizer.ggml.tokens"].index("Ġ")
    meta["tokenizer.ggml.tokens"][gone] = "<no space>"
    tok = load_tokenizer(meta)
    # " a": the piece "Ġ" is not a token and neither of its bytes is: llama.cpp skips it
    assert tok.encode(" a") == ids_of(tok, "a")


def test_the_c_merger_and_hf_bpe_agree(gpt2_bpe) -> None:
    assert bpe._bpe is not None, "the C extension corral._bpe is not built"
    merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o", "r l", "Ġwo rl", "Ġworl d", "l o"]
    meta = bpe_metadata(merges, pre="llama-bpe", extra_tokens=["hello world", "wor"])
    for ignore in (False, True):
        c = load_tokenizer(meta)
        c.pre = replace(c.pre, ignore_merges=ignore)
        c_tok = BPETokenizer(c.vocab, merges, c.pre)
        hf_tok = BPETokenizer(c.vocab, merges, c.pre, use_c=False)
        assert c_tok._merger is not None and hf_tok._merger is None
        for text in ["hello world", "hellohello  worldly", "wor", " llo\n\tél😀", "", "lll"]:
            assert c_tok.encode(text) == hf_tok.encode(text), (ignore, text)


def test_the_c_merger_checks_its_arguments() -> None:
    with pytest.raises(TypeError):
        bpe._bpe.build(("a",), ["a b"], False)
    with pytest.raises(TypeError):
        bpe._bpe.build(["a", 3], [], False)
    merger = bpe._bpe.build(["a", "b", "ab"], ["a b"], False)
    assert merger.encode(["ab", ("ab", (0, 2)), "ba"]) == [2, 2, 1, 0]
    with pytest.raises(TypeError):
        merger.encode("ab")
    with pytest.raises(TypeError):
        merger.encode([b"ab"])


def test_find_answers_as_the_dict_does() -> None:
    # the C tables answer text -> id: first id of a duplicate, None for merge-only pieces
    meta = bpe_metadata(["a b", "x y"], extra_tokens=["dup"])
    meta["tokenizer.ggml.tokens"] = [*meta["tokenizer.ggml.tokens"], "dup"]
    meta["tokenizer.ggml.token_type"] = [*meta["tokenizer.ggml.token_type"], NORMAL]
    meta["tokenizer.ggml.tokens"].remove("xy")
    meta["tokenizer.ggml.token_type"].pop()
    with pytest.warns(UserWarning, match="1 BPE merges"):
        tok = load_tokenizer(meta)
    vocab = tok.vocab
    assert vocab.finder is not None and "token_to_id" not in vocab.__dict__  # no dict built
    for text in ["a", "ab", "dup", "xy", "Ġ", "nope", ""]:
        assert vocab.find(text) == vocab.token_to_id.get(text), text
    assert vocab.find("dup") == meta["tokenizer.ggml.tokens"].index("dup")
    assert vocab.find("xy") is None
    with pytest.warns(UserWarning):
        again = load_tokenizer(meta).vocab
    assert again == vocab  # the tables behind find() are not part of what a vocabulary is
