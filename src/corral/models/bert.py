"""BERT encoders: all-MiniLM-L6-v2, the BGE and GTE families, e5, ... (GGUF arch "bert").

Post-norm encoder: (token + learned position + token-type 0) embeddings -> LayerNorm; each
layer: self-attention (bidirectional, padding masked) -> residual -> LayerNorm; GELU MLP ->
residual -> LayerNorm. q, k and v are fused into one matmul at load, and all but attention
runs on the real tokens only (`Packing`).

GELU is the exact (erf) one the models were trained with, as Hugging Face runs them, not
llama.cpp's tanh approximation: the embeddings must match sentence-transformers'.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
import torch.nn.functional as F

from corral.gguf.hparams import HParams
from corral.gguf.reader import GGUFFile
from corral.models.encoder import Packing, WeightSource, linear, norm, optional, padding_mask


class Activation(Enum):
    """The MLP's nonlinearity (config.json `hidden_act`)."""

    GELU = "gelu"  # exact, erf
    GELU_TANH = "gelu_tanh"  # "gelu_new", "gelu_pytorch_tanh"
    RELU = "relu"

    @classmethod
    def from_hf(cls, name: str) -> Activation:
        if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
            return cls.GELU_TANH
        return cls(name) if name in ("gelu", "relu") else cls.GELU

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self is Activation.RELU:
            return F.relu(x)
        return F.gelu(x, approximate="tanh" if self is Activation.GELU_TANH else "none")


@dataclass(frozen=True)
class ModelArgs:
    n_layers: int
    n_embd: int
    n_ff: int
    n_head: int
    eps: float
    context_length: int
    activation: Activation = Activation.GELU

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> ModelArgs:
        hp = HParams(gguf.metadata, gguf.architecture, gguf.path.name)
        return cls(
            n_layers=hp.int("block_count"),
            n_embd=hp.int("embedding_length"),
            n_ff=hp.int("feed_forward_length"),
            n_head=hp.int("attention.head_count"),
            eps=hp.float("attention.layer_norm_epsilon", 1e-12),
            context_length=hp.int("context_length", 512),
        )

    @classmethod
    def from_hf(cls, config: dict[str, Any]) -> ModelArgs:
        return cls(
            n_layers=int(config["num_hidden_layers"]),
            n_embd=int(config["hidden_size"]),
            n_ff=int(config["intermediate_size"]),
            n_head=int(config["num_attention_heads"]),
            eps=float(config.get("layer_norm_eps", 1e-12)),
            context_length=int(config.get("max_position_embeddings", 512)),
            activation=Activation.from_hf(str(config.get("hidden_act", "gelu"))),
        )


def fused_qkv(src: WeightSource, p: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One [3E, E] matrix (and bias) for q, k and v: one GEMM instead of three."""
    if src.has(p + "attn_qkv.weight"):
        return src.get(p + "attn_qkv.weight"), optional(src, p + "attn_qkv.bias")
    ws = [src.get(f"{p}attn_{x}.weight") for x in "qkv"]
    bs = [optional(src, f"{p}attn_{x}.bias") for x in "qkv"]
    if all(b is None for b in bs):
        return torch.cat(ws).contiguous(), None
    bias = [b if b is not None else torch.zeros(w.shape[0]) for w, b in zip(ws, bs, strict=True)]
    return torch.cat(ws).contiguous(), torch.cat(bias)


@dataclass
class Block:
    wqkv: torch.Tensor
    bqkv: torch.Tensor | None
    wo: torch.Tensor
    bo: torch.Tensor | None
    attn_norm: tuple[torch.Tensor, torch.Tensor | None]
    up: torch.Tensor
    bup: torch.Tensor | None
    down: torch.Tensor
    bdown: torch.Tensor | None
    out_norm: tuple[torch.Tensor, torch.Tensor | None]


def norm_pair(src: WeightSource, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A LayerNorm's weight and (optional) bias."""
    return src.get(name + ".weight"), optional(src, name + ".bias")


def self_attention(
    x: torch.Tensor,
    wqkv: torch.Tensor,
    bqkv: torch.Tensor | None,
    n_head: int,
    mask: torch.Tensor,
    packing: Packing,
) -> torch.Tensor:
    """x [N, E] (packed real tokens) -> attention output [N, E], before the output
    projection."""
    e = x.shape[-1]
    qkv = packing.unpack(linear(x, wqkv, bqkv))  # [B, T, 3E]
    b, t = qkv.shape[:2]
    q, k, v = qkv.view(b, t, 3, n_head, e // n_head).permute(2, 0, 3, 1, 4).unbind(0)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, T, D]
    return packing.pack(out.transpose(1, 2).reshape(b, t, e))


class Model:
    """A BERT encoder built from GGUF-named float32 tensors."""

    def __init__(self, args: ModelArgs, src: WeightSource) -> None:
        self.args = args
        self.hidden_size = args.n_embd
        self.max_positions = args.context_length
        self.tok_embd = src.get("token_embd.weight")
        self.vocab_size = self.tok_embd.shape[0]
        self.pos_embd = src.get("position_embd.weight")
        types = optional(src, "token_types.weight")
        # sentence embedding always uses segment A: only row 0 of the type table matters
        self.type0 = types[0].clone() if types is not None else None
        self.embd_norm = norm_pair(src, "token_embd_norm")
        self.blocks = [self._block(src, i) for i in range(args.n_layers)]

    @staticmethod
    def _block(src: WeightSource, i: int) -> Block:
        p = f"blk.{i}."
        wqkv, bqkv = fused_qkv(src, p)
        return Block(
            wqkv=wqkv,
            bqkv=bqkv,
            wo=src.get(p + "attn_output.weight"),
            bo=optional(src, p + "attn_output.bias"),
            attn_norm=norm_pair(src, p + "attn_output_norm"),
            up=src.get(p + "ffn_up.weight"),
            bup=optional(src, p + "ffn_up.bias"),
            down=src.get(p + "ffn_down.weight"),
            bdown=optional(src, p + "ffn_down.bias"),
            out_norm=norm_pair(src, p + "layer_output_norm"),
        )

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        a = self.args
        t = ids.shape[1]
        x = F.embedding(ids, self.tok_embd) + self.pos_embd[:t]
        if self.type0 is not None:
            x = x + self.type0
        packing = Packing(mask)
        x = norm(packing.pack(x), *self.embd_norm, a.eps)  # [N, E] from here on
        keep = padding_mask(mask)
        for blk in self.blocks:
            h = self_attention(x, blk.wqkv, blk.bqkv, a.n_head, keep, packing)
            x = norm(x + linear(h, blk.wo, blk.bo), *blk.attn_norm, a.eps)
            h = a.activation(linear(x, blk.up, blk.bup))
            x = norm(x + linear(h, blk.down, blk.bdown), *blk.out_norm, a.eps)
        return packing.unpack(x)
