"""Write tiny random rwkv6 / rwkv7 GGUF files laid out as llama.cpp loads them.

Tensor names and shapes follow gguf-py's MODEL_TENSORS[RWKV6 / RWKV7] and llama.cpp's
create_tensor calls; numpy shapes here are ggml's `ne` reversed. The vocabulary is a small
RWKV "world" one (tokenizer.ggml.model = "rwkv"): "<s>", the 256 single bytes, and a few
multi-byte tokens, every text escaped the way convert_hf_to_gguf writes them
(`repr(bytes)[2:-1]`). Weights come from a seeded numpy Generator, so a file is the same on
every run; `write_tiny_rwkv` returns a digest of its contents that the reference outputs
record (tests/models/fixtures/rwkv/).

head_size is 64: llama.cpp's SIMD WKV kernels step over a head 64 floats at a time.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from gguf import GGUFWriter, TokenType

EXTRA_TOKENS = [
    b"\n\n", b"the", b" the", b"hello", b" world", b"wor", b"ld", b"\xc3\xa9",
    "h\u00e9llo".encode(), b"'s", b"\\n", b"  ", b"ab", b"abc", b"\t\t",
]  # fmt: skip

N_EMBD, HEAD_SIZE, N_FF = 128, 64, 256


def rwkv_vocab() -> tuple[list[str], list[int]]:
    """Escaped token texts and token types: <s> (control), 256 bytes, EXTRA_TOKENS."""
    raw = [bytes([b]) for b in range(256)] + EXTRA_TOKENS
    texts = ["<s>"] + [repr(t)[2:-1] for t in raw]
    types = [int(TokenType.CONTROL)] + [int(TokenType.NORMAL)] * len(raw)
    assert len(set(texts)) == len(texts)
    return texts, types


class _Weights:
    """Seeded random tensors, recorded in order for the file and the digest."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.tensors: list[tuple[str, np.ndarray]] = []

    def add(self, name: str, a: np.ndarray) -> None:
        self.tensors.append((name, np.ascontiguousarray(a, dtype=np.float32)))

    def mat(self, name: str, *shape: int, scale: float = 1.0) -> None:
        """A matrix scaled so that a unit-variance input gives ~`scale` outputs."""
        self.add(name, self.rng.standard_normal(shape) * scale / np.sqrt(shape[-1]))

    def uniform(self, name: str, lo: float, hi: float, *shape: int) -> None:
        self.add(name, self.rng.uniform(lo, hi, shape))

    def norm(self, prefix: str, n: int) -> None:
        self.add(prefix + ".weight", 1.0 + 0.1 * self.rng.standard_normal(n))
        self.add(prefix + ".bias", 0.1 * self.rng.standard_normal(n))

    def digest(self) -> str:
        h = hashlib.sha256()
        for name, a in self.tensors:
            h.update(name.encode() + str(a.shape).encode() + a.tobytes())
        return h.hexdigest()


def _common(w: _Weights, n_vocab: int) -> None:
    w.mat("token_embd.weight", n_vocab, N_EMBD, scale=np.sqrt(N_EMBD))
    w.norm("token_embd_norm", N_EMBD)
    w.norm("output_norm", N_EMBD)
    w.mat("output.weight", n_vocab, N_EMBD, scale=3.0)


def _rwkv6_layer(w: _Weights, p: str, mix: int, decay: int) -> None:
    e, h = N_EMBD, N_EMBD // HEAD_SIZE
    w.norm(p + "attn_norm", e)
    w.norm(p + "attn_norm_2", e)
    w.mat(p + "time_mix_w1.weight", 5 * mix, e)
    w.mat(p + "time_mix_w2.weight", 5, e, mix, scale=0.5)
    w.uniform(p + "time_mix_lerp_x.weight", 0, 1, 1, 1, e)
    w.uniform(p + "time_mix_lerp_fused.weight", 0, 1, 5, 1, 1, e)
    w.add(p + "time_mix_first.weight", 0.5 * w.rng.standard_normal((h, HEAD_SIZE)))
    w.uniform(p + "time_mix_decay.weight", -3.0, 0.5, e)
    w.mat(p + "time_mix_decay_w1.weight", decay, e)
    w.mat(p + "time_mix_decay_w2.weight", e, decay, scale=0.5)
    for name in ("key", "value", "receptance", "gate"):
        w.mat(p + f"time_mix_{name}.weight", e, e)
    w.norm(p + "time_mix_ln", e)
    w.mat(p + "time_mix_output.weight", e, e)
    w.uniform(p + "channel_mix_lerp_k.weight", 0, 1, 1, 1, e)
    w.uniform(p + "channel_mix_lerp_r.weight", 0, 1, 1, 1, e)
    w.mat(p + "channel_mix_key.weight", N_FF, e)
    w.mat(p + "channel_mix_value.weight", e, N_FF)
    w.mat(p + "channel_mix_receptance.weight", e, e)


