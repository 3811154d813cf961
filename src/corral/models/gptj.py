"""The gptj architecture (GPT-J 6B, Dolly v1, GPT4All-J).

Parallel block: one LayerNorm feeds both attention and the MLP, whose outputs add into the
residual stream together. Rope on the first `rope.dimension_count` dims of each head,
rotating adjacent pairs (GPT-J's rotate_every_two, llama.cpp's NORM style; no permutation).
No biases on q/k/v/o; GELU(tanh) MLP with biases; the output head has a bias.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from corral.engine.kv_cache import AttentionCache
from corral.gguf.hparams import HParams
from corral.gguf.reader import GGUFFile
from corral.models.decoder import AttentionLM, LayerNormArgs, Norm, layer_norm, load_norm
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
    rope_dim: int
    rope_base: float

    @classmethod
    def read(cls, hp: HParams, gguf: GGUFFile) -> dict[str, Any]:
        base = super().read(hp, gguf)
        return base | {
            "rope_dim": hp.int("rope.dimension_count", base["head_dim"]),
            "rope_base": hp.float("rope.freq_base", 10000.0),
        }


@dataclass
class Block:
    attn_norm: Norm
    wq: Linear
    wk: Linear
    wv: Linear
    wo: Linear
    up: Linear
    b_up: torch.Tensor
    down: Linear
    b_down: torch.Tensor


class Model(AttentionLM[ModelArgs]):
    """A GPT-J decoder built from GGUF tensors."""

    args_class = ModelArgs

    def __init__(self, args: ModelArgs, src: TensorSource) -> None:
        super().__init__(args, src)
        self.output = src.weight("output.weight")
        self.output_bias = src.optional_vector("output.bias")
        self.output_norm = load_norm(src, "output_norm", optional_bias=False)
        self.inv_freq = rope_inv_freq(
            args.rope_dim, args.rope_base, None, 1.0, self.device.torch_device
        )
        self.blocks = [self._block(src, i) for i in range(args.n_layers)]

    @staticmethod
    def _block(src: TensorSource, i: int) -> Block:
        p = f"blk.{i}."
        return Block(
            attn_norm=load_norm(src, p + "attn_norm", optional_bias=False),
            wq=src.weight(p + "attn_q.weight"),
            wk=src.weight(p + "attn_k.weight"),
            wv=src.weight(p + "attn_v.weight"),
            wo=src.weight(p + "attn_output.weight"),
            up=src.weight(p + "ffn_up.weight"),
            b_up=src.vector(p + "ffn_up.bias"),
            down=src.weight(p + "ffn_down.weight"),
            b_down=src.vector(p + "ffn_down.bias"),
        )

    @torch.inference_mode()
    def forward(
        self, tokens: torch.Tensor, cache: AttentionCache, last_only: bool = False
    ) -> torch.Tensor:
        a = self.args
        tokens = tokens.to(self.device.torch_device)
        b, t = tokens.shape
        cos, sin = rope_cos_sin(self.inv_freq, cache.positions(t))  # [B, 1, T, R/2]
        mask = cache.mask(t, None)
        scale = default_scale(a.head_dim)
        x = self.tok_embd.rows(tokens).to(self.device.dtype)  # [B, T, E]
        for i, blk in enumerate(self.blocks):
            h = layer_norm(x, blk.attn_norm, a.norm_eps)
            q = blk.wq(h).view(b, t, a.n_head, a.head_dim).transpose(1, 2)  # [B, H, T, D]
            k = blk.wk(h).view(b, t, a.n_head, a.head_dim).transpose(1, 2)
            v = blk.wv(h).view(b, t, a.n_head, a.head_dim).transpose(1, 2)
            q = apply_rope(q, cos, sin, RopeStyle.NORM)
            k = apply_rope(k, cos, sin, RopeStyle.NORM)
            attn = blk.wo(cached_attention(cache, i, q, k, v, mask, scale))
            x = x + attn + blk.down(gelu_tanh(blk.up(h) + blk.b_up)) + blk.b_down
        cache.advance(t)
        if last_only:
            x = x[:, -1:]
        logits = self.output(layer_norm(x, self.output_norm, a.norm_eps))
        if self.output_bias is not None:
            logits = logits + self.output_bias
        return logits.float()
