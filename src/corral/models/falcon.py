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

import torch
import torch.nn.functional as F

from corral.engine.device import CPU, Device
from corral.engine.kv_cache import AttentionCache, KVCache
from corral.gguf.hparams import HParams
from corral.gguf.reader import GGUFFile
from corral.models.layers import (
    RopeStyle,
    apply_rope,
    cached_attention,
    default_scale,
    rope_cos_sin,
    rope_inv_freq,
)
from corral.models.weights import Linear, TensorSource

Norm = tuple[torch.Tensor, torch.Tensor | None]  # LayerNorm weight, optional bias


@dataclass(frozen=True)
class ModelArgs:
    n_layers: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    norm_eps: float
    rope_base: float
    context_length: int
    vocab_size: int

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> ModelArgs:
        hp = HParams(gguf.metadata, "falcon", gguf.path.name)
        n_embd = hp.int("embedding_length")
        n_head = hp.int("attention.head_count")
        return cls(
            n_layers=hp.int("block_count"),
            n_embd=n_embd,
            n_head=n_head,
            n_head_kv=hp.int("attention.head_count_kv", 1),
            head_dim=n_embd // n_head,
            norm_eps=hp.float("attention.layer_norm_epsilon", 1e-5),
            rope_base=hp.float("rope.freq_base", 10000.0),
            context_length=hp.int("context_length", 2048),
            vocab_size=len(gguf.get("tokenizer.ggml.tokens", [])) or hp.int("vocab_size"),
        )


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


def _plus(x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x if bias is None else x + bias


class Model:
    """A Falcon decoder built from GGUF tensors."""

    def __init__(self, args: ModelArgs, src: TensorSource) -> None:
        self.args = args
        self.device = src.device
        self.vocab_size = args.vocab_size
        self.context_length = args.context_length
        self.tok_embd = src.weight("token_embd.weight")
        self.output = src.weight("output.weight") if src.has("output.weight") else self.tok_embd
        self.output_norm = self._norm(src, "output_norm")
        self.inv_freq = rope_inv_freq(
            args.head_dim, args.rope_base, None, 1.0, self.device.torch_device
        )
        self.blocks = [self._block(src, i) for i in range(args.n_layers)]

    @classmethod
    def from_gguf(cls, gguf: GGUFFile, device: Device = CPU) -> Model:
        return cls(ModelArgs.from_gguf(gguf), TensorSource(gguf, device))

    @staticmethod
    def _norm(src: TensorSource, name: str) -> Norm:
        return src.vector(name + ".weight"), src.optional_vector(name + ".bias")

    @classmethod
    def _block(cls, src: TensorSource, i: int) -> Block:
        p = f"blk.{i}."
        return Block(
            attn_norm=cls._norm(src, p + "attn_norm"),
            attn_norm_2=cls._norm(src, p + "attn_norm_2")
            if src.has(p + "attn_norm_2.weight")
            else None,
            wqkv=src.weight(p + "attn_qkv.weight"),
            bqkv=src.optional_vector(p + "attn_qkv.bias"),
            wo=src.weight(p + "attn_output.weight"),
            bo=src.optional_vector(p + "attn_output.bias"),
            up=src.weight(p + "ffn_up.weight"),
            down=src.weight(p + "ffn_down.weight"),
        )

    def _ln(self, x: torch.Tensor, norm: Norm) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), norm[0], norm[1], self.args.norm_eps)

    def make_cache(self, max_len: int, batch: int = 1) -> KVCache:
        a, d = self.args, self.device
        kv_dtype = torch.float16 if d.is_cpu else d.dtype  # CPU: float16 as llama.cpp
        return KVCache(
            a.n_layers, a.n_head_kv, a.head_dim, max_len, batch, kv_dtype, device=d.torch_device
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
            h_ffn = self._ln(x, blk.attn_norm)
            h = h_ffn if blk.attn_norm_2 is None else self._ln(x, blk.attn_norm_2)
            q, k, v = _plus(blk.wqkv(h), blk.bqkv).split((n_q, n_kv, n_kv), dim=-1)
            q = q.reshape(b, t, a.n_head, a.head_dim).transpose(1, 2)  # [B, H, T, D]
            k = k.reshape(b, t, a.n_head_kv, a.head_dim).transpose(1, 2)  # [B, Hkv, T, D]
            v = v.reshape(b, t, a.n_head_kv, a.head_dim).transpose(1, 2)
            q = apply_rope(q, cos, sin, RopeStyle.NEOX)
            k = apply_rope(k, cos, sin, RopeStyle.NEOX)
            attn = _plus(blk.wo(cached_attention(cache, i, q, k, v, mask, scale)), blk.bo)
            x = x + attn + blk.down(F.gelu(blk.up(h_ffn)))
        cache.advance(t)
        if last_only:
            x = x[:, -1:]
        return self.output(self._ln(x, self.output_norm)).float()