def _rwkv7_layer(w: _Weights, p: str, i: int, ranks: dict[str, int]) -> None:
    e = N_EMBD
    w.norm(p + "attn_norm", e)
    w.norm(p + "attn_norm_2", e)
    w.uniform(p + "time_mix_w0.weight", -2.0, 1.0, e)
    w.mat(p + "time_mix_w1.weight", ranks["decay"], e)
    w.mat(p + "time_mix_w2.weight", e, ranks["decay"])
    w.uniform(p + "time_mix_a0.weight", -1.0, 1.0, e)
    w.mat(p + "time_mix_a1.weight", ranks["iclr"], e)
    w.mat(p + "time_mix_a2.weight", e, ranks["iclr"])
    # llama.cpp reads layer 0's (unused) value-residual LoRA with the iclr rank
    rv = ranks["iclr"] if i == 0 else ranks["value"]
    w.uniform(p + "time_mix_v0.weight", -1.0, 1.0, e)
    w.mat(p + "time_mix_v1.weight", rv, e)
    w.mat(p + "time_mix_v2.weight", e, rv)
    w.mat(p + "time_mix_g1.weight", ranks["gate"], e)
    w.mat(p + "time_mix_g2.weight", e, ranks["gate"])
    w.uniform(p + "time_mix_lerp_fused.weight", 0, 1, 6, 1, 1, e)
    w.uniform(p + "time_mix_k_k.weight", 0.5, 1.5, e)
    w.uniform(p + "time_mix_k_a.weight", 0.0, 1.0, e)
    w.add(p + "time_mix_r_k.weight", 0.5 * w.rng.standard_normal(e))
    for name in ("key", "value", "receptance"):
        w.mat(p + f"time_mix_{name}.weight", e, e)
    w.norm(p + "time_mix_ln", e)
    w.mat(p + "time_mix_output.weight", e, e)
    w.uniform(p + "channel_mix_lerp_k.weight", 0, 1, 1, 1, e)
    w.mat(p + "channel_mix_key.weight", N_FF, e)
    w.mat(p + "channel_mix_value.weight", e, N_FF)


def write_tiny_rwkv(path: Path, arch: str, seed: int | None = None) -> str:
    """Write a tiny `arch` ("rwkv6" or "rwkv7") GGUF to `path`; returns its weights' digest."""
    if arch not in ("rwkv6", "rwkv7"):
        raise ValueError(f"unknown arch {arch!r}")
    texts, types = rwkv_vocab()
    w = _Weights(seed if seed is not None else {"rwkv6": 6, "rwkv7": 7}[arch])
    writer = GGUFWriter(str(path), arch)
    writer.add_name(f"tiny-{arch}")
    writer.add_context_length(1024)
    writer.add_embedding_length(N_EMBD)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(0)  # required by llama.cpp, unused
    writer.add_layer_norm_eps(1e-5)
    writer.add_wkv_head_size(HEAD_SIZE)
    writer.add_token_shift_count(2)
    _common(w, len(texts))
    if arch == "rwkv6":
        n_layers, mix, decay = 3, 8, 16
        writer.add_block_count(n_layers)
        writer.add_time_mix_extra_dim(mix)
        writer.add_time_decay_extra_dim(decay)
        writer.add_rescale_every_n_layers(2)
        for i in range(n_layers):
            _rwkv6_layer(w, f"blk.{i}.", mix, decay)
    else:
        n_layers = 2
        ranks = {"decay": 16, "iclr": 16, "value": 8, "gate": 32}
        writer.add_block_count(n_layers)
        writer.add_decay_lora_rank(ranks["decay"])
        writer.add_iclr_lora_rank(ranks["iclr"])
        writer.add_value_residual_mix_lora_rank(ranks["value"])
        writer.add_gate_lora_rank(ranks["gate"])
        for i in range(n_layers):
            _rwkv7_layer(w, f"blk.{i}.", i, ranks)
    writer.add_tokenizer_model("rwkv")
    writer.add_token_list(texts)
    writer.add_token_types(types)
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    writer.add_eot_token_id(texts.index("\\n\\n"))
    for name, a in w.tensors:
        writer.add_tensor(name, a)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return w.digest()
