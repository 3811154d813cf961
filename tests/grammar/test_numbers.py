"""JSON number literals are bounded to 16 digits per part (as llama.cpp's schema grammars)."""

from __future__ import annotations

from pathlib import Path

import torch

import corral
from corral.grammar import GrammarSpec, make_constraint
from corral.grammar.numbers import MAX_DIGITS, NumberLimit


def _tok(tmp_path: Path):  # noqa: ANN202
    from tiny_gguf import write_tiny

    return corral.load(write_tiny(tmp_path / "t.gguf")).tokenizer


def test_digit_runs_are_cut_at_sixteen_outside_strings(tmp_path: Path) -> None:
    tok = _tok(tmp_path)
    lim = NumberLimit(tok)
    digit = tok.vocab.token_to_id["5"]
    comma = tok.vocab.token_to_id[","]
    logits = torch.zeros(tok.vocab_size)
    lim.feed(b'{"p": 0.' + b"7" * (MAX_DIGITS - 1))
    assert torch.isfinite(lim.mask(logits)[digit])  # the 16th digit may come
    lim.feed(b"7")
    masked = lim.mask(logits)
    assert not torch.isfinite(masked[digit]) and torch.isfinite(masked[comma])
    lim.feed(b"e-")  # a new part: digits again
    assert torch.isfinite(lim.mask(logits)[digit])


def test_digits_inside_strings_are_free(tmp_path: Path) -> None:
    tok = _tok(tmp_path)
    lim = NumberLimit(tok)
    digit = tok.vocab.token_to_id["5"]
    lim.feed(b'{"id": "' + b"1" * 40)
    assert torch.isfinite(lim.mask(torch.zeros(tok.vocab_size))[digit])
    lim.feed(b'\\"' + b"2" * 20)  # an escaped quote does not end the string
    assert torch.isfinite(lim.mask(torch.zeros(tok.vocab_size))[digit])


def test_json_specs_get_the_limit_and_grammars_do_not(tmp_path: Path) -> None:
    tok = _tok(tmp_path)
    assert make_constraint(tok, GrammarSpec.json_schema({"type": "number"}))._numbers is not None
    assert make_constraint(tok, GrammarSpec.regex("[0-9]+"))._numbers is None
