"""nomic-bert encoders: nomic-embed-text v1 / v1.5 (GGUF arch "nomic-bert").

A BERT-shaped post-norm encoder with three changes: no position embeddings but rotary ones
(RoPE on q and k, first-half / second-half pairs, base 1000), a fused qkv projection, and a
SwiGLU MLP (silu(gate) * up) instead of GELU. Biases are optional throughout (nomic-embed
has none). Token type 0 is added to every token, as in BERT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from corral.errors import UnsupportedError
from corral.gguf.hparams import HParams
from corral.gguf.reader import GGUFFile
from corral.models.bert import fused_qkv, norm_pair
from corral.models.encoder import Packing, WeightSource, linear, norm, optional, padding_mask
from corral.models.layers import RopeStyle, apply_rope, rope_cos_sin, rope_inv_freq, swiglu


@dataclass(frozen=True)
class ModelArgs:
    n_layers: int
    n_embd: int
    n_ff: int
    n_head: int
    eps: float
    context_length: int
    rope_base: float
    rope_dim: int  # rotated dims of each head (all of them in nomic-embed)
    rope_style: RopeStyle = RopeStyle.NEOX

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> ModelArgs:
        hp = HParams(gguf.metadata, gguf.architecture, gguf.path.name)
        n_embd, n_head = hp.int("embedding_length"), hp.int("attention.head_count")
        return cls(
            n_layers=hp.int("block_count"),
            n_embd=n_embd,
            n_ff=hp.int("feed_forward_length"),
            n_head=n_head,
            eps=hp.float("attention.layer_norm_epsilon", 1e-12),
            context_length=hp.int("context_length", 2048),
            rope_base=hp.float("rope.freq_base", 1000.0),
            rope_dim=hp.int("rope.dimension_count", n_embd // n_head),
        )

    @classmethod
    def from_hf(cls, config: dict[str, Any]) -> ModelArgs:
        # NomicBertConfig uses GPT-2's key names
        act = config.get("activation_function", "swiglu")
        if act != "swiglu":
            raise UnsupportedError(f"nomic-bert with activation '{act}' is not supported")
        n_embd, n_head = int(config["n_embd"]), int(config["n_head"])
        head_dim = n_embd // n_head
        interleaved = bool(config.get("rotary_emb_interleaved", False))
        return cls(
            n_layers=int(config["n_layer"]),
            n_embd=n_embd,
            n_ff=int(config.get("n_inner") or 4 * n_embd),
            n_head=n_head,
            eps=float(config.get("layer_norm_epsilon", 1e-12)),
            context_length=int(config.get("n_positions", 2048)),
            rope_base=float(config.get("rotary_emb_base", 1000.0)),
            rope_dim=int(head_dim * float(config.get("rotary_emb_fraction", 1.0))),
            rope_style=RopeStyle.NORM if interleaved else RopeStyle.NEOX,
        )


@dataclass
class Block:
    wqkv: torch.Tensor
    bqkv: torch.Tensor | None
    wo: torch.Tensor
    bo: torch.Tensor | None
    attn_norm: tuple[torch.Tensor, torch.Tensor | None]
    w_up_gate: torch.Tensor  # [2F, E]: up rows, then gate rows (one GEMM for both)
    b_up_gate: torch.Tensor | None
    down: torch.Tensor
    bdown: torch.Tensor | None
    out_norm: tuple[torch.Tensor, torch.Tensor | None]


class Model:
    """A nomic-bert encoder built from GGUF-named float32 tensors."""

    def __init__(self, args: ModelArgs, src: WeightSource) -> None:
        self.args = args
        self.hidden_size = args.n_embd
        self.max_positions = args.context_length
        self.tok_embd = src.get("token_embd.weight")
        self.vocab_size = self.tok_embd.shape[0]
        types = optional(src, "token_types.weight")
        self.type0 = types[0].clone() if types is not None else None
        self.embd_norm = norm_pair(src, "token_embd_norm")
        self.inv_freq = rope_inv_freq(args.rope_dim, args.rope_base)
        self.blocks = [self._block(src, i) for i in range(args.n_layers)]

    @staticmethod
    def _block(src: WeightSource, i: int) -> Block:
        p = f"blk.{i}."
        wqkv, bqkv = fused_qkv(src, p)
        up, gate = src.get(p + "ffn_up.weight"), src.get(p + "ffn_gate.weight")
        bup, bgate = optional(src, p + "ffn_up.bias"), optional(src, p + "ffn_gate.bias")
        b_up_gate = None
        if bup is not None or bgate is not None:
            zeros = torch.zeros(up.shape[0])
            b_up_gate = torch.cat(
                (zeros if bup is None else bup, zeros if bgate is None else bgate)
            )
        return Block(
            wqkv=wqkv,
            bqkv=bqkv,
            wo=src.get(p + "attn_output.weight"),
            bo=optional(src, p + "attn_output.bias"),
            attn_norm=norm_pair(src, p + "attn_output_norm"),
            w_up_gate=torch.cat((up, gate)).contiguous(),
            b_up_gate=b_up_gate,
            down=src.get(p + "ffn_down.weight"),
            bdown=optional(src, p + "ffn_down.bias"),
            out_norm=norm_pair(src, p + "layer_output_norm"),
        )

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        a = self.args
        b, t = ids.shape
        x = F.embedding(ids, self.tok_embd)
        if self.type0 is not None:
            x = x + self.type0
        packing = Packing(mask)
        x = norm(packing.pack(x), *self.embd_norm, a.eps)  # [N, E]: real tokens only
        cos, sin = rope_cos_sin(self.inv_freq, torch.arange(t)[None])  # [1, 1, T, R/2]
        keep = padding_mask(mask)
        for blk in self.blocks:
            qkv = packing.unpack(linear(x, blk.wqkv, blk.bqkv))
            q, k, v = qkv.view(b, t, 3, a.n_head, a.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            q = apply_rope(q, cos, sin, a.rope_style)  # each [B, H, T, D]
            k = apply_rope(k, cos, sin, a.rope_style)
            h = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
            h = packing.pack(h.transpose(1, 2).reshape(b, t, a.n_embd))
            x = norm(x + linear(h, blk.wo, blk.bo), *blk.attn_norm, a.eps)
            up, gate = linear(x, blk.w_up_gate, blk.b_up_gate).split(a.n_ff, dim=-1)
            x = norm(x + linear(swiglu(gate, up), blk.down, blk.bdown), *blk.out_norm, a.eps)
        return packing.unpack(x)
