"""The bloom architecture (BLOOM, BLOOMZ).

Pre-norm decoder with LayerNorms (weight and bias) everywhere, including one right after the
token embeddings; fused q|k|v projection with biases; ALiBi positions (max bias 8, no rope);
GELU(tanh) MLP with biases. The output head is the embedding matrix (written out again by
the converter, as llama.cpp wants it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from corral.engine.kv_cache import AttentionCache
from corral.models.alibi import alibi_attention, alibi_slopes
from corral.models.decoder import AttentionLM, LayerNormArgs, Norm, layer_norm, load_norm
from corral.models.layers import default_scale, gelu_tanh
from corral.models.weights import Linear, TensorSource

# llama.cpp fixes BLOOM's ALiBi maximum bias at 8 (it is not in the file).
_MAX_ALIBI_BIAS = 8.0


@dataclass(frozen=True)
class ModelArgs(LayerNormArgs):
    """LayerNormArgs as they are: BLOOM has no hyper-parameters of its own."""


@dataclass
class Block:
    attn_norm: Norm
    wqkv: Linear  # [q | k | v] rows
    bqkv: torch.Tensor
    wo: Linear
    bo: torch.Tensor
    ffn_norm: Norm
    up: Linear
    b_up: torch.Tensor
    down: Linear
    b_down: torch.Tensor


class Model(AttentionLM[ModelArgs]):
    """A BLOOM decoder built from GGUF tensors."""

    args_class = ModelArgs

    def __init__(self, args: ModelArgs, src: TensorSource) -> None:
        super().__init__(args, src)
        self.tok_embd_norm = load_norm(src, "token_embd_norm", optional_bias=False)
        self.output = self.tied_output(src)
        self.output_norm = load_norm(src, "output_norm", optional_bias=False)
        self.slopes = alibi_slopes(args.n_head, _MAX_ALIBI_BIAS)
        self.blocks = [self._block(src, i) for i in range(args.n_layers)]

    @staticmethod
    def _block(src: TensorSource, i: int) -> Block:
        p = f"blk.{i}."
        return Block(
            attn_norm=load_norm(src, p + "attn_norm", optional_bias=False),
            wqkv=src.weight(p + "attn_qkv.weight"),
            bqkv=src.vector(p + "attn_qkv.bias"),
            wo=src.weight(p + "attn_output.weight"),
            bo=src.vector(p + "attn_output.bias"),
            ffn_norm=load_norm(src, p + "ffn_norm", optional_bias=False),
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
        mask = cache.mask(t, None)
        scale = default_scale(a.head_dim)
        x = self.tok_embd.rows(tokens).to(self.device.dtype)  # [B, T, E]
        x = layer_norm(x, self.tok_embd_norm, a.norm_eps)
        for i, blk in enumerate(self.blocks):
            h = layer_norm(x, blk.attn_norm, a.norm_eps)
            q, k, v = (blk.wqkv(h) + blk.bqkv).view(b, t, 3, a.n_head, a.head_dim).unbind(2)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, D]
            k, v = cache.update_and_fetch(i, k, v)
            x = x + blk.wo(alibi_attention(q, k, v, mask, scale, self.slopes)) + blk.bo
            h = layer_norm(x, blk.ffn_norm, a.norm_eps)
            x = x + blk.down(gelu_tanh(blk.up(h) + blk.b_up)) + blk.b_down
        cache.advance(t)
        if last_only:
            x = x[:, -1:]
        return self.output(layer_norm(x, self.output_norm, a.norm_eps)).float()
