"""The llama architecture: Llama 1/2/3, Mistral (sliding window), TinyLlama, SmolLM2,
CodeLlama, Vicuna, Zephyr, OpenHermes... all one network with different hyper-parameters.

Pre-norm decoder: RMSNorm -> attention (RoPE, GQA) -> residual; RMSNorm -> SwiGLU -> residual.
GGUF stores q/k rows permuted for llama.cpp's adjacent-pair rope, so we rotate pairs (NORM).
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
from corral.models.weights import Linear, TensorSource, project


@dataclass(frozen=True)
class ModelArgs:
    n_layers: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    rope_dim: int
    rms_eps: float
    rope_base: float
    rope_scale: float  # linear scaling: positions are multiplied by this
    context_length: int
    vocab_size: int
    sliding_window: int | None

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> ModelArgs:
        hp = HParams(gguf.metadata, gguf.architecture, gguf.path.name)
        n_embd = hp.int("embedding_length")
        n_head = hp.int("attention.head_count")
        head_dim = hp.int("attention.key_length", n_embd // n_head)
        scaling = hp.str("rope.scaling.type", "none")
        factor = hp.float("rope.scaling.factor", 1.0) or 1.0
        vocab = hp.int("vocab_size", 0) or len(gguf.get("tokenizer.ggml.tokens", []))
        window = hp.int("attention.sliding_window", 0)
        return cls(
            n_layers=hp.int("block_count"),
            n_embd=n_embd,
            n_ff=hp.int("feed_forward_length"),
            n_head=n_head,
            n_head_kv=hp.int("attention.head_count_kv", n_head),
            head_dim=head_dim,
            rope_dim=hp.int("rope.dimension_count", head_dim),
            rms_eps=hp.float("attention.layer_norm_rms_epsilon", 1e-5),
            rope_base=hp.float("rope.freq_base", 10000.0),
            rope_scale=1.0 / factor if scaling == "linear" else 1.0,
            context_length=hp.int("context_length", 2048),
            vocab_size=vocab,
            sliding_window=window or None,
        )


@dataclass
class Block:
    attn_norm: torch.Tensor
    wq: Linear
    wk: Linear
    wv: Linear
    wo: Linear
    bq: torch.Tensor | None
    bk: torch.Tensor | None
    bv: torch.Tensor | None
    ffn_norm: torch.Tensor
    gate: Linear
    up: Linear
    down: Linear


class Model:
    """A llama-family decoder built from GGUF tensors (names used as the file has them)."""

    def __init__(self, args: ModelArgs, src: TensorSource) -> None:
        self.args = args
        self.device = src.device
        self.vocab_size = args.vocab_size
        self.context_length = args.context_length
        self.tok_embd = src.weight("token_embd.weight")
        # tied output head when the file has no separate one (SmolLM2, TinyLlama variants)
        self.output = src.weight("output.weight") if src.has("output.weight") else self.tok_embd
        self.output_norm = src.vector("output_norm.weight")
        freq_factors = src.optional_vector("rope_freqs.weight")
        self.inv_freq = rope_inv_freq(
            args.rope_dim, args.rope_base, freq_factors, args.rope_scale, self.device.torch_device
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
            bq=src.optional_vector(p + "attn_q.bias"),
            bk=src.optional_vector(p + "attn_k.bias"),
            bv=src.optional_vector(p + "attn_v.bias"),
            ffn_norm=src.vector(p + "ffn_norm.weight"),
            gate=src.weight(p + "ffn_gate.weight"),
            up=src.weight(p + "ffn_up.weight"),
            down=src.weight(p + "ffn_down.weight"),
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
        cos, sin = rope_cos_sin(self.inv_freq, cache.positions(t))  # [B, 1, T, D/2]
        mask = cache.mask(t, a.sliding_window)
        scale = default_scale(a.head_dim)
        x = self.tok_embd.rows(tokens).to(self.device.dtype)  # [B, T, E]
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
            h = rms_norm(x, blk.ffn_norm, a.rms_eps)
            g, u = project(h, blk.gate, blk.up)
            x = x + blk.down(F.silu(g) * u)
        cache.advance(t)
        if last_only:
            x = x[:, -1:]
        return self.output(rms_norm(x, self.output_norm, a.rms_eps)).float()
