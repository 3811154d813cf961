"""The gemma3 architecture (Gemma 3 text models).

Differs from llama in: embeddings scaled by sqrt(E); RMSNorm on q and k per head; norms after
attention and after the MLP as well as before; GELU(tanh) gating; NEOX rope; five sliding-window
layers (rope base 10k) for every global layer (the file's rope base). GGUF norm weights already
include Gemma's "+1", so RMSNorm is applied as usual.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from corral.engine.device import CPU, Device
from corral.engine.kv_cache import AttentionCache, KVCache
from corral.gguf.hparams import HParams
from corral.gguf.reader import GGUFFile
from corral.models.layers import (
    RopeStyle,
    apply_rope,
    cached_attention,
    gelu_tanh,
    rms_norm,
    rope_cos_sin,
    rope_inv_freq,
)
from corral.models.weights import Linear, TensorSource, project

# Gemma 3 alternates 5 local (sliding-window) layers with 1 global one; local layers use a
# fixed rope base of 10k whatever the file's base (which is the global layers').
_SWA_PATTERN = 6
_LOCAL_ROPE_BASE = 10000.0


@dataclass(frozen=True)
class ModelArgs:
    n_layers: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    rms_eps: float
    rope_base: float
    rope_scale: float
    sliding_window: int
    is_local: tuple[bool, ...]  # per layer: sliding-window attention?
    attn_scale: float
    context_length: int
    vocab_size: int

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> ModelArgs:
        hp = HParams(gguf.metadata, "gemma3", gguf.path.name)
        n_layers = hp.int("block_count")
        n_embd = hp.int("embedding_length")
        n_head = hp.int("attention.head_count")
        head_dim = hp.int("attention.key_length", n_embd // n_head)
        pattern = gguf.get("gemma3.attention.sliding_window_pattern")
        if isinstance(pattern, (list, np.ndarray)):
            is_local = tuple(bool(x) for x in pattern)
        else:
            every = int(pattern) if pattern else _SWA_PATTERN
            is_local = tuple(i % every < every - 1 for i in range(n_layers))
        scaling = hp.str("rope.scaling.type", "none")
        factor = hp.float("rope.scaling.factor", 1.0) or 1.0
        # the 27B model scales queries by 1/sqrt(E/H), the others by 1/sqrt(head_dim)
        scale_dim = n_embd // n_head if n_layers == 62 else head_dim
        return cls(
            n_layers=n_layers,
            n_embd=n_embd,
            n_ff=hp.int("feed_forward_length"),
            n_head=n_head,
            n_head_kv=hp.int("attention.head_count_kv", n_head),
            head_dim=head_dim,
            rms_eps=hp.float("attention.layer_norm_rms_epsilon", 1e-6),
            rope_base=hp.float("rope.freq_base", 1e6),
            rope_scale=1.0 / factor if scaling == "linear" else 1.0,
            sliding_window=hp.int("attention.sliding_window", 512),
            is_local=is_local,
            attn_scale=1.0 / math.sqrt(scale_dim),
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
    attn_post_norm: torch.Tensor
    ffn_norm: torch.Tensor
    gate: Linear
    up: Linear
    down: Linear
    ffn_post_norm: torch.Tensor


class Model:
    """A Gemma 3 text decoder built from GGUF tensors."""

    def __init__(self, args: ModelArgs, src: TensorSource) -> None:
        self.args = args
        self.device = src.device
        self.vocab_size = args.vocab_size
        self.context_length = args.context_length
        self.tok_embd = src.weight("token_embd.weight")
        self.output = src.weight("output.weight") if src.has("output.weight") else self.tok_embd
        self.output_norm = src.vector("output_norm.weight")
        dev = self.device.torch_device
        self.inv_freq_global = rope_inv_freq(
            args.head_dim, args.rope_base, None, args.rope_scale, device=dev
        )
        self.inv_freq_local = rope_inv_freq(args.head_dim, _LOCAL_ROPE_BASE, device=dev)
        self.embd_scale = math.sqrt(args.n_embd)
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
            attn_post_norm=src.vector(p + "post_attention_norm.weight"),
            ffn_norm=src.vector(p + "ffn_norm.weight"),
            gate=src.weight(p + "ffn_gate.weight"),
            up=src.weight(p + "ffn_up.weight"),
            down=src.weight(p + "ffn_down.weight"),
            ffn_post_norm=src.vector(p + "post_ffw_norm.weight"),
        )

    def make_cache(self, max_len: int, batch: int = 1) -> KVCache:
        a = self.args
        d = self.device
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
        pos = cache.positions(t)  # [B, T]
        rope_g = rope_cos_sin(self.inv_freq_global, pos)  # [B, 1, T, D/2]
        rope_l = rope_cos_sin(self.inv_freq_local, pos)
        mask_g = cache.mask(t, None)
        mask_l = cache.mask(t, a.sliding_window)
        x = (self.tok_embd.rows(tokens) * self.embd_scale).to(self.device.dtype)  # [B, T, E]
        for i, blk in enumerate(self.blocks):
            local = a.is_local[i]
            cos, sin = rope_l if local else rope_g
            h = rms_norm(x, blk.attn_norm, a.rms_eps)
            q, k, v = project(h, blk.wq, blk.wk, blk.wv)
            q = q.view(b, t, a.n_head, a.head_dim).transpose(1, 2)  # [B, H, T, D]
            k = k.view(b, t, a.n_head_kv, a.head_dim).transpose(1, 2)  # [B, Hkv, T, D]
            v = v.view(b, t, a.n_head_kv, a.head_dim).transpose(1, 2)
            q = apply_rope(rms_norm(q, blk.q_norm, a.rms_eps), cos, sin, RopeStyle.NEOX)
            k = apply_rope(rms_norm(k, blk.k_norm, a.rms_eps), cos, sin, RopeStyle.NEOX)
            mask, window = (mask_l, a.sliding_window) if local else (mask_g, None)
            o = cached_attention(cache, i, q, k, v, mask, a.attn_scale, window)
            x = x + rms_norm(blk.wo(o), blk.attn_post_norm, a.rms_eps)
            h = rms_norm(x, blk.ffn_norm, a.rms_eps)
            g, u = project(h, blk.gate, blk.up)
            h = blk.down(gelu_tanh(g) * u)
            x = x + rms_norm(h, blk.ffn_post_norm, a.rms_eps)
        cache.advance(t)
        if last_only:
            x = x[:, -1:]
        return self.output(rms_norm(x, self.output_norm, a.rms_eps)).float()
