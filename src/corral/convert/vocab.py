"""Tokenizer metadata for a converted model, written as llama.cpp's convert_hf_to_gguf.py does.

Byte-level BPE (`tokenizer.json`, or `vocab.json` + `merges.txt`): model "gpt2", the tokens
in id order with their types, the merges, and the pre-tokenizer name. The name is found as
llama.cpp finds it, by hashing the token ids of a fixed probe text (known tokenizers), and
failing that from the split regex in tokenizer.json. SentencePiece (`tokenizer.model`):
model "llama", tokens, scores and types. Both: special token ids, add_bos/add_eos and the chat
template through gguf-py's `SpecialVocab`.
"""

from __future__ import annotations

import json
from hashlib import sha256
from pathlib import Path
from typing import Any

from gguf import GGUFWriter, SpecialVocab, TokenType

from corral.convert.checkpoint import ConvertError
from corral.convert.spm_proto import read_pieces

# llama.cpp's probe text: its token ids identify a BPE pre-tokenizer.
_CHKTXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis "
    "concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
    "កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български "
    "''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not "
    "sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
# sha256 of str(ids) for the probe -> pre-tokenizer name (from llama.cpp's table, for the
# families corral's BPE tokenizer implements).
_KNOWN_HASHES = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
    "049ecf7629871e3041641907f3de7c733e4dbfdc736f57d882ba0b0845599754": "deepseek-llm",
    "347715f544604f9118bb75ed199f68779f423cabb20db6de6f31b908d04d7821": "deepseek-coder",
    "8aeee3860c56296a157a1fe2fad249ec40aa59b1bb5709f4ade11c4e6fe652ed": "falcon",
    "9d032fcbd5501f4a38150912590928bfb36091efb5df11b8e2124b0390e3fb1e": "falcon3",
    "b6dc8df998e1cfbdc4eac8243701a65afe638679230920b50d6f17d81c098166": "mpt",
    "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34": "starcoder",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "0fe1cf6eda062318a1af7270f3331a85c539a01778ff948e24388e949c5282f4": "gpt-2",
    "32d85c31273f8019248f2559fed492d929ea28b17e51d81d3bb36fff23ca72b3": "stablelm2",
    "6221ad2852e85ce96f791f476e0b390cf9b474c9e3d1362f53a24a06dc8220ff": "refact",
    "9c2227e4dd922002fb81bde4fc02b0483ca4f12911410dee2255e4987644e3f8": "command-r",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",
    "a8594e3edff7c29c003940395316294b2c623e09894deebbc65f33f1515df79e": "dbrx",
    "c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d": "smaug-bpe",
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "3c30d3ad1d6b64202cd222813e7736c2db6e1bd6d67197090fc1211fbc612ae7": "bloom",
    "bc01ce58980e1db43859146dc51b1758b3b88729b217a74792e9f8d43e479d21": "gpt3-finnish",
    "fcace8b9cac38ce847670c970cd5892031a753a1ef381abd1d9af00f713da085": "phi-2",
    "7b3e7548e4308f52a76e8229e4e6cc831195d0d1df43aed21ac6c93da05fec5f": "codeshell",
    "4e2b24cc4770243d65a2c9ec19770a72f08cffc161adbb73fcbb6b7dd45a0aae": "exaone",
    "c7ea5862a53e4272c035c8238367063e2b270d51faa48c0f09e9d5b54746c360": "poro-chat",
    "7fc505bd3104ca1083b150b17d088b59534ede9bde81f0dd2090967d7fe52cee": "viking",
}
# Split regexes as tokenizer.json spells them -> pre-tokenizer name (for tokenizers whose
# hash is not in the table: fine-tunes with extra tokens, tiny test vocabularies).
_KNOWN_SPLITS = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",
}


def _pre_from_json(tok_json: dict[str, Any]) -> str | None:
    """The pre-tokenizer name read off tokenizer.json's pre_tokenizer, if it is a known one."""
    pre = tok_json.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits"):
        return "starcoder"
    if kinds == ["Split", "ByteLevel"] and not parts[1].get("use_regex", True):
        return _KNOWN_SPLITS.get(parts[0].get("pattern", {}).get("Regex", ""))
    return None


