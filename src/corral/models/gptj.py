"""The gptj architecture (GPT-J 6B, Dolly v1, GPT4All-J).

Parallel block: one LayerNorm feeds both attention and the MLP, whose outputs add into the
residual stream together. Rope on the first `rope.dimension_count` dims of each head,
rotating adjacent pairs (GPT-J's rotate_every_two, llama.cpp's NORM style; no permutation).
No biases on q/k/v/o; GELU(tanh) MLP with biases; the output head has a bias.
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

Norm = tuple[torch.Tensor, torch.Tensor]  # LayerNorm weight, bias


@dataclass(frozen=True)
class ModelArgs:
    n_layers: int
    n_embd: int
    n_head: int
    head_dim: int
    rope_dim: int
    norm_eps: float
    rope_base: float
    context_length: int
    vocab_size: int

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> ModelArgs:
        hp = HParams(gguf.metadata, "gptj", gguf.path.name)
        n_embd = hp.int("embedding_length")
        n_head = hp.int("attention.head_count")
        head_dim = n_embd // n_head
        return cls(
            n_layers=hp.int("block_count"),
            n_embd=n_embd,
            n_head=n_head,
            head_dim=head_dim,
            rope_dim=hp.int("rope.dimension_count", head_dim),
            norm_eps=hp.float("attention.layer_norm_epsilon", 1e-5),
            rope_base=hp.float("rope.freq_base", 10000.0),
            context_length=hp.int("context_length", 2048),
            vocab_size=len(gguf.get("tokenizer.ggml.tokens", [])) or hp.int("vocab_size"),
        )


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


class Model:
    """A GPT-J decoder built from GGUF tensors."""

    def __init__(self, args: ModelArgs, src: TensorSource) -> None:
        self.args = args
        self.device = src.device
        self.vocab_size = args.vocab_size
        self.context_length = args.context_length
        self.tok_embd = src.weight("token_embd.weight")
        self.output = src.weight("output.weight")
        self.output_bias = src.optional_vector("output.bias")
        self.output_norm = (src.vector("output_norm.weight"), src.vector("output_norm.bias"))
        self.inv_freq = rope_inv_freq(
            args.rope_dim, args.rope_base, None, 1.0, self.device.torch_device
        )
        self.blocks = [self._block(src, i) for i in range(args.n_layers)]

    @classmethod
    def from_gguf(cls, gguf: GGUFFile, device: Device = CPU) -> Model:
        return cls(ModelArgs.from_gguf(gguf), TensorSource(gguf, device))

    @staticmethod
    def _block(src: TensorSource, i: int) -> Block:
        p = f"blk.{i}."
        return Block(
            attn_norm=(src.vector(p + "attn_norm.weight"), src.vector(p + "attn_norm.bias")),
            wq=src.weight(p + "attn_q.weight"),
            wk=src.weight(p + "attn_k.weight"),
            wv=src.weight(p + "attn_v.weight"),
            wo=src.weight(p + "attn_output.weight"),
            up=src.weight(p + "ffn_up.weight"),
            b_up=src.vector(p + "ffn_up.bias"),
            down=src.weight(p + "ffn_down.weight"),
            b_down=src.vector(p + "ffn_down.bias"),
        )

    def _ln(self, x: torch.Tensor, norm: Norm) -> torch.Tensor:
        return F.layer_norm(x, (x.shape[-1],), norm[0], norm[1], self.args.norm_eps)

    def make_cache(self, max_len: int, batch: int = 1) -> KVCache:
        a, d = self.args, self.device
        kv_dtype = torch.float16 if d.is_cpu else d.dtype  # CPU: float16 as llama.cpp
        return KVCache(
            a.n_layers, a.n_head, a.head_dim, max_len, batch, kv_dtype, device=d.torch_device
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
            h = self._ln(x, blk.attn_norm)
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
        logits = self.output(self._ln(x, self.output_norm))
        if self.output_bias is not None:
            logits = logits + self.output_bias
        return logits.float()
