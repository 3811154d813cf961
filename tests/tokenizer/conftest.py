"""Fixtures for the tokenizer tests (the vocabulary builders live in synth_vocab.py)."""

from __future__ import annotations

import pytest
from synth_vocab import CONTROL, bpe_metadata

from corral.tokenizer import Tokenizer, load_tokenizer


@pytest.fixture
def gpt2_bpe() -> Tokenizer:
    """A gpt-2 pre-tokenizer BPE with a few merges and the ChatML control tokens."""
    merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o", "r l", "Ġwo rl", "Ġworl d"]
    return load_tokenizer(
        bpe_metadata(
            merges,
            specials={"<|endoftext|>": CONTROL, "<|im_start|>": CONTROL, "<|im_end|>": CONTROL},
            bos_token_id=0,
            eos_token_id=2,
        )
    )
