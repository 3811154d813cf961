"""load_tokenizer: dispatch on tokenizer.ggml.model, clear errors for the rest."""

from __future__ import annotations

import pytest
from synth_vocab import bpe_metadata, spm_metadata

from corral.errors import UnsupportedError
from corral.tokenizer import BPETokenizer, SPMTokenizer, VocabType, load_tokenizer


def test_dispatch_on_model() -> None:
    bpe = load_tokenizer(bpe_metadata())
    spm = load_tokenizer(spm_metadata({"a": -1}))
    assert isinstance(bpe, BPETokenizer) and bpe.model is VocabType.BPE
    assert isinstance(spm, SPMTokenizer) and spm.model is VocabType.SPM
    assert bpe.vocab_size == 256 and spm.vocab_size == 260


@pytest.mark.parametrize("model", ["plamo2", "no_vocab", "gemma4", "foo"])
def test_other_models_are_unsupported(model: str) -> None:
    with pytest.raises(UnsupportedError) as err:
        load_tokenizer({**spm_metadata({}), "tokenizer.ggml.model": model})
    assert "\n" not in str(err.value) and model in str(err.value)


def test_missing_pieces_are_reported() -> None:
    meta = bpe_metadata()
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.merges"):
        with pytest.raises(UnsupportedError, match=key.rsplit(".", 1)[1]):
            load_tokenizer({k: v for k, v in meta.items() if k != key})


def test_add_bos_without_bos_token_is_an_error() -> None:
    meta = bpe_metadata(add_bos_token=True)  # BPE's default BOS id (11) exists here...
    assert load_tokenizer(meta).bos_id == 11
    meta["tokenizer.ggml.tokens"] = meta["tokenizer.ggml.tokens"][:8]  # ...but not here
    meta["tokenizer.ggml.token_type"] = meta["tokenizer.ggml.token_type"][:8]
    meta["tokenizer.ggml.merges"] = []
    with pytest.raises(UnsupportedError, match="BOS"):
        load_tokenizer(meta)
