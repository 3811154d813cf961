#!/usr/bin/env python3
"""Write a Mistral-7B-shaped GGUF with random Q4_K_M weights, for speed and memory benchmarks.

    python bench/make_synthetic.py OUT.gguf [--layers 32] [--rope-base 10000] [--seed 0]

The file has Mistral 7B v0.1's shapes (llama architecture: hidden 4096, 32 heads / 8 KV heads
of 128, FFN 14336, vocab 32000, context 32768, rope base 10000, sliding window 4096) and the
tensor types llama.cpp's quantizer gives a Q4_K_M file (src/llama-quant.cpp,
`llama_tensor_get_type_impl`): everything Q4_K except output.weight (Q6_K) and attn_v /
ffn_down in the "use_more_bits" layers (the first and last eighth of the layers and every third
in between), which are Q6_K; norms stay F32. About 4.1 GiB at 32 layers.

Nothing is quantized: each tensor's blocks are random bytes, then the fp16 super-block scales
(Q4_K d and dmin, Q6_K d) are overwritten with small values chosen so the dequantized weights are
roughly zero-mean with std ~ 0.5/sqrt(fan_in), which keeps activations O(1) and the logits
finite. The 6-bit sub-block scales and the quants stay random: every value is valid. Tensors are
generated and written one at a time, so memory stays at the size of the largest tensor (~110
MB). The vocabulary is SentencePiece-style ("llama": <unk>, <s>, </s>, 256 byte tokens and filler
pieces with scores), so corral and llama.cpp both load and tokenize with it. The output is
noise; only speed and memory mean anything.
"""

from __future__ import annotations

import argparse
import itertools
import string
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf import TokenType

ARCH = "llama"
QK_K = 256  # weights per K-quant super-block
BLOCK_BYTES = {QT.Q4_K: 144, QT.Q6_K: 210}
FILE_TYPE_Q4_K_M = 15  # llama_ftype LLAMA_FTYPE_MOSTLY_Q4_K_M


@dataclass(frozen=True)
class Shapes:
    """The hyper-parameters written to the file (defaults: Mistral 7B v0.1)."""

    n_layers: int = 32
    n_embd: int = 4096
    n_head: int = 32
    n_head_kv: int = 8
    head_dim: int = 128
    n_ff: int = 14336
    n_vocab: int = 32000
    n_ctx: int = 32768
    rope_base: float = 10000.0
    sliding_window: int = 4096
    rms_eps: float = 1e-5
    dense: bool = False  # F16 matrices instead of the Q4_K_M mix (shapes not a multiple of 256)


# SmolLM2-135M's shapes (its hidden size 576 is no multiple of 256, so K-quants cannot hold
# it: this preset writes F16 matrices, for GPU runs where weights are dequantized anyway)
SMOLLM2 = dict(n_layers=30, n_embd=576, n_head=9, n_head_kv=3, head_dim=64, n_ff=1536,
               n_vocab=49152, n_ctx=8192, rope_base=100000.0, sliding_window=0, dense=True)  # fmt: skip


