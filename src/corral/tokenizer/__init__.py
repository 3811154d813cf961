"""Tokenizers built from GGUF metadata, giving the same token ids as llama.cpp.

`load_tokenizer(metadata)` reads `tokenizer.ggml.model` and returns a BPE tokenizer for
"gpt2" vocabularies, an SPM tokenizer for "llama" ones, a WordPiece one for "bert"
(encoder models) and a trie one for "rwkv"; the other llama.cpp tokenizer models raise
UnsupportedError for now.
"""

from __future__ import annotations

import numpy as np

from corral.errors import UnsupportedError
from corral.tokenizer.base import Tokenizer
from corral.tokenizer.bpe import BPETokenizer, build_merger
from corral.tokenizer.pretok import PreConfig, PreType, resolve_pre
from corral.tokenizer.rwkv import RWKVTokenizer
from corral.tokenizer.spm import SPMTokenizer
from corral.tokenizer.stream import StreamDecoder
from corral.tokenizer.ugm import UGM_DEFAULTS, UGMTokenizer
from corral.tokenizer.vocab import TokenAttr, VocabType, build_vocab, vocab_tokens
from corral.tokenizer.wpm import WPMTokenizer

__all__ = [
    "BPETokenizer",
    "PreConfig",
    "PreType",
    "RWKVTokenizer",
    "SPMTokenizer",
    "StreamDecoder",
    "TokenAttr",
    "Tokenizer",
    "UGMTokenizer",
    "VocabType",
    "WPMTokenizer",
    "load_tokenizer",
]

_UNSUPPORTED = {
    VocabType.PLAMO2: "PLaMo-2 tokenizers are not supported yet",
    VocabType.NONE: "this GGUF has no vocabulary, so it cannot tokenize text",
}


def load_tokenizer(metadata: dict) -> Tokenizer:
    """Build the tokenizer a GGUF file describes, from its metadata dict."""
    name = metadata.get("tokenizer.ggml.model")
    if name is None:
        raise UnsupportedError("this GGUF has no tokenizer (tokenizer.ggml.model is missing)")
    vtype = VocabType.from_name(str(name))
    if vtype in _UNSUPPORTED:
        raise UnsupportedError(f"{_UNSUPPORTED[vtype]} (tokenizer.ggml.model = {name!r})")
    if "tokenizer.ggml.tokens" not in metadata:
        raise UnsupportedError("this GGUF has no vocabulary (tokenizer.ggml.tokens is missing)")

    if vtype is VocabType.WPM:
        return WPMTokenizer.from_metadata(metadata)

    if vtype is VocabType.UGM:  # t5: llama.cpp's defaults under the file's own keys
        meta = {**UGM_DEFAULTS, **metadata}
        vocab = build_vocab(meta, vtype, clean_spaces=False, add_bos_default=False)
        scores = np.asarray(meta.get("tokenizer.ggml.scores", [0.0] * len(vocab.tokens)))
        charsmap = meta.get("tokenizer.ggml.precompiled_charsmap")
        return UGMTokenizer(
            vocab,
            scores.astype(np.float32).tolist(),
            bytes(np.asarray(charsmap, dtype=np.uint8)) if charsmap is not None else None,
            bool(meta.get("tokenizer.ggml.remove_extra_whitespaces", False)),
        )

    if vtype is VocabType.RWKV:  # llama.cpp adds no BOS unless the file asks
        return RWKVTokenizer(
            build_vocab(metadata, vtype, clean_spaces=False, add_bos_default=False)
        )

    if vtype is VocabType.BPE:
        if "tokenizer.ggml.merges" not in metadata:
            raise UnsupportedError("this GGUF's BPE vocabulary has no merges")
        pre = resolve_pre(metadata.get("tokenizer.ggml.pre"))
        # the C merge tables first: they also answer the vocabulary's text -> id lookups,
        # so no 50k-entry dict is built unless something asks for one
        tokens = vocab_tokens(metadata)
        merges = list(metadata["tokenizer.ggml.merges"])
        merger = build_merger(tokens, merges, pre)
        vocab = build_vocab(
            metadata, vtype, clean_spaces=pre.clean_spaces, add_bos_default=pre.add_bos,
            tokens=tokens, finder=merger.find if merger is not None else None,
        )  # fmt: skip
        return BPETokenizer(vocab, merges, pre, merger=merger)

    # SPM: llama.cpp ignores tokenizer.ggml.pre here and adds BOS unless told otherwise
    vocab = build_vocab(metadata, vtype, clean_spaces=False, add_bos_default=True)
    scores = metadata.get("tokenizer.ggml.scores")
    if scores is None:
        score_list = [0.0] * len(vocab.tokens)
    else:
        score_list = np.asarray(scores, dtype=np.float32).tolist()
    return SPMTokenizer(vocab, score_list)
