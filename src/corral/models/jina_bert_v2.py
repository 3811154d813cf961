"""jina-bert-v2 encoders: jina-embeddings-v2 (GGUF arch "jina-bert-v2").

A BERT-shaped post-norm encoder with no position embeddings: attention scores get a
symmetric ALiBi bias instead (-slope_h * |i - j|, the slopes of the ALiBi paper), which is
what lets it read 8192 tokens. The MLP is gated GELU: gelu(gate) * up, no bias, then a
biased down projection. Some variants LayerNorm q and k (attn_q_norm / attn_k_norm) or add a
second post-attention norm (attn_norm_2); those are used where the file has them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from corral.gguf.hparams import HParams
from corral.gguf.reader import GGUFFile
from corral.models.bert import fused_qkv, norm_pair
from corral.models.encoder import Packing, WeightSource, linear, norm, optional

# Score memory of one attention call is bounded by running queries in chunks of this size
# (the bias and mask make SDPA materialize B x H x chunk x T floats).
_SCORE_BUDGET = 1 << 25  # floats: 128 MiB
NormPair = tuple[torch.Tensor, torch.Tensor | None]


@dataclass(frozen=True)
class ModelArgs:
    n_layers: int
    n_embd: int
    n_ff: int
    n_head: int
    eps: float
    context_length: int

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> ModelArgs:
        hp = HParams(gguf.metadata, gguf.architecture, gguf.path.name)
        return cls(
            n_layers=hp.int("block_count"),
            n_embd=hp.int("embedding_length"),
            n_ff=hp.int("feed_forward_length"),
            n_head=hp.int("attention.head_count"),
            eps=hp.float("attention.layer_norm_epsilon", 1e-12),
            context_length=hp.int("context_length", 8192),
        )

    @classmethod
    def from_hf(cls, config: dict[str, Any]) -> ModelArgs:
        return cls(
            n_layers=int(config["num_hidden_layers"]),
            n_embd=int(config["hidden_size"]),
            n_ff=int(config["intermediate_size"]),
            n_head=int(config["num_attention_heads"]),
            eps=float(config.get("layer_norm_eps", 1e-12)),
            context_length=int(config.get("max_position_embeddings", 8192)),
        )


def hf_tensor(name: str, t: torch.Tensor) -> Iterable[tuple[str, torch.Tensor]] | None:
    """HF's fused `mlp.gated_layers` [2F, E]: the first F rows are the gate (llama.cpp's
    converter splits it the same way)."""
    if ".mlp.gated_layers." not in name:
        return None
    layer = name.split("encoder.layer.", 1)[1].split(".", 1)[0]
    half = t.shape[0] // 2
    return [(f"blk.{layer}.ffn_gate.weight", t[:half]), (f"blk.{layer}.ffn_up.weight", t[half:])]


def alibi_slopes(n_head: int) -> torch.Tensor:
    """Per-head ALiBi slopes [H]: a geometric series for the nearest power of two of heads,
    then every other slope of the series for twice as many (the paper's recipe, as ggml's)."""
    p = 2 ** math.floor(math.log2(n_head))
    m0, m1 = 2.0 ** (-8.0 / p), 2.0 ** (-4.0 / p)
    slopes = [m0 ** (h + 1) if h < p else m1 ** (2 * (h - p) + 1) for h in range(n_head)]
    return torch.tensor(slopes, dtype=torch.float32)


@dataclass
class Block:
    wqkv: torch.Tensor
    bqkv: torch.Tensor | None
    q_norm: NormPair | None
    k_norm: NormPair | None
    wo: torch.Tensor
    bo: torch.Tensor | None
    attn_norm: NormPair
    attn_norm_2: NormPair | None
    w_gate_up: torch.Tensor  # [2F, E]: gate rows, then up rows
    down: torch.Tensor
    bdown: torch.Tensor | None
    out_norm: NormPair


def _optional_norm(src: WeightSource, name: str) -> NormPair | None:
    return norm_pair(src, name) if src.has(name + ".weight") else None


class Model:
    """A jina-bert-v2 encoder built from GGUF-named float32 tensors."""

    def __init__(self, args: ModelArgs, src: WeightSource) -> None:
        self.args = args
        self.hidden_size = args.n_embd
        self.max_positions = args.context_length
        self.tok_embd = src.get("token_embd.weight")
        self.vocab_size = self.tok_embd.shape[0]
        types = optional(src, "token_types.weight")
        self.type0 = types[0].clone() if types is not None else None
        self.embd_norm = norm_pair(src, "token_embd_norm")
        self.slopes = alibi_slopes(args.n_head)
        self.blocks = [self._block(src, i) for i in range(args.n_layers)]

    @staticmethod
    def _block(src: WeightSource, i: int) -> Block:
        p = f"blk.{i}."
        wqkv, bqkv = fused_qkv(src, p)
        up = src.get(p + "ffn_up.weight")
        # newer converters keep HF's fused [gate; up] matrix as ffn_up and write no ffn_gate
        gate_up = (
            torch.cat((src.get(p + "ffn_gate.weight"), up))
            if src.has(p + "ffn_gate.weight")
            else up
        )
        return Block(
            wqkv=wqkv,
            bqkv=bqkv,
            q_norm=_optional_norm(src, p + "attn_q_norm"),
            k_norm=_optional_norm(src, p + "attn_k_norm"),
            wo=src.get(p + "attn_output.weight"),
            bo=optional(src, p + "attn_output.bias"),
            attn_norm=norm_pair(src, p + "attn_output_norm"),
            attn_norm_2=_optional_norm(src, p + "attn_norm_2"),
            w_gate_up=gate_up.contiguous(),
            down=src.get(p + "ffn_down.weight"),
            bdown=optional(src, p + "ffn_down.bias"),
            out_norm=norm_pair(src, p + "layer_output_norm"),
        )

    def _bias(self, mask: torch.Tensor) -> torch.Tensor:
        """ALiBi plus padding: [B, H, T, T] additive scores."""
        t = mask.shape[1]
        pos = torch.arange(t, dtype=torch.float32)
        dist = (pos[None, :] - pos[:, None]).abs()  # [T, T]
        bias = -self.slopes[:, None, None] * dist  # [H, T, T]
        pad = torch.zeros(mask.shape, dtype=torch.float32).masked_fill(~mask, float("-inf"))
        return bias[None] + pad[:, None, None, :]

    def _attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """q, k, v [B, H, T, D] -> [B, H, T, D], in query chunks that bound score memory."""
        b, h, t, _ = q.shape
        bias = self._bias(mask)
        step = max(1, _SCORE_BUDGET // max(1, b * h * t))
        if step >= t:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        parts = [
            F.scaled_dot_product_attention(
                q[:, :, s : s + step], k, v, attn_mask=bias[:, :, s : s + step]
            )
            for s in range(0, t, step)
        ]
        return torch.cat(parts, dim=2)

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        a = self.args
        b, t = ids.shape
        d = a.n_embd // a.n_head
        x = F.embedding(ids, self.tok_embd)
        if self.type0 is not None:
            x = x + self.type0
        packing = Packing(mask)
        x = norm(packing.pack(x), *self.embd_norm, a.eps)  # [N, E]: real tokens only
        for blk in self.blocks:
            q, k, v = linear(x, blk.wqkv, blk.bqkv).split(a.n_embd, dim=-1)  # each [N, E]
            if blk.q_norm is not None:
                q = norm(q, *blk.q_norm, a.eps)
            if blk.k_norm is not None:
                k = norm(k, *blk.k_norm, a.eps)
            q, k, v = (packing.unpack(z).view(b, t, a.n_head, d).transpose(1, 2) for z in (q, k, v))
            h = self._attention(q, k, v, mask).transpose(1, 2).reshape(b, t, a.n_embd)
            h = norm(x + linear(packing.pack(h), blk.wo, blk.bo), *blk.attn_norm, a.eps)
            if blk.attn_norm_2 is not None:
                h = norm(h + x, *blk.attn_norm_2, a.eps)
            x = h
            gate, up = linear(x, blk.w_gate_up, None).split(a.n_ff, dim=-1)
            x = norm(x + linear(F.gelu(gate) * up, blk.down, blk.bdown), *blk.out_norm, a.eps)
        return packing.unpack(x)