@dataclass(frozen=True)
class TensorSpec:
    """One tensor: GGUF name, numpy-order shape (rows, cols) or (n,), and GGML type."""

    name: str
    shape: tuple[int, ...]
    qtype: QT

    @property
    def nbytes(self) -> int:
        if self.qtype == QT.F32:
            return 4 * int(np.prod(self.shape))
        if self.qtype == QT.F16:
            return 2 * int(np.prod(self.shape))
        rows, cols = self.shape
        return rows * (cols // QK_K) * BLOCK_BYTES[self.qtype]


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp's Q4_K_M rule for layers whose attn_v and ffn_down get Q6_K."""
    return (
        i_layer < n_layers // 8
        or i_layer >= 7 * n_layers // 8
        or (i_layer - n_layers // 8) % 3 == 2
    )


def tensor_specs(s: Shapes) -> list[TensorSpec]:
    """Every tensor in file order, with its Q4_K_M type (or F16 for dense shapes)."""
    if s.dense:
        specs = tensor_specs(Shapes(**{**s.__dict__, "dense": False}))
        return [TensorSpec(t.name, t.shape, QT.F16 if t.qtype != QT.F32 else QT.F32) for t in specs]
    q_dim, kv_dim = s.n_head * s.head_dim, s.n_head_kv * s.head_dim
    specs = [TensorSpec("token_embd.weight", (s.n_vocab, s.n_embd), QT.Q4_K)]
    for i in range(s.n_layers):
        more = QT.Q6_K if use_more_bits(i, s.n_layers) else QT.Q4_K
        p = f"blk.{i}."
        specs += [
            TensorSpec(p + "attn_norm.weight", (s.n_embd,), QT.F32),
            TensorSpec(p + "attn_q.weight", (q_dim, s.n_embd), QT.Q4_K),
            TensorSpec(p + "attn_k.weight", (kv_dim, s.n_embd), QT.Q4_K),
            TensorSpec(p + "attn_v.weight", (kv_dim, s.n_embd), more),
            TensorSpec(p + "attn_output.weight", (s.n_embd, q_dim), QT.Q4_K),
            TensorSpec(p + "ffn_norm.weight", (s.n_embd,), QT.F32),
            TensorSpec(p + "ffn_gate.weight", (s.n_ff, s.n_embd), QT.Q4_K),
            TensorSpec(p + "ffn_up.weight", (s.n_ff, s.n_embd), QT.Q4_K),
            TensorSpec(p + "ffn_down.weight", (s.n_embd, s.n_ff), more),
        ]
    specs += [
        TensorSpec("output_norm.weight", (s.n_embd,), QT.F32),
        TensorSpec("output.weight", (s.n_vocab, s.n_embd), QT.Q6_K),
    ]
    return specs


# Dequantized std per unit of the fp16 super-block scale d, with random sub-scales and quants:
# Q4_K: w = d*sc*q - dmin*m, sc, m uniform 0..63, q uniform 0..15; with dmin = 7.5*d each
#   sub-block's mean d*7.5*(sc - m) is zero on average; std ~ 256*d.
# Q6_K: w = d*sc*(q - 32), sc uniform int8, q uniform 0..63; std ~ 1370*d.
STD_PER_D = {QT.Q4_K: 256.0, QT.Q6_K: 1370.0}


def random_tensor(spec: TensorSpec, rng: np.random.Generator) -> np.ndarray:
    """The tensor's bytes (uint8, shape (rows, row_bytes)) or float32 values for norms."""
    if spec.qtype == QT.F32:
        return (1.0 + 0.05 * rng.standard_normal(spec.shape)).astype(np.float32)
    rows, cols = spec.shape
    if spec.qtype == QT.F16:
        return (rng.standard_normal((rows, cols), dtype=np.float32) * (0.5 / np.sqrt(cols))).astype(
            np.float16
        )
    nb = rows * (cols // QK_K)
    bsize = BLOCK_BYTES[spec.qtype]
    blocks = rng.integers(0, 256, size=(nb, bsize), dtype=np.uint8)
    d = (0.5 / np.sqrt(cols)) / STD_PER_D[spec.qtype]
    scale = (d * rng.uniform(0.75, 1.25, size=nb)).astype(np.float16)
    if spec.qtype == QT.Q4_K:  # block_q4_K: d, dmin (fp16), scales[12], qs[128]
        fields = blocks[:, 0:4].view(np.float16)
        fields[:, 0] = scale
        fields[:, 1] = (7.5 * scale.astype(np.float32)).astype(np.float16)
    else:  # block_q6_K: ql[128], qh[64], scales[16] (int8), d (fp16)
        blocks[:, 208:210].view(np.float16)[:, 0] = scale
    return blocks.reshape(rows, -1)


def vocab(n: int) -> tuple[list[str], list[float], list[int]]:
    """A SentencePiece-style vocabulary of n pieces: texts, scores, token types."""
    tokens = ["<unk>", "<s>", "</s>"]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [TokenType.BYTE] * 256
    seen = set(tokens)

    def fillers() -> Iterator[str]:
        chars = string.ascii_lowercase + string.ascii_uppercase + string.digits
        yield "▁"
        yield from chars + string.punctuation
        yield from ("▁" + c for c in chars + string.punctuation)
        for k in (2, 3, 4):
            for combo in itertools.product(string.ascii_lowercase, repeat=k):
                piece = "".join(combo)
                yield "▁" + piece
                yield piece

    for piece in fillers():
        if len(tokens) == n:
            break
        if piece not in seen:
            seen.add(piece)
            tokens.append(piece)
            types.append(TokenType.NORMAL)
    # SentencePiece scores: log-probabilities, so the earlier (shorter) pieces rank higher;
    # special and byte pieces score 0 as in llama's tokenizer.model.
    scores = [0.0] * 259 + [-float(i) for i in range(len(tokens) - 259)]
    return tokens, scores, [int(t) for t in types]


def write(out: Path, s: Shapes, seed: int = 0, progress: bool = True) -> int:
    """Write the file; returns its size in bytes."""
    rng = np.random.default_rng(seed)
    specs = tensor_specs(s)
    w = gguf.GGUFWriter(out, ARCH)
    w.add_name(f"synthetic-mistral-7b-shape-{s.n_layers}l")
    w.add_description("random weights with Mistral 7B v0.1 shapes, Q4_K_M type mix")
    w.add_file_type(FILE_TYPE_Q4_K_M)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_context_length(s.n_ctx)
    w.add_embedding_length(s.n_embd)
    w.add_block_count(s.n_layers)
    w.add_feed_forward_length(s.n_ff)
    w.add_head_count(s.n_head)
    w.add_head_count_kv(s.n_head_kv)
    w.add_rope_dimension_count(s.head_dim)
    w.add_rope_freq_base(s.rope_base)
    w.add_layer_norm_rms_eps(s.rms_eps)
    w.add_vocab_size(s.n_vocab)
    if s.sliding_window:
        w.add_sliding_window(s.sliding_window)
    tokens, scores, types = vocab(s.n_vocab)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    for spec in specs:
        if spec.qtype in (QT.F32, QT.F16):
            dt = np.dtype(np.float32 if spec.qtype == QT.F32 else np.float16)
            w.add_tensor_info(spec.name, spec.shape, dt, spec.nbytes)
        else:
            rows, cols = spec.shape
            byte_shape = (rows, cols // QK_K * BLOCK_BYTES[spec.qtype])
            w.add_tensor_info(
                spec.name, byte_shape, np.dtype(np.uint8), spec.nbytes, raw_dtype=spec.qtype
            )
    # header, metadata and tensor infos first; then the data, one tensor in memory at a time
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    total = sum(sp.nbytes for sp in specs)
    done, t0 = 0, time.perf_counter()
    for spec in specs:
        w.write_tensor_data(random_tensor(spec, rng))
        done += spec.nbytes
        if progress and spec.name.endswith(("ffn_down.weight", "output.weight")):
            rate = done / 2**20 / max(time.perf_counter() - t0, 1e-9)
            print(f"\r{done / 2**30:6.2f} / {total / 2**30:.2f} GiB  {rate:5.0f} MiB/s",
                  end="", file=sys.stderr, flush=True)  # fmt: skip
    w.close()
    if progress:
        print(file=sys.stderr)
    return out.stat().st_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path, help="the .gguf file to write")
    ap.add_argument("--layers", type=int, default=32, help="blocks (32 = Mistral 7B)")
    ap.add_argument("--rope-base", type=float, default=10000.0,
                    help="rope.freq_base (Mistral v0.1: 10000; v0.2+: 1e6)")  # fmt: skip
    ap.add_argument("--sliding-window", type=int, default=4096, help="0: none")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--shape", choices=["mistral7b", "smollm2"], default="mistral7b")
    a = ap.parse_args()
    if a.shape == "smollm2":
        s = Shapes(**SMOLLM2)  # type: ignore[arg-type]
    else:
        s = Shapes(n_layers=a.layers, rope_base=a.rope_base, sliding_window=a.sliding_window)
    t0 = time.perf_counter()
    size = write(a.out, s, seed=a.seed, progress=not a.quiet)
    print(f"{a.out}: {size / 2**30:.3f} GiB, {s.n_layers} layers, "
          f"{time.perf_counter() - t0:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
