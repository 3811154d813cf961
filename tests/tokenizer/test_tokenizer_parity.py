"""Token ids identical to llama.cpp on the real SmolLM2 (BPE) and Gemma 3 (SPM) files.

Truth is the oracle JSON written with llama-cpp-python (see shared/oracles/make_oracle.py):
47 tricky strings in three tokenize modes, the pieces and llama_detokenize text of the
special-mode ids, and the prompts of the greedy runs.
"""

from __future__ import annotations

import random

import pytest

from corral.gguf import open_gguf
from corral.tokenizer import BPETokenizer, Tokenizer, load_tokenizer

pytestmark = pytest.mark.realmodel

MODES = {"plain": (False, False), "special": (False, True), "bos_special": (True, True)}


def _load(path) -> Tokenizer:
    with open_gguf(path) as g:
        return load_tokenizer(g.metadata)


@pytest.fixture(scope="module")
def smollm2(smollm2_path) -> Tokenizer:
    return _load(smollm2_path)


@pytest.fixture(scope="module")
def gemma3(gemma3_path) -> Tokenizer:
    return _load(gemma3_path)


@pytest.fixture(params=["smollm2", "gemma3"])
def model(request) -> tuple[Tokenizer, dict]:
    tok = request.getfixturevalue(request.param)
    return tok, request.getfixturevalue(f"oracle_{request.param}")


def _mismatches(cases: list[dict], got) -> list[str]:
    return [
        f"{c['text']!r}: got {g!r}, llama.cpp {w!r}"
        for c in cases
        if (g := got(c)) != (w := c["want"])
    ]


@pytest.mark.parametrize("mode", sorted(MODES))
def test_token_ids_match_llama_cpp(model, mode: str) -> None:
    tok, oracle = model
    add_special, parse_special = MODES[mode]
    cases = [{**c, "want": c[mode]} for c in oracle["tokenize"]["cases"]]
    assert len(cases) == 47
    bad = _mismatches(cases, lambda c: tok.encode(c["text"], add_special, parse_special))
    assert not bad, "\n".join(bad)


def test_pieces_match_llama_cpp(model) -> None:
    tok, oracle = model
    cases = [{**c, "want": c["special_pieces"]} for c in oracle["tokenize"]["cases"]]
    bad = _mismatches(
        cases,
        lambda c: [
            tok.token_to_piece(t, True).decode("utf-8", "backslashreplace") for t in c["special"]
        ],
    )
    assert not bad, "\n".join(bad)


def test_detokenize_matches_llama_cpp(model) -> None:
    tok, oracle = model
    cases = [{**c, "want": c["special_detok"]} for c in oracle["tokenize"]["cases"]]
    bad = _mismatches(
        cases,
        lambda c: tok.detokenize(c["special"], remove_special=False, unparse_special=True).decode(
            "utf-8", "backslashreplace"
        ),
    )
    assert not bad, "\n".join(bad)


def test_plain_ids_decode_back_to_the_text(model) -> None:
    tok, oracle = model
    cases = [{**c, "want": c["text"]} for c in oracle["tokenize"]["cases"]]
    assert not (bad := _mismatches(cases, lambda c: tok.decode(c["plain"]))), "\n".join(bad)


def test_greedy_prompts_match_llama_cpp(model) -> None:
    tok, oracle = model
    for case in oracle["greedy"]["cases"]:
        assert (
            tok.encode(case["prompt"], add_special=True, parse_special=True) == case["prompt_ids"]
        )


def test_special_ids(smollm2, gemma3, oracle_smollm2, oracle_gemma3) -> None:
    for tok, oracle in ((smollm2, oracle_smollm2), (gemma3, oracle_gemma3)):
        meta = oracle["tokenizer_meta"]
        assert (tok.bos_id, tok.eos_id, tok.vocab_size) == (
            meta["token_bos()"],
            meta["token_eos()"],
            meta["n_vocab"],
        )
        assert tok.add_bos == meta["add_bos_token(llama_vocab_get_add_bos)"]
        assert tok.add_eos == meta["add_eos_token(llama_vocab_get_add_eos)"]
    sm, gm = smollm2, gemma3
    # <|endoftext|>, <|im_end|> (EOS) and <reponame> (FIM repo) end generation in llama.cpp
    assert sm.eog_ids == {0, 2, 4}
    # <eos>, <end_of_turn>, and </s> (in llama.cpp's list of end texts)
    assert gm.eog_ids == {1, 106, 212} and gm.token_text(106) == "<end_of_turn>"


def test_long_mixed_text_round_trips(smollm2, gemma3) -> None:
    # speed is bench/generate.py's business (load time); here only the result counts
    text = ("The quick brown fox, 12345 jumps; 日本語 😀\n" * 300)[:10240]
    for tok in (smollm2, gemma3):
        ids = tok.encode(text, parse_special=True)
        assert len(ids) > 1000 and tok.decode(ids) == text


def test_c_merging_equals_hf_bpe_on_smollm2(smollm2, smollm2_path) -> None:
    """The C merger (corral._bpe) against HF's BPE model on SmolLM2's 49k merges: random
    texts over letters, digits, spaces, punctuation, accents, CJK, emoji and control bytes."""
    tok = smollm2
    assert isinstance(tok, BPETokenizer) and tok._merger is not None
    with open_gguf(smollm2_path) as g:
        merges = list(g.metadata["tokenizer.ggml.merges"])
    hf = BPETokenizer(tok.vocab, merges, tok.pre, use_c=False)
    rng = random.Random(0)
    alphabet = "abcdeéèßtheTHE日本語😀 \n\t0123'sll.,;!?-_\u00a0\u200b\x00\x7f"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 48))) for _ in range(2000)]
    texts += ["internationalization", "Hello world, hello WORLD!!!", "   x  y   ", "1234567890"]
    for text in texts:
        assert tok.encode(text, add_special=False) == hf.encode(text, add_special=False), text
