"""Tiny LoRA adapters for the tests, and the expected result computed independently: the
base model's weights with the adapters merged in numpy, written as a plain F32 GGUF.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from gguf import GGUFValueType, GGUFWriter

from corral.gguf.reader import open_gguf
from corral.quant import dequantize


def random_pairs(
    base: Path, names: list[str], rank: int, seed: int, size: float = 0.2
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(A [r, in], B [out, r]) per weight name, float32; token_embd gets (A [vocab, r],
    B [embd, r]) in llama.cpp's embedding orientation."""
    rng = np.random.default_rng(seed)
    out = {}
    with open_gguf(base) as g:
        for n in names:
            rows, cols = g.tensors[n].shape
            if n == "token_embd.weight":
                a, b = rng.standard_normal((rows, rank)), rng.standard_normal((cols, rank))
            else:
                a, b = rng.standard_normal((rank, cols)), rng.standard_normal((rows, rank))
            out[n] = ((a * size).astype(np.float32), (b * size).astype(np.float32))
    return out


def write_gguf_lora(
    path: Path, pairs: dict[str, tuple[np.ndarray, np.ndarray]], alpha: float,
    arch: str = "llama", general_type: str = "adapter",
) -> Path:  # fmt: skip
    """A llama.cpp-style GGUF LoRA adapter: <name>.lora_a / .lora_b tensors."""
    w = GGUFWriter(str(path), arch)
    w.add_type(general_type)
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", alpha)
    for name, (a, b) in pairs.items():
        w.add_tensor(name + ".lora_a", a)
        w.add_tensor(name + ".lora_b", b)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def delta(name: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The [out, in] weight update of a pair, in float64."""
    if name == "token_embd.weight":
        return a.astype(np.float64) @ b.astype(np.float64).T  # [vocab, embd]
    return b.astype(np.float64) @ a.astype(np.float64)


def write_merged(base: Path, out: Path, updates: dict[str, np.ndarray]) -> Path:
    """`base` with updates[name] added to each named weight, every tensor as F32."""
    with open_gguf(base) as g:
        w = GGUFWriter(str(out), g.architecture)
        for key, value in g.metadata.items():
            if key == "general.architecture":
                continue
            vtype = g.value_types[key]
            if vtype == GGUFValueType.ARRAY:
                if isinstance(value, np.ndarray):
                    sub = {np.dtype(np.int32): GGUFValueType.INT32,
                           np.dtype(np.float32): GGUFValueType.FLOAT32}[value.dtype]  # fmt: skip
                    w.add_key_value(key, value.tolist(), vtype, sub)
                else:
                    w.add_key_value(key, list(value), vtype, GGUFValueType.STRING)
            else:
                w.add_key_value(key, value, vtype)
        for name, t in g.tensors.items():
            x = dequantize(t.data, t.ggml_type, t.shape).numpy().astype(np.float64)
            if name in updates:
                x = x + updates[name]
            w.add_tensor(name, x.astype(np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return out


# Hugging Face module names of the llama weights
HF_MODULES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}  # fmt: skip


def hf_module(gguf_name: str) -> str:
    if gguf_name == "token_embd.weight":
        return "model.embed_tokens"
    if gguf_name == "output.weight":
        return "lm_head"
    _, layer, kind, _ = gguf_name.split(".")
    return f"model.layers.{layer}.{HF_MODULES[kind]}"


def hf_to_gguf_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """The row order GGUF llama files use for q and k, from Hugging Face's: within each
    head, HF keeps the first half of the rotary pairs then the second half; GGUF
    interleaves them (row 2i <- HF row i, row 2i+1 <- HF row i + head_dim / 2)."""
    out = np.empty_like(w)
    hd = w.shape[0] // n_head
    for h in range(n_head):
        for i in range(hd // 2):
            out[h * hd + 2 * i] = w[h * hd + i]
            out[h * hd + 2 * i + 1] = w[h * hd + hd // 2 + i]
    return out


def write_peft(
    folder: Path, pairs: dict[str, tuple[np.ndarray, np.ndarray]], r: int, alpha: float,
    **config: object,
) -> Path:  # fmt: skip
    """A PEFT LoRA folder. `pairs` are in Hugging Face terms: q/k B rows in HF order, and
    the embedding pair as PEFT stores it (lora_embedding_A [r, vocab], _B [embd, r])."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, (a, b) in pairs.items():
        mod = "base_model.model." + hf_module(name)
        if name == "token_embd.weight":
            tensors[mod + ".lora_embedding_A"] = a
            tensors[mod + ".lora_embedding_B"] = b
        else:
            tensors[mod + ".lora_A.weight"] = a
            tensors[mod + ".lora_B.weight"] = b
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    cfg = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "task_type": "CAUSAL_LM",
           "target_modules": sorted({hf_module(n).split(".")[-1] for n in pairs}), **config}  # fmt: skip
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    return folder
