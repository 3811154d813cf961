"""The falcon architecture (Falcon 7B/40B/180B and their instruct models).

Parallel block: one LayerNorm (7B) or two (40B/180B) read the residual stream, attention and
MLP run side by side, and both add into it. With two, llama.cpp's names are crossed: the MLP
reads `attn_norm` (HF ln_mlp) and attention reads `attn_norm_2` (HF ln_attn). The fused q|k|v
matrix is stored as all q rows, then k, then v (the converter's "jploski" layout); 7B is
multi-query (one kv head). NEOX rope over the whole head; exact (erf) GELU MLP, which is
what Falcon trained with (llama.cpp uses its tanh approximation). Output head tied or not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from corral.engine.kv_cache import AttentionCache
from corral.gguf.hparams import HParams
from corral.gguf.reader import GGUFFile
from corral.models.decoder import AttentionLM, LayerNormArgs, Norm, layer_norm, load_norm, plus
from corral.models.layers import (
    RopeStyle,
    apply_rope,
    cached_attention,
    default_scale,
    rope_cos_sin,
    rope_inv_freq,
)
from corral.models.weights import Linear, TensorSource


@dataclass(frozen=True)
class ModelArgs(LayerNormArgs):
    rope_base: float

    HEAD_COUNT_KV: ClassVar[int | None] = 1  # 7B: multi-query

    @classmethod
    def read(cls, hp: HParams, gguf: GGUFFile) -> dict[str, Any]:
        return super().read(hp, gguf) | {"rope_base": hp.float("rope.freq_base", 10000.0)}


@dataclass
class Block:
    attn_norm: Norm
    attn_norm_2: Norm | None  # 40B-style: attention's own norm (attn_norm feeds the MLP)
    wqkv: Linear  # [q | k | v] rows
    bqkv: torch.Tensor | None
    wo: Linear
    bo: torch.Tensor | None
    up: Linear
    down: Linear


class Model(AttentionLM[ModelArgs]):
    """A Falcon decoder built from GGUF tensors."""

    args_class = ModelArgs

    def __init__(self, args: ModelArgs, src: TensorSource) -> None:
        super().__init__(args, src)
        self.output = self.tied_output(src)
        self.output_norm = load_norm(src, "output_norm")
        self.inv_freq = rope_inv_freq(
            args.head_dim, args.rope_base, None, 1.0, self.device.torch_device
        )
        self.blocks = [self._block(src, i) for i in range(args.n_layers)]

    @staticmethod
    def _block(src: TensorSource, i: int) -> Block:
        p = f"blk.{i}."
        return Block(
            attn_norm=load_norm(src, p + "attn_norm"),
            attn_norm_2=load_norm(src, p + "attn_norm_2")
            if src.has(p + "attn_norm_2.weight")
            else None,
            wqkv=src.weight(p + "attn_qkv.weight"),
            bqkv=src.optional_vector(p + "attn_qkv.bias"),
            wo=src.weight(p + "attn_output.weight"),
            bo=src.optional_vector(p + "attn_output.bias"),
            up=src.weight(p + "ffn_up.weight"),
            down=src.weight(p + "ffn_down.weight"),
        )

    @torch.inference_mode()
    def forward(
        self, tokens: torch.Tensor, cache: AttentionCache, last_only: bool = False
    ) -> torch.Tensor:
        a = self.args
        tokens = tokens.to(self.device.torch_device)
        b, t = tokens.shape
        cos, sin = rope_cos_sin(self.inv_freq, cache.positions(t))  # [B, 1, T, D/2]
        mask = cache.mask(t, None)
        scale = default_scale(a.head_dim)
        n_q, n_kv = a.n_head * a.head_dim, a.n_head_kv * a.head_dim
        x = self.tok_embd.rows(tokens).to(self.device.dtype)  # [B, T, E]
        for i, blk in enumerate(self.blocks):
            h_ffn = layer_norm(x, blk.attn_norm, a.norm_eps)
            h = h_ffn if blk.attn_norm_2 is None else layer_norm(x, blk.attn_norm_2, a.norm_eps)
            q, k, v = plus(blk.wqkv(h), blk.bqkv).split((n_q, n_kv, n_kv), dim=-1)
            q = q.reshape(b, t, a.n_head, a.head_dim).transpose(1, 2)  # [B, H, T, D]
            k = k.reshape(b, t, a.n_head_kv, a.head_dim).transpose(1, 2)  # [B, Hkv, T, D]
            v = v.reshape(b, t, a.n_head_kv, a.head_dim).transpose(1, 2)
            q = apply_rope(q, cos, sin, RopeStyle.NEOX)
            k = apply_rope(k, cos, sin, RopeStyle.NEOX)
            attn = plus(blk.wo(cached_attention(cache, i, q, k, v, mask, scale)), blk.bo)
            x = x + attn + blk.down(F.gelu(blk.up(h_ffn)))
        cache.advance(t)
        if last_only:
            x = x[:, -1:]
        return self.output(layer_norm(x, self.output_norm, a.norm_eps)).float()
