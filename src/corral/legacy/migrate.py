"""`corral migrate`: a legacy GGML/GGMF/GGJT llama file -> a GGUF llama model.

Hyper-parameters become llama.* keys (n_ff and n_head_kv read off the tensor shapes, so
GQA files work too); the vocabulary becomes an SPM (`llama`) vocabulary with its scores,
as llama.cpp's convert_llama_ggml_to_gguf.py writes it: ids 0-2 are <unk>, <s>, </s>,
single raw bytes at ids 3-258 become <0xXX> byte tokens, spaces become U+2581. Unversioned
GGML files carry no scores; their tokens are ranked by id instead (SentencePiece BPE
vocabularies are ordered by merge priority). Tensors are renamed to GGUF's names and
converted block by block (`blocks.py`). The output appears only once complete.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGUFValueType, GGUFWriter, LlamaFileType
from gguf import GGMLQuantizationType as Q

from corral.errors import CorralError, GGUFError
from corral.legacy.blocks import convert, target_type, to_float32
from corral.legacy.format import LegacyModel
from corral.legacy.parts import read_legacy
from corral.quantize.output import atomic_output

_TOP = {
    "tok_embeddings.weight": "token_embd.weight",
    "norm.weight": "output_norm.weight",
    "output.weight": "output.weight",
}
_LAYER = {
    "attention_norm.weight": "attn_norm.weight",
    "attention.wq.weight": "attn_q.weight",
    "attention.wk.weight": "attn_k.weight",
    "attention.wv.weight": "attn_v.weight",
    "attention.wo.weight": "attn_output.weight",
    "ffn_norm.weight": "ffn_norm.weight",
    "feed_forward.w1.weight": "ffn_gate.weight",
    "feed_forward.w2.weight": "ffn_down.weight",
    "feed_forward.w3.weight": "ffn_up.weight",
}
_LAYER_RE = re.compile(r"layers\.(\d+)\.(.+)")
# SentencePiece token types as GGUF stores them
NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6
SPACE = "\u2581".encode()


class OutType(Enum):
    """How `migrate` stores the weights."""

    AUTO = "auto"  # keep each tensor's quantization (Q4_2 -> F16, Q4_3 -> F32)
    F16 = "f16"
    F32 = "f32"


@dataclass
class MigrateReport:
    container: str
    ftype: int
    n_tensors: int
    n_vocab: int
    types: dict[str, int]
    file_bytes: int


def gguf_name(old: str, n_layer: int) -> str:
    """A legacy llama tensor name -> its GGUF name; CorralError for names llama lacks."""
    if old in _TOP:
        return _TOP[old]
    m = _LAYER_RE.fullmatch(old)
    if m and m.group(2) in _LAYER and int(m.group(1)) < n_layer:
        return f"blk.{m.group(1)}.{_LAYER[m.group(2)]}"
    raise CorralError(
        f"tensor '{old}' is not part of a llama model: only llama-architecture GGML files "
        "(llama.cpp, alpaca.cpp, gpt4all-lora) can be migrated"
    )


def spm_vocab(model: LegacyModel) -> tuple[list[bytes], list[float], list[int]]:
    """The file's vocabulary as GGUF SPM tokens, scores and token types."""
    tokens, scores, types = [], [], []
    ranked = not model.container.has_scores
    for i, (text, score) in enumerate(model.vocab):
        kind = NORMAL
        if i == 0:
            text, kind = b"<unk>", UNKNOWN
        elif i in (1, 2):
            text, kind = (b"<s>", b"</s>")[i - 1], CONTROL
        elif not text:
            kind = CONTROL
        elif 3 <= i <= 258 and len(text) == 1:
            text, kind = f"<0x{text[0]:02X}>".encode(), BYTE
        else:
            text = text.replace(b" ", SPACE)
        tokens.append(text)
        scores.append(float(-i) if ranked and kind == NORMAL else score)
        types.append(kind)
    return tokens, scores, types


