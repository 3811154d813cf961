"""The qwen3 architecture (Qwen3 dense models).

Qwen2 without the q/k/v biases and with an RMSNorm over each head of the queries and keys
before rope (NEOX). The head width is its own hyper-parameter (key_length), not E / H.
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
    rms_norm,
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
    rms_eps: float
    rope_base: float
    rope_scale: float  # linear scaling: positions are multiplied by this
    context_length: int
    vocab_size: int

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> ModelArgs:
        hp = HParams(gguf.metadata, gguf.architecture, gguf.path.name)
        n_embd = hp.int("embedding_length")
        n_head = hp.int("attention.head_count")
        scaling = hp.str("rope.scaling.type", "none")
        factor = hp.float("rope.scaling.factor", 1.0) or 1.0
        return cls(
            n_layers=hp.int("block_count"),
            n_embd=n_embd,
            n_head=n_head,
            n_head_kv=hp.int("attention.head_count_kv", n_head),
            head_dim=hp.int("attention.key_length", n_embd // n_head),
            rms_eps=hp.float("attention.layer_norm_rms_epsilon", 1e-6),
            rope_base=hp.float("rope.freq_base", 10000.0),
            rope_scale=1.0 / factor if scaling == "linear" else 1.0,
            context_length=hp.int("context_length", 32768),
            vocab_size=len(gguf.get("tokenizer.ggml.tokens", [])) or hp.int("vocab_size"),
        )


@dataclass
class Block:
    attn_norm: torch.Tensor
    wq: Linear
    wk: Linear
    wv: Linear
    wo: Linear
    q_norm: torch.Tensor
    k_norm: torch.Tensor
    ffn_norm: torch.Tensor
    gate: Linear
    up: Linear
    down: Linear


class Model:
    """A Qwen3 decoder built from GGUF tensors."""

    def __init__(self, args: ModelArgs, src: TensorSource) -> None:
        self.args = args
        self.device = src.device
        self.vocab_size = args.vocab_size
        self.context_length = args.context_length
        self.tok_embd = src.weight("token_embd.weight")
        # small Qwen3 models tie the output head to the embeddings
        self.output = src.weight("output.weight") if src.has("output.weight") else self.tok_embd
        self.output_norm = src.vector("output_norm.weight")
        self.inv_freq = rope_inv_freq(
            args.head_dim, args.rope_base, None, args.rope_scale, self.device.torch_device
        )
        self.blocks = [self._block(src, i) for i in range(args.n_layers)]

    @classmethod
    def from_gguf(cls, gguf: GGUFFile, device: Device = CPU) -> Model:
        return cls(ModelArgs.from_gguf(gguf), TensorSource(gguf, device))

    @staticmethod
    def _block(src: TensorSource, i: int) -> Block:
        p = f"blk.{i}."
        return Block(
            attn_norm=src.vector(p + "attn_norm.weight"),
            wq=src.weight(p + "attn_q.weight"),
            wk=src.weight(p + "attn_k.weight"),
            wv=src.weight(p + "attn_v.weight"),
            wo=src.weight(p + "attn_output.weight"),
            q_norm=src.vector(p + "attn_q_norm.weight"),
            k_norm=src.vector(p + "attn_k_norm.weight"),
            ffn_norm=src.vector(p + "ffn_norm.weight"),
            gate=src.weight(p + "ffn_gate.weight"),
            up=src.weight(p + "ffn_up.weight"),
            down=src.weight(p + "ffn_down.weight"),
        )

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
            h = rms_norm(x, blk.attn_norm, a.rms_eps)
            q = blk.wq(h).view(b, t, a.n_head, a.head_dim).transpose(1, 2)  # [B, H, T, D]
            k = blk.wk(h).view(b, t, a.n_head_kv, a.head_dim).transpose(1, 2)  # [B, Hkv, T, D]
            v = blk.wv(h).view(b, t, a.n_head_kv, a.head_dim).transpose(1, 2)
            q = apply_rope(rms_norm(q, blk.q_norm, a.rms_eps), cos, sin, RopeStyle.NEOX)
            k = apply_rope(rms_norm(k, blk.k_norm, a.rms_eps), cos, sin, RopeStyle.NEOX)
            x = x + blk.wo(cached_attention(cache, i, q, k, v, mask, scale))
            h = rms_norm(x, blk.ffn_norm, a.rms_eps)
            x = x + blk.down(F.silu(blk.gate(h)) * blk.up(h))
        cache.advance(t)
        if last_only:
            x = x[:, -1:]
        return self.output(rms_norm(x, self.output_norm, a.rms_eps)).float()
