"""The starcoder2 architecture (StarCoder2 3B/7B/15B code models).

Pre-norm decoder with LayerNorm (weight and bias), biased q/k/v/o projections, GQA, NEOX rope
over the whole head, and a plain two-matrix GELU(tanh) MLP with biases. The output head is
usually tied to the embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from corral.engine.kv_cache import AttentionCache
from corral.gguf.hparams import HParams
from corral.gguf.reader import GGUFFile
from corral.models.decoder import AttentionLM, LayerNormArgs, Norm, layer_norm, load_norm, plus
from corral.models.layers import (
    RopeStyle,
    apply_rope,
    cached_attention,
    default_scale,
    gelu_tanh,
    rope_cos_sin,
    rope_inv_freq,
)
from corral.models.weights import Linear, TensorSource


@dataclass(frozen=True)
class ModelArgs(LayerNormArgs):
    rope_base: float

    CONTEXT_LENGTH: ClassVar[int] = 16384

    @classmethod
    def read(cls, hp: HParams, gguf: GGUFFile) -> dict[str, Any]:
        return super().read(hp, gguf) | {"rope_base": hp.float("rope.freq_base", 10000.0)}


@dataclass
class Block:
    attn_norm: Norm
    wq: Linear
    wk: Linear
    wv: Linear
    wo: Linear
    bq: torch.Tensor | None
    bk: torch.Tensor | None
    bv: torch.Tensor | None
    bo: torch.Tensor | None
    ffn_norm: Norm
    up: Linear
    b_up: torch.Tensor | None
    down: Linear
    b_down: torch.Tensor | None


class Model(AttentionLM[ModelArgs]):
    """A StarCoder2 decoder built from GGUF tensors."""

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
            wq=src.weight(p + "attn_q.weight"),
            wk=src.weight(p + "attn_k.weight"),
            wv=src.weight(p + "attn_v.weight"),
            wo=src.weight(p + "attn_output.weight"),
            bq=src.optional_vector(p + "attn_q.bias"),
            bk=src.optional_vector(p + "attn_k.bias"),
            bv=src.optional_vector(p + "attn_v.bias"),
            bo=src.optional_vector(p + "attn_output.bias"),
            ffn_norm=load_norm(src, p + "ffn_norm"),
            up=src.weight(p + "ffn_up.weight"),
            b_up=src.optional_vector(p + "ffn_up.bias"),
            down=src.weight(p + "ffn_down.weight"),
            b_down=src.optional_vector(p + "ffn_down.bias"),
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
        x = self.tok_embd.rows(tokens).to(self.device.dtype)  # [B, T, E]
        for i, blk in enumerate(self.blocks):
            h = layer_norm(x, blk.attn_norm, a.norm_eps)
            q = plus(blk.wq(h), blk.bq).view(b, t, a.n_head, a.head_dim).transpose(1, 2)
            k = plus(blk.wk(h), blk.bk).view(b, t, a.n_head_kv, a.head_dim).transpose(1, 2)
            v = plus(blk.wv(h), blk.bv).view(b, t, a.n_head_kv, a.head_dim).transpose(1, 2)
            q = apply_rope(q, cos, sin, RopeStyle.NEOX)  # [B, H, T, D]
            k = apply_rope(k, cos, sin, RopeStyle.NEOX)  # [B, Hkv, T, D]
            x = x + plus(blk.wo(cached_attention(cache, i, q, k, v, mask, scale)), blk.bo)
            h = layer_norm(x, blk.ffn_norm, a.norm_eps)
            x = x + plus(blk.down(gelu_tanh(plus(blk.up(h), blk.b_up))), blk.b_down)
        cache.advance(t)
        if last_only:
            x = x[:, -1:]
        return self.output(layer_norm(x, self.output_norm, a.norm_eps)).float()