def _load_bpe(folder: Path) -> tuple[Any, dict[str, Any]]:
    """A `tokenizers.Tokenizer` and the tokenizer.json content (synthesised for GPT-2 style
    vocab.json + merges.txt folders)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tj = folder / "tokenizer.json"
    if tj.is_file():
        return Tokenizer.from_file(str(tj)), json.loads(tj.read_text(encoding="utf-8"))
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    if not (vocab.is_file() and merges.is_file()):
        raise ConvertError(f"{folder}: no tokenizer (tokenizer.json, tokenizer.model, vocab.json)")
    tok = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok, json.loads(tok.to_str())


def _looks_special(text: str) -> bool:
    """Added tokens some models forget to mark special (llama.cpp's list)."""
    return (
        text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (text.startswith("<|") and text.endswith("|>"))
        or (text.startswith("<｜") and text.endswith("｜>"))
        or (text.startswith("<unused") and text.endswith(">"))
    )


def add_bpe_vocab(
    w: GGUFWriter, folder: Path, vocab_size: int | None, pre: str | None = None
) -> None:
    """Write a byte-level BPE vocabulary; `pre` overrides the detected pre-tokenizer."""
    tok, tok_json = _load_bpe(folder)
    vocab: dict[str, int] = tok.get_vocab(with_added_tokens=True)
    n = vocab_size or len(vocab)
    if max(vocab.values()) >= n:
        raise ConvertError(f"{folder}: tokenizer has ids past the model's vocab_size {n}")
    if pre is None:
        ids = tok.encode(_CHKTXT).ids
        pre = _KNOWN_HASHES.get(sha256(str(ids).encode()).hexdigest()) or _pre_from_json(tok_json)
    if pre is None:
        raise ConvertError(
            f"{folder}: unknown BPE pre-tokenizer (neither its probe hash nor its split rules "
            "match one llama.cpp knows)"
        )
    added = tok.get_added_tokens_decoder()
    by_id = {i: t for t, i in vocab.items()}
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        elif i in added:
            special = added[i].special or _looks_special(text)
            # user-defined tokens are matched on raw text: undo SentencePiece's space mark
            tokens.append(text if special else text.replace("\u2581", " "))
            types.append(TokenType.CONTROL if special else TokenType.USER_DEFINED)
        else:
            tokens.append(text)
            types.append(TokenType.NORMAL)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    SpecialVocab(folder, load_merges=True, n_vocab=n).add_to_gguf(w, quiet=True)


def spm_pieces(path: Path, vocab_size: int | None) -> tuple[list[bytes], list[float], list[int]]:
    """Tokens, scores and types of a SentencePiece model file, padded to vocab_size as
    llama.cpp pads it ([PADn], unused)."""
    pieces = read_pieces(path)
    n = vocab_size or len(pieces)
    tokens = [f"[PAD{i}]".encode() for i in range(n)]
    scores = [-10000.0] * n
    types = [int(TokenType.UNUSED)] * n
    for i, p in enumerate(pieces[:n]):
        tokens[i], scores[i], types[i] = p.text.encode("utf-8"), p.score, p.type
    return tokens, scores, types


def overlay_added_tokens(
    folder: Path, tokens: list[bytes], scores: list[float], types: list[int],
    *, keep_control: bool = False, unescape_spaces: bool = True,
) -> None:  # fmt: skip
    """Overlay the folder's added_tokens.json (user-defined, as llama.cpp) and
    tokenizer_config.json's added_tokens_decoder (control when special) on a vocabulary.
    keep_control: leave tokens the model file already marks control or unknown as they are;
    unescape_spaces: user-defined texts get "\u2581" back as spaces."""
    n = len(tokens)
    added_file = folder / "added_tokens.json"
    if added_file.is_file():
        for text, i in json.loads(added_file.read_text(encoding="utf-8")).items():
            if i < n:
                tokens[i], scores[i], types[i] = text.encode(), -1000.0, TokenType.USER_DEFINED
    config_file = folder / "tokenizer_config.json"
    if config_file.is_file():
        decoder = json.loads(config_file.read_text(encoding="utf-8")).get("added_tokens_decoder")
        for key, data in (decoder or {}).items():
            i, text = int(key), data["content"]
            if i >= n or (keep_control and types[i] in (TokenType.CONTROL, TokenType.UNKNOWN)):
                continue
            if data.get("special") or _looks_special(text):
                tokens[i], types[i] = text.encode(), TokenType.CONTROL
            else:
                plain = text.replace("\u2581", " ") if unescape_spaces else text
                tokens[i], types[i] = plain.encode(), TokenType.USER_DEFINED
            scores[i] = -1000.0


def spm_tokens(folder: Path, vocab_size: int | None) -> tuple[list[bytes], list[float], list[int]]:
    """Tokens, scores and types of a SentencePiece vocabulary plus the folder's added tokens,
    padded to vocab_size as llama.cpp pads it."""
    tokens, scores, types = spm_pieces(folder / "tokenizer.model", vocab_size)
    overlay_added_tokens(folder, tokens, scores, types)
    return tokens, scores, types


def add_spm_vocab(w: GGUFWriter, folder: Path, vocab_size: int | None) -> None:
    """Write a SentencePiece vocabulary (llama.cpp's "llama" tokenizer model)."""
    tokens, scores, types = spm_tokens(folder, vocab_size)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    SpecialVocab(folder, n_vocab=len(tokens)).add_to_gguf(w, quiet=True)


def add_vocab(w: GGUFWriter, folder: Path, vocab_size: int | None) -> None:
    """SentencePiece when the folder has tokenizer.model, byte-level BPE otherwise (the
    order llama.cpp tries them in for llama-like models)."""
    if (folder / "tokenizer.model").is_file():
        add_spm_vocab(w, folder, vocab_size)
    else:
        add_bpe_vocab(w, folder, vocab_size)
