"""Write tiny llama models as legacy GGML/GGMF/GGJT files, from the documented layouts, and
the same weights directly as GGUF (today's layouts), for the migration tests.

Quantized weights are made from random codes and scales, then packed twice: once in the
old block layout of the chosen format version, once in today's layout. Scales are drawn
as f16 values, so a migration that keeps the codes and rounds scales to f16 must reproduce
the GGUF file's weights exactly.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType, GGUFWriter

from corral.quantize.kquants import K_QUANTIZERS

MAGIC = {"ggml": 0x67676D6C, "ggmf": 0x67676D66, "ggjt": 0x67676A74}
# the era's ggml type ids
OLD_ID = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q4_2": 4, "Q4_3": 5, "Q5_0": 6,
          "Q5_1": 7, "Q8_0": 8, "Q4_K": 12, "Q6_K": 14}  # fmt: skip
PIECES = ["▁hello", "▁world", "he", "ll", "o", "▁w", "or", "ld", "hello", "world", "▁",
          "▁the", "▁fox", "▁quick"]  # fmt: skip
EPS = 1e-6
CTX = 2048


def vocab() -> list[tuple[bytes, bytes, int, float]]:
    """(old file bytes, GGUF token, GGUF type, score) for every token: <unk>, <s>, </s>,
    the 256 bytes, then PIECES with decreasing scores."""
    out = [(" \u2047 ".encode(), b"<unk>", 2, 0.0), (b"", b"<s>", 3, 0.0), (b"", b"</s>", 3, 0.0)]
    out += [(bytes([b]), f"<0x{b:02X}>".encode(), 6, 0.0) for b in range(256)]
    for i, p in enumerate(PIECES):
        out.append((p.replace("▁", " ").encode(), p.encode(), 1, -float(i + 1)))
    return out


def _interleave(codes: np.ndarray) -> np.ndarray:
    return (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)


def _split(codes: np.ndarray) -> np.ndarray:
    k = codes.shape[1] // 2
    return (codes[:, :k] | (codes[:, k:] << 4)).astype(np.uint8)


def _f32(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32).reshape(-1, 1).view(np.uint8)


def _f16(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float16).reshape(-1, 1).view(np.uint8)


def _qh(codes: np.ndarray) -> np.ndarray:
    bits = ((codes >> 4) & 1).astype(np.uint64) << np.arange(32, dtype=np.uint64)
    return bits.sum(axis=1).astype(np.uint32).reshape(-1, 1).view(np.uint8)


@dataclass
class Weight:
    """One matrix: its old-layout bytes, its GGUF form (bytes + type) and float values."""

    old_type: str
    old: np.ndarray
    new_type: Q
    new: np.ndarray
    values: np.ndarray  # float32 [rows, cols], what both files decode to


def make_weight(rng: np.random.Generator, rows: int, cols: int, kind: str, era: int) -> Weight:
    """Random weights of `kind` packed for block era `era` (1: GGML..GGJTv1, 2, 3)."""
    if kind == "F32":
        v = (rng.standard_normal((rows, cols)) * 0.1).astype(np.float32)
        return Weight(kind, v.view(np.uint8), Q.F32, v, v)
    if kind == "F16":
        v = (rng.standard_normal((rows, cols)) * 0.1).astype(np.float16)
        return Weight(kind, v.view(np.uint8), Q.F16, v, v.astype(np.float32))
    if kind in ("Q4_K", "Q6_K"):
        qt = Q[kind]
        v = (rng.standard_normal((rows, cols)) * 0.1).astype(np.float32)
        b = K_QUANTIZERS[qt](v.reshape(-1, 256)).reshape(rows, -1)
        return Weight(kind, b, qt, b, v)
    qk = 16 if kind in ("Q4_2", "Q4_3") else 32
    n = rows * cols // qk
    d = rng.uniform(0.004, 0.02, (n, 1)).astype(np.float16).astype(np.float32)
    m = -rng.uniform(0.01, 0.1, (n, 1)).astype(np.float16).astype(np.float32)
    bits = {"Q8_0": 8, "Q5_0": 5, "Q5_1": 5}.get(kind, 4)
    codes = rng.integers(0, 1 << bits, (n, qk), dtype=np.uint8)
    if kind == "Q8_0":
        q8 = (codes.astype(np.int16) - 128).astype(np.int8)
        values = q8.astype(np.float32) * d
        old = np.concatenate([_f32(d) if era < 3 else _f16(d), q8.view(np.uint8)], axis=1)
        new = np.concatenate([_f16(d), q8.view(np.uint8)], axis=1)
    elif kind in ("Q4_0", "Q4_1"):
        off = kind == "Q4_1"
        values = codes * d + m if off else (codes.astype(np.float32) - 8) * d
        packed = _interleave(codes) if era == 1 else _split(codes)
        scale = [d, m] if off else [d]
        old_head = [(_f32 if era < 3 else _f16)(s) for s in scale]
        old = np.concatenate([*old_head, packed], axis=1)
        new = np.concatenate([*[_f16(s) for s in scale], _split(codes)], axis=1)
    elif kind in ("Q5_0", "Q5_1"):
        off = kind == "Q5_1"
        values = codes * d + m if off else (codes.astype(np.float32) - 16) * d
        head = [_f16(d), _f16(m)] if off else [_f16(d)]
        low = codes & 0x0F
        old = np.concatenate([*head, _qh(codes), _interleave(low) if era == 1 else _split(low)], 1)
        new = np.concatenate([*head, _qh(codes), _split(low)], axis=1)
    else:  # Q4_2, Q4_3: era 1 only, migrated to F16 / F32 values
        off = kind == "Q4_3"
        values = codes * d + m if off else (codes.astype(np.float32) - 8) * d
        head = [_f16(d), _f16(m)] if off else [_f16(d)]
        old = np.concatenate([*head, _interleave(codes)], axis=1)
        values = values.astype(np.float32).reshape(rows, cols)
        if off:
            return Weight(kind, old.reshape(rows, -1), Q.F32, values, values)
        return Weight(kind, old.reshape(rows, -1), Q.F16, values.astype(np.float16), values)
    return Weight(kind, old.reshape(rows, -1), Q[kind], new.reshape(rows, -1),
                  values.astype(np.float32).reshape(rows, cols))  # fmt: skip


@dataclass
class TinyLlama:
    n_embd: int = 64
    n_head: int = 4
    n_head_kv: int = 4
    n_layer: int = 2
    n_ff: int = 128
    kind: str = "F32"
    seed: int = 0

    def tensors(self, era: int) -> list[tuple[str, str, Weight]]:
        """(old name, GGUF name, weight) in the order old llama.cpp files store them."""
        rng = np.random.default_rng(self.seed)
        e, hd = self.n_embd, self.n_embd // self.n_head
        nv = len(vocab())

        def vec(n: int) -> Weight:
            v = (1 + 0.1 * rng.standard_normal((1, n))).astype(np.float32)
            return Weight("F32", v.view(np.uint8), Q.F32, v, v)

        def mat(r: int, c: int) -> Weight:
            return make_weight(rng, r, c, self.kind, era)

        out = [("tok_embeddings.weight", "token_embd.weight", mat(nv, e)),
               ("norm.weight", "output_norm.weight", vec(e)),
               ("output.weight", "output.weight", mat(nv, e))]  # fmt: skip
        for i in range(self.n_layer):
            o, g = f"layers.{i}.", f"blk.{i}."
            out += [
                (o + "attention.wq.weight", g + "attn_q.weight", mat(e, e)),
                (o + "attention.wk.weight", g + "attn_k.weight", mat(self.n_head_kv * hd, e)),
                (o + "attention.wv.weight", g + "attn_v.weight", mat(self.n_head_kv * hd, e)),
                (o + "attention.wo.weight", g + "attn_output.weight", mat(e, e)),
                (o + "feed_forward.w1.weight", g + "ffn_gate.weight", mat(self.n_ff, e)),
                (o + "feed_forward.w2.weight", g + "ffn_down.weight", mat(e, self.n_ff)),
                (o + "feed_forward.w3.weight", g + "ffn_up.weight", mat(self.n_ff, e)),
                (o + "attention_norm.weight", g + "attn_norm.weight", vec(e)),
                (o + "ffn_norm.weight", g + "ffn_norm.weight", vec(e)),
            ]
        return out


def era_of(magic: str, version: int) -> int:
    return {("ggjt", 2): 2, ("ggjt", 3): 3}.get((magic, version), 1)


FTYPE = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q4_2": 5, "Q4_3": 6, "Q8_0": 7,
         "Q5_0": 8, "Q5_1": 9, "Q4_K": 15, "Q6_K": 18}  # fmt: skip


def write_legacy(
    path: Path, model: TinyLlama, magic: str, version: int, skip: set[str] | None = None
) -> Path:
    """The model as a legacy file: header, vocabulary, then each tensor's record (but the
    ones named in `skip`)."""
    era = era_of(magic, version)
    buf = bytearray(struct.pack("<I", MAGIC[magic]))
    if magic != "ggml":
        buf += struct.pack("<I", version)
    voc = vocab()
    buf += struct.pack("<7I", len(voc), model.n_embd, 256, model.n_head, model.n_layer,
                       model.n_embd // model.n_head, FTYPE[model.kind])  # fmt: skip
    for old, _tok, _ty, score in voc:
        buf += struct.pack("<I", len(old)) + old
        if magic != "ggml":
            buf += struct.pack("<f", score)
    for old_name, _new, w in model.tensors(era):
        if skip and old_name in skip:
            continue
        rows, cols = w.values.shape
        ne = (cols,) if rows == 1 and "norm" in old_name else (cols, rows)
        name = old_name.encode()
        buf += struct.pack("<3I", len(ne), len(name), OLD_ID[w.old_type])
        buf += struct.pack(f"<{len(ne)}I", *ne) + name
        if magic == "ggjt":
            buf += b"\0" * (-len(buf) & 31)
        buf += w.old.tobytes()
    path.write_bytes(bytes(buf))
    return path


def write_gguf(path: Path, model: TinyLlama, era: int, ranked: bool = False) -> Path:
    """The same weights and vocabulary written directly as a GGUF llama model."""
    w = GGUFWriter(str(path), "llama")
    w.add_context_length(CTX)
    w.add_embedding_length(model.n_embd)
    w.add_block_count(model.n_layer)
    w.add_feed_forward_length(model.n_ff)
    w.add_rope_dimension_count(model.n_embd // model.n_head)
    w.add_head_count(model.n_head)
    w.add_head_count_kv(model.n_head_kv)
    w.add_layer_norm_rms_eps(EPS)
    w.add_tokenizer_model("llama")
    voc = vocab()
    w.add_key_value("tokenizer.ggml.tokens", [t for _, t, _, _ in voc], GGUFValueType.ARRAY,
                    GGUFValueType.STRING)  # fmt: skip
    scores = [
        (-float(i) if ty == 1 else 0.0) if ranked else s for i, (_, _, ty, s) in enumerate(voc)
    ]
    w.add_token_scores(scores)
    w.add_token_types([ty for _, _, ty, _ in voc])
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    for _old, new, wt in model.tensors(era):
        data = wt.new
        if "norm" in new:
            data = data.reshape(-1)
        if wt.new_type in (Q.F32, Q.F16):
            w.add_tensor(new, data)
        else:
            w.add_tensor(new, data, raw_dtype=wt.new_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
