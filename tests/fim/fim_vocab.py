"""Tiny GGUF files holding only a vocabulary with one FIM family's special tokens.

Byte-level BPE without merges (every byte of plain text is its own token, so expected ids
can be written out independently of the tokenizer) or SPM with byte fallback; the specials
come first, as in the real models, and are CONTROL tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gguf import GGUFWriter

from corral.gguf.reader import open_gguf
from corral.tokenizer import Tokenizer, load_tokenizer
from tiny_gguf import byte_chars

CONTROL, NORMAL, BYTE = 3, 1, 6


def write_vocab(
    path: Path,
    specials: Sequence[str],
    *,
    spm: bool = False,
    bos: str | None = None,
    eos: str | None = None,
    add_bos: bool = False,
    fim_keys: dict[str, str] | None = None,
) -> Path:
    """Write a vocabulary-only GGUF. fim_keys: GGUF key stem ("fim_pre") -> token text,
    written as `tokenizer.ggml.<stem>_token_id`."""
    if spm:
        plain = [f"<0x{b:02X}>" for b in range(256)]
        types = [CONTROL] * len(specials) + [BYTE] * 256
    else:
        # one merge that plain test text never meets: the GGUF needs a merge list
        plain = byte_chars() + ["QZ"]
        types = [CONTROL] * len(specials) + [NORMAL] * 257
    tokens = list(specials) + plain
    w = GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("llama" if spm else "gpt2")
    if not spm:
        w.add_tokenizer_pre("default")
        w.add_token_merges(["Q Z"])
    else:
        w.add_token_scores([0.0] * len(tokens))
        w.add_add_space_prefix(False)
    w.add_token_list(tokens)
    w.add_token_types(types)
    if bos is not None:
        w.add_bos_token_id(tokens.index(bos))
    if eos is not None:
        w.add_eos_token_id(tokens.index(eos))
    w.add_add_bos_token(add_bos)
    for stem, text in (fim_keys or {}).items():
        w.add_uint32(f"tokenizer.ggml.{stem}_token_id", tokens.index(text))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def load_vocab(path: Path) -> tuple[Tokenizer, dict]:
    """(tokenizer, metadata) of a GGUF file."""
    g = open_gguf(path)
    try:
        meta = dict(g.metadata)
        return load_tokenizer(meta), meta
    finally:
        g.close()


def byte_ids(text: str, n_specials: int, spm: bool = False) -> list[int]:
    """Expected ids of plain text in a `write_vocab` vocabulary: one token per byte (SPM
    writes spaces as U+2581 first, then falls back to its bytes)."""
    if spm:
        text = text.replace(" ", "\u2581")
    return [n_specials + b for b in text.encode()]
