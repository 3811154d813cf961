"""The starcoder2 architecture (StarCoder2 3B/7B/15B code models).

Pre-norm decoder with LayerNorm (weight and bias), biased q/k/v/o projections, GQA, NEOX rope
over the whole head, and a plain two-matrix GELU(tanh) MLP with biases. The output head is
usually tied to the embeddings.
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
    gelu_tanh,
    rope_cos_sin,
    rope_inv_freq,
)
from corral.models.weights import Linear, TensorSource


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
        hp = HParams(gguf.metadata, "starcoder2", gguf.path.name)
        n_embd = hp.int("embedding_length")
        n_head = hp.int("attention.head_count")
        return cls(
            n_layers=hp.int("block_count"),
            n_embd=n_embd,
            n_head=n_head,
            n_head_kv=hp.int("attention.head_count_kv", n_head),
            head_dim=n_embd // n_head,
            norm_eps=hp.float("attention.layer_norm_epsilon", 1e-5),
            rope_base=hp.float("rope.freq_base", 10000.0),
            context_length=hp.int("context_length", 16384),
            vocab_size=len(gguf.get("tokenizer.ggml.tokens", [])) or hp.int("vocab_size"),
        )


@dataclass
class Block:
    attn_norm: tuple[torch.Tensor, torch.Tensor | None]  # weight, bias
    wq: Linear
    wk: Linear
    wv: Linear
    wo: Linear
    bq: torch.Tensor | None
    bk: torch.Tensor | None
    bv: torch.Tensor | None
    bo: torch.Tensor | None
    ffn_norm: tuple[torch.Tensor, torch.Tensor | None]
    up: Linear
    b_up: torch.Tensor | None
    down: Linear
    b_down: torch.Tensor | None


def _plus(x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x if bias is None else x + bias


class Model:
    """A StarCoder2 decoder built from GGUF tensors."""

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
    def _norm(src: TensorSource, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        return src.vector(name + ".weight"), src.optional_vector(name + ".bias")

    @classmethod
    def _block(cls, src: TensorSource, i: int) -> Block:
        p = f"blk.{i}."
        return Block(
            attn_norm=cls._norm(src, p + "attn_norm"),
            wq=src.weight(p + "attn_q.weight"),
            wk=src.weight(p + "attn_k.weight"),
            wv=src.weight(p + "attn_v.weight"),
            wo=src.weight(p + "attn_output.weight"),
            bq=src.optional_vector(p + "attn_q.bias"),
            bk=src.optional_vector(p + "attn_k.bias"),
            bv=src.optional_vector(p + "attn_v.bias"),
            bo=src.optional_vector(p + "attn_output.bias"),
            ffn_norm=cls._norm(src, p + "ffn_norm"),
            up=src.weight(p + "ffn_up.weight"),
            b_up=src.optional_vector(p + "ffn_up.bias"),
            down=src.weight(p + "ffn_down.weight"),
            b_down=src.optional_vector(p + "ffn_down.bias"),
        )

    def _layer_norm(
        self, x: torch.Tensor, wb: tuple[torch.Tensor, torch.Tensor | None]
    ) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), wb[0], wb[1], self.args.norm_eps)

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
        x = self.tok_embd.rows(tokens).to(self.device.dtype)  # [B, T, E]
        for i, blk in enumerate(self.blocks):
            h = self._layer_norm(x, blk.attn_norm)
            q = _plus(blk.wq(h), blk.bq).view(b, t, a.n_head, a.head_dim).transpose(1, 2)
            k = _plus(blk.wk(h), blk.bk).view(b, t, a.n_head_kv, a.head_dim).transpose(1, 2)
            v = _plus(blk.wv(h), blk.bv).view(b, t, a.n_head_kv, a.head_dim).transpose(1, 2)
            q = apply_rope(q, cos, sin, RopeStyle.NEOX)  # [B, H, T, D]
            k = apply_rope(k, cos, sin, RopeStyle.NEOX)  # [B, Hkv, T, D]
            x = x + _plus(blk.wo(cached_attention(cache, i, q, k, v, mask, scale)), blk.bo)
            h = self._layer_norm(x, blk.ffn_norm)
            x = x + _plus(blk.down(gelu_tanh(_plus(blk.up(h), blk.b_up))), blk.b_down)
        cache.advance(t)
        if last_only:
            x = x[:, -1:]
        return self.output(self._layer_norm(x, self.output_norm)).float()