def _file_type(model: LegacyModel, out: OutType) -> int:
    if out is OutType.F16:
        return LlamaFileType.MOSTLY_F16
    if out is OutType.F32:
        return LlamaFileType.ALL_F32
    # the old ftype numbers are today's, except the removed 4-bit variants
    return {
        4: LlamaFileType.MOSTLY_Q4_1,
        5: LlamaFileType.MOSTLY_F16,
        6: LlamaFileType.ALL_F32,
    }.get(model.hparams.ftype, model.hparams.ftype)


def migrate(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    outtype: OutType = OutType.AUTO,
    context_length: int = 2048,
    rms_eps: float = 1e-6,
    name: str | None = None,
) -> MigrateReport:
    """Write the legacy llama model `src` as GGUF `dst` (replaced only on success); a
    model split over `src`, `src.1`, ... is read from all its parts."""
    src, dst = Path(src), Path(dst)
    model = read_legacy(src)
    hp = model.hparams
    era = model.container.block_era
    renamed = {gguf_name(old, hp.n_layer): t for old, t in model.tensors.items()}
    need = ["token_embd.weight", "output_norm.weight", "output.weight"] + [
        f"blk.{i}.{v}" for i in range(hp.n_layer) for v in _LAYER.values()
    ]
    missing = [n for n in need if n not in renamed]
    if missing:
        shown = ", ".join(missing[:4]) + (
            f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        )
        raise GGUFError(f"{src.name}: incomplete llama model: missing tensors {shown}")
    head_dim = hp.n_embd // hp.n_head
    embd = renamed["token_embd.weight"]
    if embd.ne != (hp.n_embd, hp.n_vocab):
        raise GGUFError(
            f"{src.name}: tok_embeddings has shape {embd.ne}, the header says "
            f"n_embd={hp.n_embd}, n_vocab={hp.n_vocab}"
        )
    n_ff = renamed["blk.0.ffn_gate.weight"].ne[1]
    n_head_kv = renamed["blk.0.attn_k.weight"].ne[1] // head_dim
    tokens, scores, types = spm_vocab(model)
    counts: dict[str, int] = {}
    with atomic_output(dst) as tmp:
        w = GGUFWriter(tmp, "llama")
        w.add_name(name or src.stem)
        w.add_description(f"migrated by corral from a legacy {model.container.value} file")
        w.add_file_type(int(_file_type(model, outtype)))
        w.add_quantization_version(2)
        w.add_context_length(context_length)
        w.add_embedding_length(hp.n_embd)
        w.add_block_count(hp.n_layer)
        w.add_feed_forward_length(n_ff)
        w.add_rope_dimension_count(hp.n_rot or head_dim)
        w.add_head_count(hp.n_head)
        w.add_head_count_kv(n_head_kv)
        w.add_layer_norm_rms_eps(rms_eps)
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_key_value("tokenizer.ggml.tokens", tokens, GGUFValueType.ARRAY, GGUFValueType.STRING)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_unk_token_id(0)
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_add_bos_token(True)
        w.add_add_eos_token(False)
        plan = []
        for new_name, t in renamed.items():
            qtype = target_type(t)
            if outtype is not OutType.AUTO and (len(t.shape) > 1 or qtype != Q.F32):
                qtype = Q.F16 if outtype is OutType.F16 else Q.F32
            block, size = GGML_QUANT_SIZES[qtype]
            nbytes = int(np.prod(t.ne, dtype=np.int64)) // block * size
            # element shape + raw_dtype (a non-uint8 dtype keeps the writer from reading
            # the shape as bytes)
            w.add_tensor_info(new_name, t.shape, np.dtype(np.float32), nbytes, raw_dtype=qtype)
            plan.append((t, qtype))
            counts[qtype.name] = counts.get(qtype.name, 0) + 1
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for t, qtype in plan:
            if qtype == target_type(t):
                w.write_tensor_data(convert(t, era))
            else:
                values = to_float32(t, era)
                w.write_tensor_data(values.astype(np.float16 if qtype == Q.F16 else np.float32))
        w.close()
    return MigrateReport(
        model.container.value,
        int(hp.ftype),
        len(plan),
        hp.n_vocab,
        dict(sorted(counts.items())),
        dst.stat().st_size,
    )
