"""Hugging Face PEFT LoRA folders (adapter_config.json + adapter_model.safetensors) for
llama-architecture models, mapped onto GGUF weight names.

PEFT stores `base_model.model.<module>.lora_A.weight` [r, in] and `.lora_B.weight`
[out, r] (embeddings: `lora_embedding_A` [r, vocab], `lora_embedding_B` [embd, r]) and
scales by lora_alpha / r (lora_alpha / sqrt(r) with use_rslora; alpha_pattern overrides
alpha per module). GGUF llama files store q and k with their rows permuted for llama.cpp's
rope (convert_hf_to_gguf's `permute`), so the B matrices of q_proj / k_proj get the same
row permutation, as llama.cpp's convert_lora_to_gguf.py does.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch

from corral.adapters.lora import AdapterError, LoraAdapter, LoraPair

# PEFT module paths (after "base_model.model.") -> GGUF weight names, llama family
_LAYER_MODULES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_LAYER_RE = re.compile(r"model\.layers\.(\d+)\.(.+)")
_KEY_RE = re.compile(
    r"(?:base_model\.model\.)?(.+?)\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B)(?:\.weight)?"
)
_ARCHS = ("llama", "mistral")


def gguf_weight_name(module: str) -> str:
    """`model.layers.3.self_attn.q_proj` -> `blk.3.attn_q.weight`; AdapterError otherwise."""
    if module == "model.embed_tokens":
        return "token_embd.weight"
    if module == "lm_head":
        return "output.weight"
    m = _LAYER_RE.fullmatch(module)
    if m and m.group(2) in _LAYER_MODULES:
        return f"blk.{m.group(1)}.{_LAYER_MODULES[m.group(2)]}.weight"
    raise AdapterError(f"PEFT module '{module}' has no counterpart in a llama GGUF model")


def permute_rows(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """convert_hf_to_gguf's llama q/k permutation, on the rows of w [out, ...]."""
    out = w.shape[0]
    return w.reshape(n_head, 2, out // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    st = folder / "adapter_model.safetensors"
    if st.exists():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(st))
        except (SafetensorError, OSError, ValueError) as e:
            raise AdapterError(f"{st.name}: not a readable safetensors file ({e})") from None
    binary = folder / "adapter_model.bin"
    if binary.exists():
        try:  # weights_only: a pickle from the internet must not run code
            return torch.load(binary, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
            raise AdapterError(f"{binary.name}: not a readable PyTorch state dict ({e})") from None
    raise AdapterError(f"{folder.name}: no adapter_model.safetensors (or .bin) in the folder")


def _config(folder: Path) -> dict[str, Any]:
    path = folder / "adapter_config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AdapterError(
            f"{folder.name}: no adapter_config.json (not a PEFT adapter folder)"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AdapterError(f"{path.name}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise AdapterError(f"{path.name}: expected a JSON object")
    kind = str(cfg.get("peft_type", "LORA")).upper()
    if kind != "LORA":
        raise AdapterError(f"{folder.name}: PEFT type {kind} is not supported (only LORA)")
    if cfg.get("use_dora"):
        raise AdapterError(f"{folder.name}: DoRA adapters are not supported")
    if cfg.get("fan_in_fan_out"):
        raise AdapterError(
            f"{folder.name}: fan_in_fan_out adapters (GPT-2 Conv1D) are not supported"
        )
    if cfg.get("modules_to_save"):
        raise AdapterError(
            f"{folder.name}: modules_to_save ({', '.join(cfg['modules_to_save'])}) would replace "
            "whole weights; only LoRA updates are supported"
        )
    return cfg


def _alpha(cfg: dict[str, Any], module: str) -> float:
    for key, value in (cfg.get("alpha_pattern") or {}).items():
        if module == key or module.endswith("." + key) or re.fullmatch(rf"(.*\.)?{key}", module):
            return float(value)
    return float(cfg.get("lora_alpha", 8))


def load_peft_adapter(folder: Path, model_meta: dict[str, Any]) -> LoraAdapter:
    """Read a PEFT LoRA folder for the llama-family model whose metadata is `model_meta`."""
    arch = str(model_meta.get("general.architecture", ""))
    if arch not in _ARCHS:
        raise AdapterError(
            f"{folder.name}: PEFT adapters are supported for llama models, the model is '{arch}'"
        )
    n_head = int(model_meta[f"{arch}.attention.head_count"])
    n_head_kv = int(model_meta.get(f"{arch}.attention.head_count_kv", n_head))
    cfg = _config(folder)
    halves: dict[str, dict[str, torch.Tensor]] = {}
    for raw_key, t in _read_tensors(folder).items():
        # some PEFT versions keep the adapter's name in the key: lora_A.default.weight
        key = raw_key.replace(".default.", ".").removesuffix(".default")
        m = _KEY_RE.fullmatch(key)
        if m is None:
            if "lora_magnitude_vector" in key:
                raise AdapterError(f"{folder.name}: DoRA adapters are not supported")
            raise AdapterError(f"{folder.name}: tensor '{raw_key}' is not a LoRA A/B matrix")
        halves.setdefault(m.group(1), {})[m.group(2)] = t.float()
    adapter = LoraAdapter(folder.name, folder, architecture=arch)
    for module, ab in halves.items():
        name = gguf_weight_name(module)
        emb = "lora_embedding_A" in ab or "lora_embedding_B" in ab
        a = ab.get("lora_embedding_A" if emb else "lora_A")
        b = ab.get("lora_embedding_B" if emb else "lora_B")
        if a is None or b is None:
            raise AdapterError(f"{folder.name}: module '{module}' lacks its LoRA A or B matrix")
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            raise AdapterError(
                f"{folder.name}: module '{module}' has A {tuple(a.shape)} and B {tuple(b.shape)}, "
                "whose ranks differ"
            )
        rank = int(a.shape[0])
        alpha = _alpha(cfg, module)
        scale = alpha / math.sqrt(rank) if cfg.get("use_rslora") else alpha / rank
        if name.endswith("attn_q.weight"):
            b = permute_rows(b, n_head)
        elif name.endswith("attn_k.weight"):
            b = permute_rows(b, n_head_kv)
        # embeddings keep llama.cpp's orientation: A [vocab, r], rows looked up by token
        adapter.pairs[name] = LoraPair(a.T.contiguous() if emb else a, b, scale, emb)
    if not adapter.pairs:
        raise AdapterError(f"{folder.name}: the adapter has no LoRA tensors")
    return adapter
