"""The bloom architecture (BLOOM, BLOOMZ).

Pre-norm decoder with LayerNorms (weight and bias) everywhere, including one right after the
token embeddings; fused q|k|v projection with biases; ALiBi positions (max bias 8, no rope);
GELU(tanh) MLP with biases. The output head is the embedding matrix (written out again by
the converter, as llama.cpp wants it).
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
from corral.models.layers import default_scale, gelu_tanh
from corral.models.weights import Linear, TensorSource

Norm = tuple[torch.Tensor, torch.Tensor]  # LayerNorm weight, bias

# llama.cpp fixes BLOOM's ALiBi maximum bias at 8 (it is not in the file).
_MAX_ALIBI_BIAS = 8.0


@dataclass(frozen=True)
class ModelArgs:
    n_layers: int
    n_embd: int
    n_head: int
    head_dim: int
    norm_eps: float
    context_length: int
    vocab_size: int

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> ModelArgs:
        hp = HParams(gguf.metadata, "bloom", gguf.path.name)
        n_embd = hp.int("embedding_length")
        n_head = hp.int("attention.head_count")
        return cls(
            n_layers=hp.int("block_count"),
            n_embd=n_embd,
            n_head=n_head,
            head_dim=n_embd // n_head,
            norm_eps=hp.float("attention.layer_norm_epsilon", 1e-5),
            context_length=hp.int("context_length", 2048),
            vocab_size=len(gguf.get("tokenizer.ggml.tokens", [])) or hp.int("vocab_size"),
        )


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


class Model:
    """A BLOOM decoder built from GGUF tensors."""

    def __init__(self, args: ModelArgs, src: TensorSource) -> None:
        self.args = args
        self.device = src.device
        self.vocab_size = args.vocab_size
        self.context_length = args.context_length
        self.tok_embd = src.weight("token_embd.weight")
        self.tok_embd_norm = self._norm(src, "token_embd_norm")
        self.output = src.weight("output.weight") if src.has("output.weight") else self.tok_embd
        self.output_norm = self._norm(src, "output_norm")
        self.slopes = alibi_slopes(args.n_head, _MAX_ALIBI_BIAS)
        self.blocks = [self._block(src, i) for i in range(args.n_layers)]

    @classmethod
    def from_gguf(cls, gguf: GGUFFile, device: Device = CPU) -> Model:
        return cls(ModelArgs.from_gguf(gguf), TensorSource(gguf, device))

    @staticmethod
    def _norm(src: TensorSource, name: str) -> Norm:
        return src.vector(name + ".weight"), src.vector(name + ".bias")

    @classmethod
    def _block(cls, src: TensorSource, i: int) -> Block:
        p = f"blk.{i}."
        return Block(
            attn_norm=cls._norm(src, p + "attn_norm"),
            wqkv=src.weight(p + "attn_qkv.weight"),
            bqkv=src.vector(p + "attn_qkv.bias"),
            wo=src.weight(p + "attn_output.weight"),
            bo=src.vector(p + "attn_output.bias"),
            ffn_norm=cls._norm(src, p + "ffn_norm"),
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
        mask = cache.mask(t, None)
        scale = default_scale(a.head_dim)
        x = self._ln(self.tok_embd.rows(tokens).to(self.device.dtype), self.tok_embd_norm)
        for i, blk in enumerate(self.blocks):
            h = self._ln(x, blk.attn_norm)
            q, k, v = (blk.wqkv(h) + blk.bqkv).view(b, t, 3, a.n_head, a.head_dim).unbind(2)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, D]
            k, v = cache.update_and_fetch(i, k, v)
            x = x + blk.wo(alibi_attention(q, k, v, mask, scale, self.slopes)) + blk.bo
            h = self._ln(x, blk.ffn_norm)
            x = x + blk.down(gelu_tanh(blk.up(h) + blk.b_up)) + blk.b_down
        cache.advance(t)
        if last_only:
            x = x[:, -1:]
        return self.output(self._ln(x, self.output_norm)).float()
