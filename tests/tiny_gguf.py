"""Write tiny GGUF models with random weights, for tests that need a whole model fast.

A byte-level BPE vocabulary (the 256 GPT-2 byte characters plus three control tokens and a
few merges) lets the model tokenize any text; weights are small random matrices stored as
F32 or a quantized type.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter
from gguf.quants import quantize

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld"]
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
    "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% endif %}"
)


def byte_chars() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values, in byte order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, n = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + n)
            n += 1
    return [chars[b] for b in range(256)]


def vocab(extra_specials: Sequence[str] = ()) -> list[str]:
    """SPECIALS, the byte characters, the merges, then `extra_specials` (ids after all the
    others, so the usual ids stay put)."""
    merged = [m.replace(" ", "") for m in MERGES]
    return SPECIALS + byte_chars() + merged + list(extra_specials)


def write_tiny(
    path: Path,
    arch: str = "llama",
    qtype: GGMLQuantizationType = GGMLQuantizationType.F32,
    n_layers: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    n_head_kv: int = 2,
    n_ff: int = 128,
    context: int = 128,
    sliding_window: int | None = None,
    seed: int = 0,
    chat_template: str | None = CHATML,
    tied: bool = False,
    raw_types: dict[str, GGMLQuantizationType] | None = None,
    extra_specials: Sequence[str] = (),
    qkv_bias: bool = False,
) -> Path:
    """Write a random-weight model of `arch` ("llama" or "gemma3"; "qwen2" with qkv_bias) to
    `path`.

    raw_types: tensors to store as zero bytes of another ggml type (for error tests).
    extra_specials: more control tokens (FIM markers...), appended to the vocabulary.
    qkv_bias: q/k/v projection biases (qwen2 has them; any arch may be given them)."""
    rng = np.random.default_rng(seed)
    toks = vocab(extra_specials)
    n_vocab = len(toks)
    head_dim = n_embd // n_head
    w = GGUFWriter(str(path), arch)
    w.add_name(f"tiny-{arch}")
    w.add_uint32(f"{arch}.block_count", n_layers)
    w.add_uint32(f"{arch}.context_length", context)
    w.add_uint32(f"{arch}.embedding_length", n_embd)
    w.add_uint32(f"{arch}.feed_forward_length", n_ff)
    w.add_uint32(f"{arch}.attention.head_count", n_head)
    w.add_uint32(f"{arch}.attention.head_count_kv", n_head_kv)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_float32(f"{arch}.rope.freq_base", 10000.0)
    if arch == "gemma3":
        w.add_uint32(f"{arch}.attention.key_length", head_dim)
        w.add_uint32(f"{arch}.attention.value_length", head_dim)
        w.add_uint32(f"{arch}.attention.sliding_window", sliding_window or 4)
    elif sliding_window:
        w.add_uint32(f"{arch}.attention.sliding_window", sliding_window)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(toks)
    n_plain = n_vocab - len(SPECIALS) - len(extra_specials)
    w.add_token_types([3] * len(SPECIALS) + [1] * n_plain + [3] * len(extra_specials))
    w.add_token_merges(MERGES)
    w.add_bos_token_id(0)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    if chat_template:
        w.add_chat_template(chat_template)

    def mat(name: str, rows: int, cols: int, scale: float = 0.15) -> None:
        a = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)
        if raw_types and name in raw_types:
            block, size = GGML_QUANT_SIZES[raw_types[name]]
            raw = np.zeros((rows, cols // block * size), dtype=np.uint8)
            w.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=raw_types[name])
        elif qtype == GGMLQuantizationType.F32:
            w.add_tensor(name, a)
        else:
            w.add_tensor(name, quantize(a, qtype), raw_dtype=qtype)

    def vec(name: str, n: int) -> None:
        w.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32))

    mat("token_embd.weight", n_vocab, n_embd, 0.5)
    if not tied:
        mat("output.weight", n_vocab, n_embd)
    vec("output_norm.weight", n_embd)
    for i in range(n_layers):
        p = f"blk.{i}."
        vec(p + "attn_norm.weight", n_embd)
        mat(p + "attn_q.weight", n_head * head_dim, n_embd)
        mat(p + "attn_k.weight", n_head_kv * head_dim, n_embd)
        mat(p + "attn_v.weight", n_head_kv * head_dim, n_embd)
        if qkv_bias:
            for name, n in (("q", n_head), ("k", n_head_kv), ("v", n_head_kv)):
                w.add_tensor(
                    p + f"attn_{name}.bias",
                    (0.1 * rng.standard_normal(n * head_dim)).astype(np.float32),
                )
        mat(p + "attn_output.weight", n_embd, n_head * head_dim)
        vec(p + "ffn_norm.weight", n_embd)
        mat(p + "ffn_gate.weight", n_ff, n_embd)
        mat(p + "ffn_up.weight", n_ff, n_embd)
        mat(p + "ffn_down.weight", n_embd, n_ff)
        if arch == "gemma3":
            vec(p + "attn_q_norm.weight", head_dim)
            vec(p + "attn_k_norm.weight", head_dim)
            vec(p + "post_attention_norm.weight", n_embd)
            vec(p + "post_ffw_norm.weight", n_embd)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
