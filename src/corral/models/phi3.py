"""The phi3 architecture (Phi-3 mini/medium, Phi-3.5 mini, Phi-4).

A llama-like pre-norm decoder whose projections are fused as Microsoft trained them: one
matrix makes q, k and v ([q | k | v] rows), one makes the SwiGLU gate and up halves
([gate | up] rows). Rope is NEOX over `rope.dimension_count` dims; Phi-3 attends within a
sliding window (Phi-4 files say 0: no window). LongRoPE files (the 128k models) carry
per-frequency divisors; we use the short ones (contexts up to the original length) and
scale cos/sin by the file's attention factor, as llama.cpp does at such contexts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from corral.engine.kv_cache import AttentionCache
from corral.gguf.hparams import HParams
from corral.gguf.reader import GGUFFile
from corral.models.decoder import AttentionLM, DecoderArgs
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
from corral.models.weights import Linear, TensorSource


@dataclass(frozen=True)
class ModelArgs(DecoderArgs):
    n_ff: int
    rope_dim: int
    rms_eps: float
    rope_base: float
    rope_attn_factor: float  # LongRoPE's cos/sin scale (1 elsewhere)
    sliding_window: int | None

    CONTEXT_LENGTH: ClassVar[int] = 4096
    HEAD_DIM_FROM_KEY_LENGTH: ClassVar[bool] = False

    @classmethod
    def read(cls, hp: HParams, gguf: GGUFFile) -> dict[str, Any]:
        base = super().read(hp, gguf)
        return base | {
            "n_ff": hp.int("feed_forward_length"),
            "rope_dim": hp.int("rope.dimension_count", base["head_dim"]),
            "rms_eps": hp.float("attention.layer_norm_rms_epsilon", 1e-5),
            "rope_base": hp.float("rope.freq_base", 10000.0),
            "rope_attn_factor": hp.float("rope.scaling.attn_factor", 1.0),
            "sliding_window": hp.int("attention.sliding_window", 0) or None,
        }


@dataclass
class Block:
    attn_norm: torch.Tensor
    wqkv: Linear  # [q | k | v] rows
    wo: Linear
    ffn_norm: torch.Tensor
    gate_up: Linear  # [gate | up] rows
    down: Linear


class Model(AttentionLM[ModelArgs]):
    """A Phi-3 decoder built from GGUF tensors."""

    args_class = ModelArgs

    def __init__(self, args: ModelArgs, src: TensorSource) -> None:
        super().__init__(args, src)
        self.output = self.tied_output(src)
        self.output_norm = src.vector("output_norm.weight")
        factors = src.optional_vector("rope_factors_short.weight")
        self.inv_freq = rope_inv_freq(
            args.rope_dim, args.rope_base, factors, 1.0, self.device.torch_device
        )
        self.blocks = [self._block(src, i) for i in range(args.n_layers)]

    @staticmethod
    def _block(src: TensorSource, i: int) -> Block:
        p = f"blk.{i}."
        return Block(
            attn_norm=src.vector(p + "attn_norm.weight"),
            wqkv=src.weight(p + "attn_qkv.weight"),
            wo=src.weight(p + "attn_output.weight"),
            ffn_norm=src.vector(p + "ffn_norm.weight"),
            gate_up=src.weight(p + "ffn_up.weight"),
            down=src.weight(p + "ffn_down.weight"),
        )

    @torch.inference_mode()
    def forward(
        self, tokens: torch.Tensor, cache: AttentionCache, last_only: bool = False
    ) -> torch.Tensor:
        a = self.args
        tokens = tokens.to(self.device.torch_device)
        b, t = tokens.shape
        cos, sin = rope_cos_sin(self.inv_freq, cache.positions(t))  # [B, 1, T, R/2]
        if a.rope_attn_factor != 1.0:
            cos, sin = cos * a.rope_attn_factor, sin * a.rope_attn_factor
        mask = cache.mask(t, a.sliding_window)
        scale = default_scale(a.head_dim)
        n_q, n_kv = a.n_head * a.head_dim, a.n_head_kv * a.head_dim
        x = self.tok_embd.rows(tokens).to(self.device.dtype)  # [B, T, E]
        for i, blk in enumerate(self.blocks):
            h = rms_norm(x, blk.attn_norm, a.rms_eps)
            q, k, v = blk.wqkv(h).split((n_q, n_kv, n_kv), dim=-1)
            q = q.reshape(b, t, a.n_head, a.head_dim).transpose(1, 2)  # [B, H, T, D]
            k = k.reshape(b, t, a.n_head_kv, a.head_dim).transpose(1, 2)  # [B, Hkv, T, D]
            v = v.reshape(b, t, a.n_head_kv, a.head_dim).transpose(1, 2)
            q = apply_rope(q, cos, sin, RopeStyle.NEOX)
            k = apply_rope(k, cos, sin, RopeStyle.NEOX)
            x = x + blk.wo(cached_attention(cache, i, q, k, v, mask, scale, a.sliding_window))
            h = rms_norm(x, blk.ffn_norm, a.rms_eps)
            gate, up = blk.gate_up(h).chunk(2, dim=-1)
            x = x + blk.down(swiglu(gate, up))
        cache.advance(t)
        if last_only:
            x = x[:, -1:]
        return self.output(rms_norm(x, self.output_norm, a.rms_eps)).float()
