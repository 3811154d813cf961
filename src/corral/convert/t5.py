"""T5 checkpoints (T5, T5 v1.1, Flan-T5, Flan-Alpaca, mT5) -> GGUF `t5`, as llama.cpp's
T5Model converter writes them, with one deliberate difference: the output head is always
written, already multiplied by d_model^-0.5 when transformers scales the decoder output
(original T5, `scale_decoder_outputs`), so that llama.cpp and corral both compute what
transformers does. (llama.cpp's own converter leaves tied heads out, and then runs them unscaled.)

Vocabulary: a SentencePiece Unigram model (`spiece.model` or `tokenizer.model`, read without
the sentencepiece package), or a tokenizer.json with a Unigram model; written as llama.cpp's
"t5" tokenizer: tokens, scores, types, space prefix, whitespace folding and the precompiled
normalization charsmap.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from gguf import MODEL_ARCH, MODEL_TENSOR, GGUFWriter, SpecialVocab, TokenType, get_tensor_name_map

from corral.convert.base import ArchConverter
from corral.convert.checkpoint import Checkpoint, ConvertError
from corral.convert.spm_proto import _fields
from corral.convert.vocab import add_spm_vocab, overlay_added_tokens, spm_pieces

T = MODEL_TENSOR
_EMBEDDINGS = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
_ENC = (T.ENC_ATTN_NORM, T.ENC_ATTN_Q, T.ENC_ATTN_K, T.ENC_ATTN_V, T.ENC_ATTN_OUT)
_ENC += (T.ENC_FFN_NORM, T.ENC_FFN_UP, T.ENC_FFN_DOWN)
_DEC = (T.DEC_ATTN_NORM, T.DEC_ATTN_Q, T.DEC_ATTN_K, T.DEC_ATTN_V, T.DEC_ATTN_OUT)
_DEC += (T.DEC_CROSS_ATTN_NORM, T.DEC_CROSS_ATTN_Q, T.DEC_CROSS_ATTN_K, T.DEC_CROSS_ATTN_V)
_DEC += (T.DEC_CROSS_ATTN_OUT, T.DEC_FFN_NORM, T.DEC_FFN_UP, T.DEC_FFN_DOWN)
# SentencePiece ModelProto fields: trainer_spec (model_type), normalizer_spec (its settings)
_UNIGRAM, _BPE = 1, 2


def read_spm_settings(path: Path) -> dict[str, Any]:
    """model_type, add_dummy_prefix, remove_extra_whitespaces and precompiled_charsmap of a
    SentencePiece model file (protobuf defaults where the file leaves them out)."""
    out: dict[str, Any] = {
        "model_type": _UNIGRAM,
        "add_dummy_prefix": True,
        "remove_extra_whitespaces": True,
        "precompiled_charsmap": b"",
    }
    for field, _, value in _fields(path.read_bytes()):
        if not isinstance(value, bytes):
            continue
        if field == 2:  # TrainerSpec
            for f, _, v in _fields(value):
                if f == 3 and isinstance(v, int):
                    out["model_type"] = v
        elif field == 3:  # NormalizerSpec
            for f, _, v in _fields(value):
                if f == 2 and isinstance(v, bytes):
                    out["precompiled_charsmap"] = v
                elif f == 3 and isinstance(v, int):
                    out["add_dummy_prefix"] = bool(v)
                elif f == 4 and isinstance(v, int):
                    out["remove_extra_whitespaces"] = bool(v)
    return out


def _json_unigram(tj: dict[str, Any], n: int | None) -> tuple[list[bytes], list[float], list[int]]:
    model = tj["model"]
    vocab: list[list[Any]] = model["vocab"]
    n = n or len(vocab)
    tokens = [f"[PAD{i}]".encode() for i in range(n)]
    scores = [-10000.0] * n
    types = [int(TokenType.UNUSED)] * n
    for i, (text, score) in enumerate(vocab[:n]):
        tokens[i], scores[i], types[i] = text.encode("utf-8"), float(score), TokenType.NORMAL
    if (unk := model.get("unk_id")) is not None and unk < n:
        types[unk] = TokenType.UNKNOWN
    for tok in tj.get("added_tokens", []):
        if tok["id"] < n and tok.get("special") and types[tok["id"]] != TokenType.UNKNOWN:
            types[tok["id"]] = TokenType.CONTROL
    return tokens, scores, types


def _json_settings(tj: dict[str, Any]) -> dict[str, Any]:
    """Space prefix, whitespace folding and charsmap as a tokenizer.json spells them."""
    norm = tj.get("normalizer") or {}
    parts = norm.get("normalizers", [norm]) if norm.get("type") == "Sequence" else [norm]
    charsmap = b""
    folds = False
    for p in parts:
        if p.get("type") == "Precompiled" and p.get("precompiled_charsmap"):
            charsmap = base64.b64decode(p["precompiled_charsmap"])
        if p.get("type") == "Replace" and " {2,}" in json.dumps(p.get("pattern", {})):
            folds = True
    pre = tj.get("pre_tokenizer") or {}
    pres = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    prefix = any(
        p.get("type") == "Metaspace"
        and (p.get("add_prefix_space") or p.get("prepend_scheme") in ("always", "first"))
        for p in pres
    )
    return {"add_dummy_prefix": prefix, "remove_extra_whitespaces": folds, "charsmap": charsmap}


def add_t5_vocab(w: GGUFWriter, folder: Path, vocab_size: int | None) -> None:
    """Write a Unigram vocabulary as llama.cpp's "t5" tokenizer model (BPE SentencePiece
    models, such as Pile-T5's, as its "llama" model)."""
    spm = next(
        (p for p in (folder / "tokenizer.model", folder / "spiece.model") if p.is_file()), None
    )
    if spm is not None:
        settings = read_spm_settings(spm)
        if settings["model_type"] == _BPE:
            add_spm_vocab(w, folder, vocab_size)  # reads tokenizer.model, as llama.cpp does
            return
        if settings["model_type"] != _UNIGRAM:
            raise ConvertError(f"{spm}: SentencePiece model type {settings['model_type']}")
        tokens, scores, types = spm_pieces(spm, vocab_size)
        prefix, folds = settings["add_dummy_prefix"], settings["remove_extra_whitespaces"]
        charsmap = settings["precompiled_charsmap"]
    elif (folder / "tokenizer.json").is_file():
        tj = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        if (tj.get("model") or {}).get("type") != "Unigram":
            raise ConvertError(f"{folder}: tokenizer.json is not a Unigram (T5) tokenizer")
        tokens, scores, types = _json_unigram(tj, vocab_size)
        s = _json_settings(tj)
        prefix, folds, charsmap = (
            s["add_dummy_prefix"],
            s["remove_extra_whitespaces"],
            s["charsmap"],
        )
    else:
        raise ConvertError(
            f"{folder}: no tokenizer (spiece.model, tokenizer.model, tokenizer.json)"
        )
    overlay_added_tokens(folder, tokens, scores, types, keep_control=True, unescape_spaces=False)
    w.add_tokenizer_model("t5")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_add_space_prefix(prefix)
    w.add_remove_extra_whitespaces(folds)
    if charsmap:
        w.add_precompiled_charsmap(charsmap)
    SpecialVocab(folder, n_vocab=len(tokens)).add_to_gguf(w, quiet=True)


