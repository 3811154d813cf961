"""Tiny synthetic vocabularies, built as GGUF metadata dicts, for the tokenizer unit tests."""

from __future__ import annotations

import numpy as np

from corral.tokenizer import Tokenizer

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# GPT-2's printable stand-ins for the bytes, written out independently of the code under test:
# printable Latin-1 maps to itself, the other 68 bytes to U+0100.. in byte order.
_KEPT = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
GPT2_BYTE_CHARS = {b: chr(b) for b in _KEPT}
GPT2_BYTE_CHARS.update(
    {b: chr(0x100 + i) for i, b in enumerate(b for b in range(256) if b not in _KEPT)}
)


def bpe_metadata(
    merges: list[str] = (),  # type: ignore[assignment]
    *,
    pre: str | None = "gpt-2",
    specials: dict[str, int] | None = None,
    extra_tokens: list[str] = (),  # type: ignore[assignment]
    **keys: object,
) -> dict:
    """A byte-level BPE vocabulary: `specials` first (text -> GGUF token type), then the 256
    byte characters, then every merge result and `extra_tokens`. `keys` are extra GGUF keys
    with the "tokenizer.ggml." prefix left off (add_bos_token=True, ...)."""
    tokens: list[str] = []
    types: list[int] = []
    for text, ttype in (specials or {}).items():
        tokens.append(text)
        types.append(ttype)
    for b in range(256):
        tokens.append(GPT2_BYTE_CHARS[b])
        types.append(NORMAL)
    for text in [m.replace(" ", "") for m in merges] + list(extra_tokens):
        if text not in tokens:
            tokens.append(text)
            types.append(NORMAL)
    meta: dict = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": np.array(types, dtype=np.int32),
        "tokenizer.ggml.merges": list(merges),
    }
    if pre is not None:
        meta["tokenizer.ggml.pre"] = pre
    meta.update({"tokenizer.ggml." + k: v for k, v in keys.items()})
    return meta


def spm_metadata(pieces: dict[str, float], **keys: object) -> dict:
    """An SPM vocabulary: <unk>=0, <s>=1, </s>=2, the 256 <0xXX> byte tokens (3..258), then
    `pieces` (text -> score). Texts starting with "!" are stored without the "!" as
    USER_DEFINED tokens, texts starting with "#" as CONTROL ones."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [UNKNOWN, CONTROL, CONTROL] + [BYTE] * 256
    scores = [0.0] * len(tokens)
    for text, score in pieces.items():
        ttype = {"!": USER_DEFINED, "#": CONTROL}.get(text[:1], NORMAL)
        tokens.append(text[1:] if ttype != NORMAL else text)
        types.append(ttype)
        scores.append(score)
    meta: dict = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": np.array(types, dtype=np.int32),
        "tokenizer.ggml.scores": np.array(scores, dtype=np.float32),
        "tokenizer.ggml.add_space_prefix": False,
    }
    meta.update({"tokenizer.ggml." + k: v for k, v in keys.items()})
    return meta


def ids_of(tok: Tokenizer, *texts: str) -> list[int]:
    """The ids of tokens given by their vocabulary texts."""
    table = {tok.token_text(i): i for i in range(tok.vocab_size)}
    return [table[t] for t in texts]
