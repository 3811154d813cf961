"""The mpt architecture (MosaicML MPT-7B/30B, Replit Code v1).

Pre-norm decoder with LayerNorms (bias-free in most checkpoints), one fused q|k|v matrix whose
outputs may be clamped (clip_qkv), ALiBi positions instead of rope (or learned position
embeddings when the file has them and no ALiBi), and a GELU MLP. The output head is the
embedding matrix. GELU is the exact (erf) one MPT trained with; llama.cpp uses its tanh
approximation here, a difference below 1e-3 per activation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from corral.engine.device import CPU, Device
from corral.engine.kv_cache import AttentionCache, KVCache
from corral.gguf.hparams import HParams
from corral.gguf.reader import GGUFFile
from corral.models.alibi import alibi_attention, alibi_slopes
from corral.models.layers import default_scale
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
    clamp_kqv: float | None
    max_alibi_bias: float
    context_length: int
    vocab_size: int

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> ModelArgs:
        hp = HParams(gguf.metadata, "mpt", gguf.path.name)
        n_embd = hp.int("embedding_length")
        n_head = hp.int("attention.head_count")
        return cls(
            n_layers=hp.int("block_count"),
            n_embd=n_embd,
            n_head=n_head,
            n_head_kv=hp.int("attention.head_count_kv", n_head),
            head_dim=n_embd // n_head,
            norm_eps=hp.float("attention.layer_norm_epsilon", 1e-5),
            clamp_kqv=hp.float("attention.clamp_kqv", None),
            max_alibi_bias=hp.float("attention.max_alibi_bias", 8.0),
            context_length=hp.int("context_length", 2048),
            vocab_size=len(gguf.get("tokenizer.ggml.tokens", [])) or hp.int("vocab_size"),
        )


@dataclass
class Block:
    attn_norm: Norm
    wqkv: Linear  # [q | k | v] rows
    wo: Linear
    ffn_norm: Norm
    up: Linear
    down: Linear


class Model:
    """An MPT decoder built from GGUF tensors."""

    def __init__(self, args: ModelArgs, src: TensorSource) -> None:
        self.args = args
        self.device = src.device
        self.vocab_size = args.vocab_size
        self.context_length = args.context_length
        self.tok_embd = src.weight("token_embd.weight")
        self.pos_embd = (
            src.weight("position_embd.weight") if src.has("position_embd.weight") else None
        )
        self.output = src.weight("output.weight") if src.has("output.weight") else self.tok_embd
        self.output_norm = self._norm(src, "output_norm")
        self.slopes = alibi_slopes(args.n_head, args.max_alibi_bias)
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
            wqkv=src.weight(p + "attn_qkv.weight"),
            wo=src.weight(p + "attn_output.weight"),
            ffn_norm=cls._norm(src, p + "ffn_norm"),
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
        mask = cache.mask(t, None)
        scale = default_scale(a.head_dim)
        n_q, n_kv = a.n_head * a.head_dim, a.n_head_kv * a.head_dim
        x = self.tok_embd.rows(tokens).to(self.device.dtype)  # [B, T, E]
        if self.pos_embd is not None:
            x = x + self.pos_embd.rows(cache.positions(t)).to(x.dtype)
        for i, blk in enumerate(self.blocks):
            h = self._ln(x, blk.attn_norm)
            qkv = blk.wqkv(h)
            if a.clamp_kqv is not None:
                qkv = qkv.clamp(-a.clamp_kqv, a.clamp_kqv)
            q, k, v = qkv.split((n_q, n_kv, n_kv), dim=-1)
            q = q.reshape(b, t, a.n_head, a.head_dim).transpose(1, 2)  # [B, H, T, D]
            k = k.reshape(b, t, a.n_head_kv, a.head_dim).transpose(1, 2)  # [B, Hkv, T, D]
            v = v.reshape(b, t, a.n_head_kv, a.head_dim).transpose(1, 2)
            k, v = cache.update_and_fetch(i, k, v)
            x = x + blk.wo(alibi_attention(q, k, v, mask, scale, self.slopes))
            h = self._ln(x, blk.ffn_norm)
            x = x + blk.down(F.gelu(blk.up(h)))
        cache.advance(t)
        if last_only:
            x = x[:, -1:]
        return self.output(self._ln(x, self.output_norm)).float()
