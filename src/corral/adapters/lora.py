"""LoRA adapters as corral holds them, and llama.cpp's GGUF adapter files.

An adapter is a set of low-rank pairs keyed by the GGUF name of the weight they modify:
W' = W + s * B @ A with A [r, in] and B [out, r] (torch order), s = alpha / r times the
scale the user asks for. The token embedding is the exception, as in llama.cpp: its A is
stored [vocab, r] and its delta is added to the looked-up rows (A[ids] @ B^T).

llama.cpp's GGUF adapters (convert_lora_to_gguf.py): general.type "adapter",
adapter.type "lora", adapter.lora.alpha (0: scale as given), general.architecture of
the base, tensors `<weight>.lora_a` / `<weight>.lora_b`; `*_norm.weight` tensors are
skipped as llama.cpp skips them. Hugging Face PEFT folders are read by `peft.py`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from corral.errors import CorralError, GGUFError
from corral.gguf.reader import open_gguf
from corral.quant import dequantize


class AdapterError(CorralError):
    """An adapter that cannot be read or does not fit the model it is applied to."""


@dataclass(frozen=True)
class LoraPair:
    """One weight's low-rank update: delta = scale * B @ A (embedding: A[ids] @ B^T)."""

    a: torch.Tensor  # [r, in]; embedding: [vocab, r]
    b: torch.Tensor  # [out, r]; embedding: [embd, r]
    scale: float  # alpha / r (or 1), before the user's scale
    embedding: bool = False

    @property
    def rank(self) -> int:
        return int(self.b.shape[1])

    def delta_shape(self) -> tuple[int, int]:
        """The [out, in] shape of the weight this pair can modify."""
        if self.embedding:
            return int(self.a.shape[0]), int(self.b.shape[0])
        return int(self.b.shape[0]), int(self.a.shape[1])


@dataclass
class LoraAdapter:
    """A loaded adapter: pairs by GGUF weight name."""

    name: str
    path: Path
    pairs: dict[str, LoraPair] = field(default_factory=dict)
    architecture: str | None = None


def is_embedding(name: str) -> bool:
    return name.endswith("token_embd.weight")


def lora_scale(alpha: float, rank: int) -> float:
    """llama.cpp's rule: alpha / rank, or 1 when the file gives no alpha."""
    return alpha / rank if alpha else 1.0


def load_gguf_adapter(path: str | os.PathLike[str], arch: str) -> LoraAdapter:
    """Read a llama.cpp GGUF LoRA adapter for a model of architecture `arch`."""
    path = Path(path)
    try:
        g = open_gguf(path)
    except GGUFError as e:
        raise AdapterError(f"adapter {e}") from None
    with g:
        meta = g.metadata
        if meta.get("general.type") != "adapter" or meta.get("adapter.type") != "lora":
            kind = meta.get("general.type") or "model"
            raise AdapterError(
                f"{path.name}: not a LoRA adapter (general.type is '{kind}', adapter.type is "
                f"'{meta.get('adapter.type')}')"
            )
        adapter_arch = meta.get("general.architecture")
        if adapter_arch != arch:
            raise AdapterError(
                f"{path.name}: the adapter is for '{adapter_arch}' models, the model is '{arch}'"
            )
        alpha = float(meta.get("adapter.lora.alpha", 0.0) or 0.0)
        halves: dict[str, dict[str, torch.Tensor]] = {}
        for name, t in g.tensors.items():
            base, dot, part = name.rpartition(".")
            if part in ("lora_a", "lora_b") and dot:
                halves.setdefault(base, {})[part] = dequantize(t.data, t.ggml_type, t.shape).clone()
            elif not name.endswith("_norm.weight"):
                raise AdapterError(f"{path.name}: tensor '{name}' is neither .lora_a nor .lora_b")
        adapter = LoraAdapter(path.stem, path, architecture=arch)
        for base, ab in halves.items():
            if set(ab) != {"lora_a", "lora_b"}:
                missing = ({"lora_a", "lora_b"} - set(ab)).pop()
                raise AdapterError(f"{path.name}: '{base}' has no {missing} tensor")
            a, b = ab["lora_a"], ab["lora_b"]
            emb = is_embedding(base)
            rank = int(b.shape[1])
            inner = a.shape[1] if emb else a.shape[0]
            if a.dim() != 2 or b.dim() != 2 or inner != rank:
                raise AdapterError(
                    f"{path.name}: '{base}' has lora_a {tuple(a.shape)} and lora_b "
                    f"{tuple(b.shape)}, whose ranks differ"
                )
            adapter.pairs[base] = LoraPair(a, b, lora_scale(alpha, rank), emb)
    if not adapter.pairs:
        raise AdapterError(f"{path.name}: the adapter has no LoRA tensors")
    return adapter


def load_adapter(path: str | os.PathLike[str], model_meta: dict[str, Any]) -> LoraAdapter:
    """A GGUF adapter file or a PEFT folder, for the model whose metadata is `model_meta`."""
    path = Path(path)
    arch = str(model_meta.get("general.architecture", ""))
    if path.is_dir():
        from corral.adapters.peft import load_peft_adapter

        return load_peft_adapter(path, model_meta)
    if not path.exists():
        raise AdapterError(f"adapter {path}: no such file or folder")
    if path.suffix == ".safetensors" or path.name == "adapter_config.json":
        from corral.adapters.peft import load_peft_adapter

        return load_peft_adapter(path.parent, model_meta)
    return load_gguf_adapter(path, arch)
