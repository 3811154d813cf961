"""The gemma3 architecture (Gemma 3 text models).

Differs from llama in: embeddings scaled by sqrt(E); RMSNorm on q and k per head; norms after
attention and after the MLP as well as before; GELU(tanh) gating; NEOX rope; five sliding-window
layers (rope base 10k) for every global layer (the file's rope base). GGUF norm weights already
include Gemma's "+1", so RMSNorm is applied as usual.

Decode steps (a few new tokens) on the CPU run every block in one C call where the weights
allow (corral.models.fused: the same block with its extra norms, table GELU, a window per
layer and the two rope sets), the loop in `_blocks` otherwise, with the same logits bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from corral.engine.kv_cache import AttentionCache
from corral.gguf.hparams import HParams
from corral.gguf.reader import GGUFFile
from corral.models.decoder import AttentionLM, GluBlock, RmsRopeArgs
from corral.models.fused import FusedDecode
from corral.models.layers import (
    RopeStyle,
    apply_rope,
    cached_attention,
    gelu_tanh_mul,
    last_rows,
    rms_norm,
    rope_cos_sin,
    rope_inv_freq,
)
from corral.models.weights import TensorSource, project

# Gemma 3 alternates 5 local (sliding-window) layers with 1 global one; local layers use a
# fixed rope base of 10k whatever the file's base (which is the global layers').
_SWA_PATTERN = 6
_LOCAL_ROPE_BASE = 10000.0


@dataclass(frozen=True)
class ModelArgs(RmsRopeArgs):
    n_ff: int
    sliding_window: int
    is_local: tuple[bool, ...]  # per layer: sliding-window attention?
    attn_scale: float

    ROPE_BASE: ClassVar[float] = 1e6

    @classmethod
    def read(cls, hp: HParams, gguf: GGUFFile) -> dict[str, Any]:
        base = super().read(hp, gguf)
        n_layers, n_embd, n_head = base["n_layers"], base["n_embd"], base["n_head"]
        pattern = gguf.get("gemma3.attention.sliding_window_pattern")
        if isinstance(pattern, (list, np.ndarray)):
            is_local = tuple(bool(x) for x in pattern)
        else:
            every = int(pattern) if pattern else _SWA_PATTERN
            is_local = tuple(i % every < every - 1 for i in range(n_layers))
        # the 27B model scales queries by 1/sqrt(E/H), the others by 1/sqrt(head_dim)
        scale_dim = n_embd // n_head if n_layers == 62 else base["head_dim"]
        return base | {
            "n_ff": hp.int("feed_forward_length"),
            "sliding_window": hp.int("attention.sliding_window", 512),
            "is_local": is_local,
            "attn_scale": 1.0 / math.sqrt(scale_dim),
        }


@dataclass
class Block(GluBlock):
    q_norm: torch.Tensor
    k_norm: torch.Tensor
    attn_post_norm: torch.Tensor
    ffn_post_norm: torch.Tensor

    @classmethod
    def tensors(cls, src: TensorSource, p: str) -> dict[str, Any]:
        return super().tensors(src, p) | {
            "q_norm": src.vector(p + "attn_q_norm.weight"),
            "k_norm": src.vector(p + "attn_k_norm.weight"),
            "attn_post_norm": src.vector(p + "post_attention_norm.weight"),
            "ffn_post_norm": src.vector(p + "post_ffw_norm.weight"),
        }


class Model(AttentionLM[ModelArgs]):
    """A Gemma 3 text decoder built from GGUF tensors."""

    args_class = ModelArgs

    def __init__(self, args: ModelArgs, src: TensorSource) -> None:
        super().__init__(args, src)
        self.output = self.tied_output(src)
        self.output_norm = src.vector("output_norm.weight")
        dev = self.device.torch_device
        self.inv_freq_global = rope_inv_freq(
            args.head_dim, args.rope_base, None, args.rope_scale, device=dev
        )
        self.inv_freq_local = rope_inv_freq(args.head_dim, _LOCAL_ROPE_BASE, device=dev)
        self.embd_scale = math.sqrt(args.n_embd)
        self.blocks = [Block.load(src, i) for i in range(args.n_layers)]
        # decode steps in one C call where the weights allow (None: always `_blocks`); the
        # step's rope sets are (local, global), as forward stacks them
        self.fused = FusedDecode.build(
            self.blocks, dev.type, self.device.dtype, args.n_head, args.n_head_kv,
            args.head_dim, args.head_dim, True, args.rms_eps,
            [args.sliding_window if local else None for local in args.is_local],
            scale=args.attn_scale, rope_sets=[0 if local else 1 for local in args.is_local],
            activation="gelu_tanh",
        )  # fmt: skip

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
        x = (self.tok_embd.rows(tokens) * self.embd_scale).to(self.device.dtype)  # [B, T, E]
        fused = self.fused is not None and self.fused(
            x,
            torch.stack((rope_l[0], rope_g[0])),
            torch.stack((rope_l[1], rope_g[1])),
            cache,
            last_only,
        )  # cos, sin [2, B, 1, T, D/2]: the rope sets of the plan's local and global layers
        if not fused:
            x = self._blocks(x, rope_l, rope_g, cache, last_only)
        cache.advance(t)
        if last_only:
            x = x[:, -1:]
        return self.output(rms_norm(x, self.output_norm, a.rms_eps)).float()

    def _blocks(
        self, x: torch.Tensor, rope_l: tuple[torch.Tensor, torch.Tensor],
        rope_g: tuple[torch.Tensor, torch.Tensor], cache: AttentionCache,
        last_only: bool = False,
    ) -> torch.Tensor:  # fmt: skip
        """The eager block loop: x [B, T, E] -> [B, T, E] ([B, 1, E] with last_only, see
        layers.last_rows), writing the new keys/values; rope_l/rope_g: the local and global
        layers' cos/sin [B, 1, T, D/2]."""
        a = self.args
        b, t, _ = x.shape
        mask_g = cache.mask(t, None)
        mask_l = cache.mask(t, a.sliding_window)
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
            x = last_rows(x, last_only and i == len(self.blocks) - 1)
            h = rms_norm(x, blk.ffn_norm, a.rms_eps)
            g, u = project(h, blk.gate, blk.up)
            h = blk.down(gelu_tanh_mul(g, u))
            x = x + rms_norm(h, blk.ffn_post_norm, a.rms_eps)
        return x
