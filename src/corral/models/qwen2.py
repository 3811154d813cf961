"""The qwen2 architecture (Qwen1.5, Qwen2, Qwen2.5 and their coders).

Llama's pre-norm SwiGLU decoder with two differences: q/k/v projections carry biases, and
rope rotates the first half of each head against the second (NEOX; GGUF keeps HF's row
order for this architecture, so nothing is permuted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from corral.engine.kv_cache import AttentionCache
from corral.models.decoder import GluBlock, RmsRopeArgs, RopeDecoder
from corral.models.fused import FusedDecode
from corral.models.layers import (
    RopeStyle,
    apply_rope,
    cached_attention,
    default_scale,
    last_rows,
    rms_norm,
    rope_inv_freq,
    swiglu,
)
from corral.models.weights import TensorSource


@dataclass(frozen=True)
class ModelArgs(RmsRopeArgs):
    """The llama family's hyper-parameters; RmsRopeArgs' defaults are Qwen's."""


@dataclass
class Block(GluBlock):
    bq: torch.Tensor
    bk: torch.Tensor
    bv: torch.Tensor

    @classmethod
    def tensors(cls, src: TensorSource, p: str) -> dict[str, Any]:
        return super().tensors(src, p) | {
            "bq": src.vector(p + "attn_q.bias"),
            "bk": src.vector(p + "attn_k.bias"),
            "bv": src.vector(p + "attn_v.bias"),
        }


class Model(RopeDecoder[ModelArgs]):
    """A Qwen2 decoder built from GGUF tensors."""

    args_class = ModelArgs

    def __init__(self, args: ModelArgs, src: TensorSource) -> None:
        super().__init__(args, src)
        # small Qwen2 models tie the output head to the embeddings
        self.output = self.tied_output(src)
        self.output_norm = src.vector("output_norm.weight")
        self.inv_freq = rope_inv_freq(
            args.head_dim, args.rope_base, None, args.rope_scale, self.device.torch_device
        )
        self.blocks = [Block.load(src, i) for i in range(args.n_layers)]
        # decode steps (a few new tokens) in one C call where the weights allow (None: always
        # the loop below)
        self.fused = FusedDecode.build(
            self.blocks, self.device.torch_device.type, self.device.dtype, args.n_head,
            args.n_head_kv, args.head_dim, args.head_dim, True, args.rms_eps, None,
        )  # fmt: skip

    def _blocks(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: AttentionCache,
        last_only: bool = False,
    ) -> torch.Tensor:  # fmt: skip
        """The eager block loop: x [B, T, E] -> [B, T, E], writing the new keys/values."""
        a = self.args
        b, t, _ = x.shape
        mask = cache.mask(t, None)
        scale = default_scale(a.head_dim)
        for i, blk in enumerate(self.blocks):
            h = rms_norm(x, blk.attn_norm, a.rms_eps)
            q = (blk.wq(h) + blk.bq).view(b, t, a.n_head, a.head_dim).transpose(1, 2)
            k = (blk.wk(h) + blk.bk).view(b, t, a.n_head_kv, a.head_dim).transpose(1, 2)
            v = (blk.wv(h) + blk.bv).view(b, t, a.n_head_kv, a.head_dim).transpose(1, 2)
            q = apply_rope(q, cos, sin, RopeStyle.NEOX)  # [B, H, T, D]
            k = apply_rope(k, cos, sin, RopeStyle.NEOX)  # [B, Hkv, T, D]
            x = x + blk.wo(cached_attention(cache, i, q, k, v, mask, scale))
            x = last_rows(x, last_only and i == len(self.blocks) - 1)
            h = rms_norm(x, blk.ffn_norm, a.rms_eps)
            x = x + blk.down(swiglu(blk.gate(h), blk.up(h)))
        return x
