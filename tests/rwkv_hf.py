"""Hugging Face RWKV-6 / RWKV-7 folders made from the tiny llama.cpp GGUF files of tiny_rwkv.

transformers has no RWKV-6/7 model to save a checkpoint from, so `save_hf_rwkv` inverts what
llama.cpp's converter does: each GGUF tensor goes back to its Hugging Face name and the
shape the checkpoint stores (lerps unfused to [1, 1, E], LoRAs transposed back, the rescaled
v6 output matrices multiplied back, ...), with a config.json and the world vocabulary file
rwkv_vocab_v20230424.txt. Converting the folder must then give the GGUF file back.

Layouts: "rwkv6" (RWKV/v6-Finch-*-HF, modeling_rwkv6.py), "rwkv7-fla" (fla-hub's
RWKV7ForCausalLM) and "rwkv7" (Rwkv7ForCausalLM, BlinkDL's names, with the unused
value-residual LoRA of layer 0 stored as some checkpoints store it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGUFReader
from safetensors.torch import save_file

from tiny_rwkv import EXTRA_TOKENS, HEAD_SIZE

LAYOUTS = ("rwkv6", "rwkv7-fla", "rwkv7")
V6_LERPS, V7_LERPS = "wkvrg", "rwkvag"


def read_gguf(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A GGUF file's tensors (numpy, float32) and scalar metadata."""
    r = GGUFReader(path)
    tensors = {t.name: np.array(t.data, dtype=np.float32) for t in r.tensors}
    meta: dict[str, Any] = {}
    for key, f in r.fields.items():
        if len(f.types) == 1 and f.data:  # scalars and strings, not arrays
            meta[key] = f.contents()
    return tensors, meta


