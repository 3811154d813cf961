"""The llama architecture: Llama 1/2/3, Mistral (sliding window), TinyLlama, SmolLM2,
CodeLlama, Vicuna, Zephyr, OpenHermes... all one network with different hyper-parameters.

Pre-norm decoder: RMSNorm -> attention (RoPE, GQA) -> residual; RMSNorm -> SwiGLU -> residual.
GGUF stores q/k rows permuted for llama.cpp's adjacent-pair rope, so we rotate pairs (NORM).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from corral.engine.kv_cache import AttentionCache
from corral.gguf.hparams import HParams
from corral.gguf.reader import GGUFFile
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
from corral.models.weights import TensorSource, project


@dataclass(frozen=True)
class ModelArgs(RmsRopeArgs):
    n_ff: int
    rope_dim: int
    sliding_window: int | None

    CONTEXT_LENGTH: ClassVar[int] = 2048
    RMS_EPS: ClassVar[float] = 1e-5
    VOCAB_FROM_METADATA: ClassVar[bool] = True

    @classmethod
    def read(cls, hp: HParams, gguf: GGUFFile) -> dict[str, Any]:
        base = super().read(hp, gguf)
        return base | {
            "n_ff": hp.int("feed_forward_length"),
            "rope_dim": hp.int("rope.dimension_count", base["head_dim"]),
            "sliding_window": hp.int("attention.sliding_window", 0) or None,
        }


@dataclass
class Block(GluBlock):
    bq: torch.Tensor | None
    bk: torch.Tensor | None
    bv: torch.Tensor | None

    @classmethod
    def tensors(cls, src: TensorSource, p: str) -> dict[str, Any]:
        return super().tensors(src, p) | {
            "bq": src.optional_vector(p + "attn_q.bias"),
            "bk": src.optional_vector(p + "attn_k.bias"),
            "bv": src.optional_vector(p + "attn_v.bias"),
        }


class Model(RopeDecoder[ModelArgs]):
    """A llama-family decoder built from GGUF tensors (names used as the file has them)."""

    args_class = ModelArgs

    def __init__(self, args: ModelArgs, src: TensorSource) -> None:
        super().__init__(args, src)
        # tied output head when the file has no separate one (SmolLM2, TinyLlama variants)
        self.output = self.tied_output(src)
        self.output_norm = src.vector("output_norm.weight")
        freq_factors = src.optional_vector("rope_freqs.weight")
        self.inv_freq = rope_inv_freq(
            args.rope_dim, args.rope_base, freq_factors, args.rope_scale, self.device.torch_device
        )
        self.blocks = [Block.load(src, i) for i in range(args.n_layers)]
        # decode steps (a few new tokens) in one C call where the weights allow (None: always
        # the loop below)
        self.fused = FusedDecode.build(
            self.blocks, self.device.torch_device.type, self.device.dtype, args.n_head,
            args.n_head_kv, args.head_dim, args.rope_dim, False, args.rms_eps,
            args.sliding_window,
        )  # fmt: skip

    def _blocks(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: AttentionCache,
        last_only: bool = False,
    ) -> torch.Tensor:  # fmt: skip
        """The eager block loop: x [B, T, E] -> [B, T, E], writing the new keys/values."""
        a = self.args
        b, t, _ = x.shape
        mask = cache.mask(t, a.sliding_window)
        scale = default_scale(a.head_dim)
        for i, blk in enumerate(self.blocks):
            h = rms_norm(x, blk.attn_norm, a.rms_eps)
            q, k, v = project(h, blk.wq, blk.wk, blk.wv)
            if blk.bq is not None:
                q = q + blk.bq
            if blk.bk is not None:
                k = k + blk.bk
            if blk.bv is not None:
                v = v + blk.bv
            q = q.view(b, t, a.n_head, a.head_dim).transpose(1, 2)  # [B, H, T, D]
            k = k.view(b, t, a.n_head_kv, a.head_dim).transpose(1, 2)  # [B, Hkv, T, D]
            v = v.view(b, t, a.n_head_kv, a.head_dim).transpose(1, 2)
            q = apply_rope(q, cos, sin, RopeStyle.NORM)
            k = apply_rope(k, cos, sin, RopeStyle.NORM)
            x = x + blk.wo(cached_attention(cache, i, q, k, v, mask, scale, a.sliding_window))
            x = last_rows(x, last_only and i == len(self.blocks) - 1)
            h = rms_norm(x, blk.ffn_norm, a.rms_eps)
            g, u = project(h, blk.gate, blk.up)
            x = x + blk.down(swiglu(g, u))
        return x
