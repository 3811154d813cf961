"""What the RWKV-6 and RWKV-7 converters share: the RWKV "world" vocabulary and the fusing of
the per-channel token-shift mixes ("lerps") into one `time_mix_lerp_fused` tensor per block.

The vocabulary is read as llama.cpp's `_set_vocab_rwkv_world` reads it: one token a line in
rwkv_vocab_v20230424.txt, `<id> <python literal> <byte length>`; "<s>" (control) comes
first, every token is written as `repr(bytes)[2:-1]` (the escaped text llama.cpp's rwkv
tokenizer unescapes), and "[PAD<i>]" (unused) fills up to config.json's vocab_size.
Special tokens come from tokenizer_config.json / config.json (gguf-py's SpecialVocab); the
chat template is the name "rwkv-world", and the end-of-turn token is "\\n\\n" (llama.cpp
hard-codes its id in the world vocabulary, 261).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from gguf import GGUFWriter, SpecialVocab, TokenType

from corral.convert.base import ArchConverter, Getter
from corral.convert.checkpoint import Checkpoint, ConvertError

VOCAB_FILE = "rwkv_vocab_v20230424.txt"
_EOT_TEXT = b"\\n\\n"  # "\n\n" escaped as the token list stores it
_EOT_WORLD_ID = 261  # its id in the world vocabulary, which llama.cpp writes as is


def world_tokens(path: Path, vocab_size: int) -> tuple[list[bytes], list[int]]:
    """The escaped token texts (UTF-8) and token types of a world vocabulary file."""
    tokens: list[bytes] = [b"<s>"]
    types: list[int] = [int(TokenType.CONTROL)]
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConvertError(f"{path}: cannot read ({e})") from None
    for n, line in enumerate(lines, 1):
        parts = line.split(" ")
        try:
            token = ast.literal_eval(" ".join(parts[1:-1]))
            length = int(parts[-1])
        except (ValueError, SyntaxError, IndexError):
            raise ConvertError(f"{path.name}:{n}: not '<id> <token literal> <length>'") from None
        raw = token.encode() if isinstance(token, str) else token
        if not isinstance(raw, bytes) or len(raw) != length:
            raise ConvertError(f"{path.name}:{n}: token is not {length} bytes")
        tokens.append(repr(raw)[2:-1].encode())  # b'\xff' -> \xff
        types.append(int(TokenType.NORMAL))
    if len(tokens) > vocab_size:
        raise ConvertError(
            f"{path.name}: {len(tokens)} tokens, more than config.json's vocab_size {vocab_size}"
        )
    for i in range(len(tokens), vocab_size):
        tokens.append(f"[PAD{i}]".encode())
        types.append(int(TokenType.UNUSED))
    return tokens, types


def add_world_vocab(w: GGUFWriter, folder: Path, vocab_size: int) -> None:
    """Tokenizer metadata for a model with the RWKV world vocabulary in `folder`."""
    path = folder / VOCAB_FILE
    if not path.is_file():
        raise ConvertError(f"{folder.name}: no {VOCAB_FILE} (the RWKV world vocabulary)")
    tokens, types = world_tokens(path, vocab_size)
    w.add_tokenizer_model("rwkv")
    w.add_token_list(tokens)
    w.add_token_types(types)
    special = SpecialVocab(folder, load_merges=False)
    special.chat_template = "rwkv-world"
    eot = tokens.index(_EOT_TEXT) if _EOT_TEXT in tokens else _EOT_WORLD_ID
    if eot < len(tokens):
        special.special_token_ids.setdefault("eot", eot)
    special.add_to_gguf(w)


class WkvConverter(ArchConverter):
    """Base of the RWKV-6/7 converters: the world vocabulary, and per-block groups of lerp
    parameters that become one fused tensor once the whole group has been seen.

    A group still incomplete when the checkpoint is exhausted is a missing tensor; the error
    names the Hugging Face tensors that were not there."""

    # token-shift mixes fused in this order (the letters as the checkpoint names them)
    lerp_order: str = ""

    def __init__(self, ckpt: Checkpoint) -> None:
        super().__init__(ckpt)
        self._lerps: dict[int, dict[str, tuple[str, torch.Tensor]]] = {}

    def set_vocab(self, w: GGUFWriter) -> None:
        add_world_vocab(w, self.ckpt.folder, int(self.find("vocab_size", default=65536)))

    def collect_lerp(
        self, bid: int, letter: str, hf_name: str, t: torch.Tensor
    ) -> list[torch.Tensor] | None:
        """Hold one lerp of block `bid`; the group's tensors in `lerp_order` once complete."""
        group = self._lerps.setdefault(bid, {})
        group[letter] = (hf_name, t)
        if any(c not in group for c in self.lerp_order):
            return None
        del self._lerps[bid]
        return [group[c][1] for c in self.lerp_order]

    def tensors(self, get: Getter) -> Iterator[tuple[str, torch.Tensor]]:
        self._lerps = {}  # the writer runs this twice (shapes, then data)
        yield from super().tensors(get)
        missing: list[str] = []
        for group in self._lerps.values():
            seen = next(iter(group.values()))[0]  # a name of the group: swap its last letter
            missing += [re.sub(r"[a-z]$", c, seen) for c in self.lerp_order if c not in group]
        if missing:
            raise ConvertError(
                f"{self.ckpt.folder.name}: checkpoint lacks tensors {', '.join(missing)} "
                "(token-shift mixes fused into time_mix_lerp_fused)"
            )