def _write_vocab(folder: Path) -> None:
    """rwkv_vocab_v20230424.txt for tiny_rwkv's vocabulary: `<id> <literal> <length>`, the
    literal a str where the bytes are UTF-8, as in the real file."""
    raw = [bytes([b]) for b in range(256)] + EXTRA_TOKENS
    lines = []
    for i, tok in enumerate(raw, 1):
        try:
            literal = repr(tok.decode("utf-8"))
        except UnicodeDecodeError:
            literal = repr(tok)
        lines.append(f"{i} {literal} {len(tok)}")
    (folder / "rwkv_vocab_v20230424.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def _v6(g: dict[str, np.ndarray], meta: dict[str, Any]) -> tuple[dict, dict]:
    n, every = meta["rwkv6.block_count"], meta["rwkv6.rescale_every_n_layers"]
    sd = {
        "rwkv.embeddings.weight": g["token_embd.weight"],
        "head.weight": g["output.weight"],
    }
    for s in ("weight", "bias"):
        sd[f"rwkv.blocks.0.pre_ln.{s}"] = g[f"token_embd_norm.{s}"]
        sd[f"rwkv.ln_out.{s}"] = g[f"output_norm.{s}"]
    for i in range(n):
        b, p = f"blk.{i}.", f"rwkv.blocks.{i}."
        scale = 2.0 ** (i // every) if every else 1.0
        for s in ("weight", "bias"):
            sd[f"{p}ln1.{s}"] = g[f"{b}attn_norm.{s}"]
            sd[f"{p}ln2.{s}"] = g[f"{b}attn_norm_2.{s}"]
            sd[f"{p}attention.ln_x.{s}"] = g[f"{b}time_mix_ln.{s}"]
        a = p + "attention."
        sd[a + "time_maa_x"] = g[b + "time_mix_lerp_x.weight"].reshape(1, 1, -1)
        for c, lerp in zip(V6_LERPS, g[b + "time_mix_lerp_fused.weight"], strict=True):
            sd[a + f"time_maa_{c}"] = lerp.reshape(1, 1, -1)
        sd[a + "time_maa_w1"] = g[b + "time_mix_w1.weight"].T  # [E, 5X]
        sd[a + "time_maa_w2"] = g[b + "time_mix_w2.weight"].transpose(0, 2, 1)  # [5, X, E]
        sd[a + "time_decay"] = g[b + "time_mix_decay.weight"].reshape(1, 1, -1)
        sd[a + "time_decay_w1"] = g[b + "time_mix_decay_w1.weight"].T  # [E, D]
        sd[a + "time_decay_w2"] = g[b + "time_mix_decay_w2.weight"].T  # [D, E]
        sd[a + "time_faaaa"] = g[b + "time_mix_first.weight"]  # [H, S]
        for name in ("key", "value", "receptance", "gate"):
            sd[a + f"{name}.weight"] = g[b + f"time_mix_{name}.weight"]
        sd[a + "output.weight"] = g[b + "time_mix_output.weight"] * scale
        f = p + "feed_forward."
        sd[f + "time_maa_k"] = g[b + "channel_mix_lerp_k.weight"].reshape(1, 1, -1)
        sd[f + "time_maa_r"] = g[b + "channel_mix_lerp_r.weight"].reshape(1, 1, -1)
        for name in ("key", "receptance"):
            sd[f + f"{name}.weight"] = g[b + f"channel_mix_{name}.weight"]
        sd[f + "value.weight"] = g[b + "channel_mix_value.weight"] * scale
    e = meta["rwkv6.embedding_length"]
    config = {
        "architectures": ["Rwkv6ForCausalLM"], "model_type": "rwkv6",
        "vocab_size": g["token_embd.weight"].shape[0], "hidden_size": e,
        "num_hidden_layers": n, "attention_hidden_size": e, "head_size": HEAD_SIZE,
        "head_size_divisor": 8, "intermediate_size": meta["rwkv6.feed_forward_length"],
        "layer_norm_epsilon": meta["rwkv6.attention.layer_norm_epsilon"],
        "rescale_every": every, "context_length": 1024, "bos_token_id": 0, "eos_token_id": 0,
        "tie_word_embeddings": False,
    }  # fmt: skip
    return sd, config


def _v7(g: dict[str, np.ndarray], meta: dict[str, Any], fla: bool) -> tuple[dict, dict]:
    n = meta["rwkv7.block_count"]
    top = "model.layers" if fla else "model.blocks"
    sd = {"model.embeddings.weight": g["token_embd.weight"]}
    sd["lm_head.weight" if fla else "head.weight"] = g["output.weight"]
    for s in ("weight", "bias"):
        sd[f"model.layers.0.pre_norm.{s}" if fla else f"model.pre_ln.{s}"] = g[
            f"token_embd_norm.{s}"
        ]
        sd[f"model.norm.{s}" if fla else f"model.ln_out.{s}"] = g[f"output_norm.{s}"]
    for i in range(n):
        b, p = f"blk.{i}.", f"{top}.{i}."
        a = p + ("attn." if fla else "attention.")
        for s in ("weight", "bias"):
            sd[f"{p}{'attn_norm' if fla else 'ln1'}.{s}"] = g[f"{b}attn_norm.{s}"]
            sd[f"{p}{'ffn_norm' if fla else 'ln2'}.{s}"] = g[f"{b}attn_norm_2.{s}"]
            sd[f"{a}{'g_norm' if fla else 'ln_x'}.{s}"] = g[f"{b}time_mix_ln.{s}"]
        for c, lerp in zip(V7_LERPS, g[b + "time_mix_lerp_fused.weight"], strict=True):
            sd[a + f"x_{c}"] = lerp.reshape(1, 1, -1)
        for x in "wavg":
            if x == "v" and i == 0 and fla:
                continue  # fla has no value-residual LoRA on layer 0
            w1, w2 = g[b + f"time_mix_{x}1.weight"], g[b + f"time_mix_{x}2.weight"]
            if fla:  # nn.Linear weights, [out, in]
                sd[a + f"{x}_lora.lora.0.weight"] = w1
                sd[a + f"{x}_lora.lora.2.weight"] = w2
                if x != "g":
                    sd[a + f"{x}_lora.lora.2.bias"] = g[b + f"time_mix_{x}0.weight"]
            else:  # x @ W matrices, and the biases as [1, 1, E] parameters
                sd[a + f"{x}1"], sd[a + f"{x}2"] = w1.T, w2.T
                if x != "g":
                    sd[a + f"{x}0"] = g[b + f"time_mix_{x}0.weight"].reshape(1, 1, -1)
        k_shape = (-1,) if fla else (1, 1, -1)
        sd[a + "k_k"] = g[b + "time_mix_k_k.weight"].reshape(k_shape)
        sd[a + "k_a"] = g[b + "time_mix_k_a.weight"].reshape(k_shape)
        sd[a + "r_k"] = g[b + "time_mix_r_k.weight"].reshape(-1, HEAD_SIZE)  # [H, S]
        names = ("r_proj", "k_proj", "v_proj", "o_proj") if fla else (
            "receptance", "key", "value", "output",
        )  # fmt: skip
        for hf, ours in zip(names, ("receptance", "key", "value", "output"), strict=True):
            sd[a + f"{hf}.weight"] = g[b + f"time_mix_{ours}.weight"]
        f = p + ("ffn." if fla else "feed_forward.")
        sd[f + "x_k"] = g[b + "channel_mix_lerp_k.weight"].reshape(k_shape)
        sd[f + "key.weight"] = g[b + "channel_mix_key.weight"]
        sd[f + "value.weight"] = g[b + "channel_mix_value.weight"]
    ranks = [meta[f"rwkv7.attention.{k}_lora_rank"] for k in ("decay", "iclr")]
    ranks += [meta["rwkv7.attention.value_residual_mix_lora_rank"]]
    ranks += [meta["rwkv7.attention.gate_lora_rank"]]
    keys = (
        ("head_dim", "norm_eps", "decay_low_rank_dim", "a_low_rank_dim", "v_low_rank_dim",
         "gate_low_rank_dim")
        if fla else
        ("head_size", "layer_norm_epsilon", "lora_rank_decay", "lora_rank_iclr",
         "lora_rank_value_residual_mix", "lora_rank_gate")
    )  # fmt: skip
    values = [HEAD_SIZE, meta["rwkv7.attention.layer_norm_epsilon"], *ranks]
    config = {
        "architectures": ["RWKV7ForCausalLM" if fla else "Rwkv7ForCausalLM"],
        "model_type": "rwkv7", "vocab_size": g["token_embd.weight"].shape[0],
        "hidden_size": meta["rwkv7.embedding_length"], "num_hidden_layers": n,
        "intermediate_size": meta["rwkv7.feed_forward_length"], "bos_token_id": 0,
        "eos_token_id": 0, "tie_word_embeddings": False, **dict(zip(keys, values, strict=True)),
    }  # fmt: skip
    return sd, config


def save_hf_rwkv(gguf_path: Path, folder: Path, layout: str) -> Path:
    """Write the Hugging Face folder (layout: one of LAYOUTS) whose conversion is the tiny
    GGUF file at `gguf_path`; returns `folder`."""
    g, meta = read_gguf(gguf_path)
    if layout == "rwkv6":
        sd, config = _v6(g, meta)
    elif layout in ("rwkv7", "rwkv7-fla"):
        sd, config = _v7(g, meta, fla=layout == "rwkv7-fla")
    else:
        raise ValueError(f"unknown layout {layout!r}")
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: _t(v) for k, v in sd.items()}, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    _write_vocab(folder)
    return folder