class T5Converter(ArchConverter):
    hf_architectures = (
        "T5ForConditionalGeneration",
        "T5WithLMHeadModel",
        "MT5ForConditionalGeneration",
    )
    arch = MODEL_ARCH.T5
    required = (T.TOKEN_EMBD, T.OUTPUT, T.ENC_OUTPUT_NORM, T.DEC_OUTPUT_NORM)

    def __init__(self, ckpt: Checkpoint) -> None:
        super().__init__(ckpt)
        self.n_dec_layers = int(self.hp.get("num_decoder_layers") or self.n_layers)
        self.name_map = get_tensor_name_map(self.arch, max(self.n_layers, self.n_dec_layers))
        names = set(ckpt.names())
        # checkpoints store the shared embedding under any of three names, some under several:
        # the first present is the one (llama.cpp's rule)
        self.embedding = next((n for n in _EMBEDDINGS if n in names), None)
        self.has_head = "lm_head.weight" in names
        # transformers 5 writes scale_decoder_outputs; older configs mean it by tied embeddings
        scale = self.hp.get("scale_decoder_outputs")
        if scale is None:
            scale = self.hp.get("tie_word_embeddings", True) is not False
        self.head_scale = float(self.hp["d_model"]) ** -0.5 if scale else 1.0

    def set_params(self, w: GGUFWriter) -> None:
        hp = self.hp
        w.add_context_length(hp.get("n_positions") or 512)
        w.add_embedding_length(hp["d_model"])
        w.add_feed_forward_length(hp["d_ff"])
        w.add_block_count(self.n_layers)
        if hp.get("num_decoder_layers") is not None:
            w.add_decoder_block_count(hp["num_decoder_layers"])
        w.add_head_count(hp["num_heads"])
        w.add_key_length(hp["d_kv"])
        w.add_value_length(hp["d_kv"])
        w.add_layer_norm_eps(hp["layer_norm_epsilon"])
        w.add_relative_attn_buckets_count(hp["relative_attention_num_buckets"])
        w.add_layer_norm_rms_eps(hp["layer_norm_epsilon"])
        w.add_decoder_start_token_id(hp.get("decoder_start_token_id") or 0)
        if (dist := hp.get("relative_attention_max_distance", 128)) != 128:
            raise ConvertError(f"relative_attention_max_distance {dist}: GGUF t5 assumes 128")
        act = str(hp.get("feed_forward_proj", "relu"))
        if act not in ("relu", "gated-gelu", "gated-gelu_new"):
            raise ConvertError(f"feed_forward_proj {act!r}: GGUF t5 has relu and gated-gelu")

    def set_vocab(self, w: GGUFWriter) -> None:
        add_t5_vocab(w, self.ckpt.folder, self.hp.get("vocab_size"))

    def modify(
        self, name: str, t: torch.Tensor, bid: int | None
    ) -> Iterator[tuple[str, torch.Tensor]]:
        if name in _EMBEDDINGS:
            if name != self.embedding:
                return  # a copy of the shared embedding
            yield self.gguf_name(T.TOKEN_EMBD), t
            if not self.has_head:
                yield self.gguf_name(T.OUTPUT), t * self.head_scale
            return
        if name == "lm_head.weight":
            yield self.gguf_name(T.OUTPUT), t * self.head_scale
            return
        yield self.map_name(name), t

    def check_complete(self, names: set[str]) -> None:
        want = [self.gguf_name(t) for t in self.required]
        want += [self.gguf_name(t, i) for i in range(self.n_layers) for t in _ENC]
        want += [self.gguf_name(t, i) for i in range(self.n_dec_layers) for t in _DEC]
        want += [self.gguf_name(T.ENC_ATTN_REL_B, 0), self.gguf_name(T.DEC_ATTN_REL_B, 0)]
        missing = [n for n in want if n not in names]
        if missing:
            raise ConvertError(
                f"{self.ckpt.folder.name}: checkpoint lacks tensors for " + ", ".join(missing)
            )
