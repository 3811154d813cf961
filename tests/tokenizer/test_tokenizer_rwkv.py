"""The RWKV "world" tokenizer against llama.cpp's ids (tests/models/fixtures/rwkv/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corral.tokenizer import RWKVTokenizer, load_tokenizer
from corral.tokenizer.rwkv import unescape_rwkv_token
from tiny_rwkv import rwkv_vocab

REFS = json.loads(
    (Path(__file__).parents[1] / "models" / "fixtures" / "rwkv" / "tokenize.json").read_text()
)


@pytest.fixture(scope="module")
def tok() -> RWKVTokenizer:
    texts, types = rwkv_vocab()
    meta = {
        "tokenizer.ggml.model": "rwkv",
        "tokenizer.ggml.tokens": texts,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.bos_token_id": 0,
        "tokenizer.ggml.eos_token_id": 0,
        "tokenizer.ggml.eot_token_id": texts.index("\\n\\n"),
    }
    t = load_tokenizer(meta)
    assert isinstance(t, RWKVTokenizer)
    return t


def test_unescape() -> None:
    assert unescape_rwkv_token("a\\x00\\xff\\t\\n\\r\\\\\\'b") == b"a\x00\xff\t\n\r\\'b"
    assert unescape_rwkv_token("ab\\") == b"ab"
    for b in range(256):
        assert unescape_rwkv_token(repr(bytes([b]))[2:-1]) == bytes([b])


@pytest.mark.parametrize("i", range(len(REFS["texts"])))
def test_ids_match_llama_cpp(tok: RWKVTokenizer, i: int) -> None:
    text = REFS["texts"][i]
    assert tok.encode(text, add_special=False) == REFS["plain"][i]
    assert tok.encode(text, add_special=False, parse_special=True) == REFS["special"][i]
    assert tok.encode(text, add_special=True) == REFS["with_bos"][i]


def test_round_trip_and_eog(tok: RWKVTokenizer) -> None:
    text = "h\u00e9llo the\n\nabc\\n \u2713"
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode([0, 260]) == "hello" and tok.decode([0], render_special=True) == "<s>"
    assert tok.eog_ids == {0, 257} and not tok.add_bos
