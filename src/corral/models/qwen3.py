"""The qwen3 architecture (Qwen3 dense models).

Qwen2 without the q/k/v biases and with an RMSNorm over each head of the queries and keys
before rope (NEOX). The head width is its own hyper-parameter (key_length), not E / H.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from corral.engine.kv_cache import AttentionCache
from corral.models.decoder import AttentionLM, GluBlock, RmsRopeArgs
from corral.models.layers import (
    RopeStyle,
    apply_rope,
    cached_attention,
    default_scale,
    rms_norm,
    rope_cos_sin,
    rope_inv_freq,
    swiglu,
)
from corral.models.weights import TensorSource


@dataclass(frozen=True)
class ModelArgs(RmsRopeArgs):
    """The llama family's hyper-parameters; RmsRopeArgs' defaults are Qwen's."""


@dataclass
class Block(GluBlock):
    q_norm: torch.Tensor
    k_norm: torch.Tensor

    @classmethod
    def tensors(cls, src: TensorSource, p: str) -> dict[str, Any]:
        return super().tensors(src, p) | {
            "q_norm": src.vector(p + "attn_q_norm.weight"),
            "k_norm": src.vector(p + "attn_k_norm.weight"),
        }


class Model(AttentionLM[ModelArgs]):
    """A Qwen3 decoder built from GGUF tensors."""

    args_class = ModelArgs

    def __init__(self, args: ModelArgs, src: TensorSource) -> None:
        super().__init__(args, src)
        # small Qwen3 models tie the output head to the embeddings
        self.output = self.tied_output(src)
        self.output_norm = src.vector("output_norm.weight")
        self.inv_freq = rope_inv_freq(
            args.head_dim, args.rope_base, None, args.rope_scale, self.device.torch_device
        )
        self.blocks = [Block.load(src, i) for i in range(args.n_layers)]

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
            h = rms_norm(x, blk.attn_norm, a.rms_eps)
            q = blk.wq(h).view(b, t, a.n_head, a.head_dim).transpose(1, 2)  # [B, H, T, D]
            k = blk.wk(h).view(b, t, a.n_head_kv, a.head_dim).transpose(1, 2)  # [B, Hkv, T, D]
            v = blk.wv(h).view(b, t, a.n_head_kv, a.head_dim).transpose(1, 2)
            q = apply_rope(rms_norm(q, blk.q_norm, a.rms_eps), cos, sin, RopeStyle.NEOX)
            k = apply_rope(rms_norm(k, blk.k_norm, a.rms_eps), cos, sin, RopeStyle.NEOX)
            x = x + blk.wo(cached_attention(cache, i, q, k, v, mask, scale))
            h = rms_norm(x, blk.ffn_norm, a.rms_eps)
            x = x + blk.down(swiglu(blk.gate(h), blk.up(h)))
        cache.advance(t)
        if last_only:
            x = x[:, -1:]
        return self.output(rms_norm(x, self.output_norm, a.rms_eps)).float()
