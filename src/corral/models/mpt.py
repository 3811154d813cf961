"""The mpt architecture (MosaicML MPT-7B/30B, Replit Code v1).

Pre-norm decoder with LayerNorms (bias-free in most checkpoints), one fused q|k|v matrix whose
outputs may be clamped (clip_qkv), ALiBi positions instead of rope (or learned position
embeddings when the file has them and no ALiBi), and a GELU MLP. The output head is the
embedding matrix. GELU is the exact (erf) one MPT trained with; llama.cpp uses its tanh
approximation here, a difference below 1e-3 per activation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from corral.engine.kv_cache import AttentionCache
from corral.gguf.hparams import HParams
from corral.gguf.reader import GGUFFile
from corral.models.alibi import alibi_attention, alibi_slopes
from corral.models.decoder import AttentionLM, LayerNormArgs, Norm, layer_norm, load_norm
from corral.models.layers import default_scale
from corral.models.weights import Linear, TensorSource


@dataclass(frozen=True)
class ModelArgs(LayerNormArgs):
    clamp_kqv: float | None
    max_alibi_bias: float

    @classmethod
    def read(cls, hp: HParams, gguf: GGUFFile) -> dict[str, Any]:
        return super().read(hp, gguf) | {
            "clamp_kqv": hp.float("attention.clamp_kqv", None),
            "max_alibi_bias": hp.float("attention.max_alibi_bias", 8.0),
        }


@dataclass
class Block:
    attn_norm: Norm
    wqkv: Linear  # [q | k | v] rows
    wo: Linear
    ffn_norm: Norm
    up: Linear
    down: Linear


class Model(AttentionLM[ModelArgs]):
    """An MPT decoder built from GGUF tensors."""

    args_class = ModelArgs

    def __init__(self, args: ModelArgs, src: TensorSource) -> None:
        super().__init__(args, src)
        self.pos_embd = (
            src.weight("position_embd.weight") if src.has("position_embd.weight") else None
        )
        self.output = self.tied_output(src)
        self.output_norm = load_norm(src, "output_norm")
        self.slopes = alibi_slopes(args.n_head, args.max_alibi_bias)
        self.blocks = [self._block(src, i) for i in range(args.n_layers)]

    @staticmethod
    def _block(src: TensorSource, i: int) -> Block:
        p = f"blk.{i}."
        return Block(
            attn_norm=load_norm(src, p + "attn_norm"),
            wqkv=src.weight(p + "attn_qkv.weight"),
            wo=src.weight(p + "attn_output.weight"),
            ffn_norm=load_norm(src, p + "ffn_norm"),
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
        mask = cache.mask(t, None)
        scale = default_scale(a.head_dim)
        n_q, n_kv = a.n_head * a.head_dim, a.n_head_kv * a.head_dim
        x = self.tok_embd.rows(tokens).to(self.device.dtype)  # [B, T, E]
        if self.pos_embd is not None:
            x = x + self.pos_embd.rows(cache.positions(t)).to(x.dtype)
        for i, blk in enumerate(self.blocks):
            h = layer_norm(x, blk.attn_norm, a.norm_eps)
            qkv = blk.wqkv(h)
            if a.clamp_kqv is not None:
                qkv = qkv.clamp(-a.clamp_kqv, a.clamp_kqv)
            q, k, v = qkv.split((n_q, n_kv, n_kv), dim=-1)
            q = q.reshape(b, t, a.n_head, a.head_dim).transpose(1, 2)  # [B, H, T, D]
            k = k.reshape(b, t, a.n_head_kv, a.head_dim).transpose(1, 2)  # [B, Hkv, T, D]
            v = v.reshape(b, t, a.n_head_kv, a.head_dim).transpose(1, 2)
            k, v = cache.update_and_fetch(i, k, v)
            x = x + blk.wo(alibi_attention(q, k, v, mask, scale, self.slopes))
            h = layer_norm(x, blk.ffn_norm, a.norm_eps)
            x = x + blk.down(F.gelu(blk.up(h)))
        cache.advance(t)
        if last_only:
            x = x[:, -1:]
        return self.output(layer_norm(x, self.output_norm, a.norm_eps)).float()
