"""RWKV-7 "Goose" as llama.cpp stores it (`general.architecture` = "rwkv7").

Same block shape as RWKV-6 (token shift, time-mix, channel-mix, layer norms, no attention),
with a generalized delta-rule state update. Per head, with receptance r, decay w in (0, 1),
key k, value v, in-context learning rate a and the normalized key kk:

    S <- S diag(w) + v^T k + (S (-kk)^T) (kk * a),     y = S r^T

(S is [value, key]). w, a and the value-residual mix come from small LoRAs; every layer's
value is pulled towards the first layer's (v_first); an output gate g multiplies the result,
and a bonus term (r . k . r_k) v is added after the group norm. The channel-mix is a plain
squared-ReLU MLP. State lives in a RecurrentState instead of a KV cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from corral.models.decoder import Norm, layer_norm, load_norm
from corral.models.rwkv_common import (
    RecurrentLM,
    RecurrentState,
    WkvHeadArgs,
    enter_state,
    flat_vector,
    group_norm,
    head_state,
    matmul,
)
from corral.models.weights import Linear, TensorSource

LoRA = tuple[Linear, Linear]  # down [R, E], up [E, R]

# w = exp(-e^-0.5 * sigmoid(.)): the decay of RWKV-7, between exp(-0.6065) and 1
_DECAY_SCALE = -0.606531


@dataclass(frozen=True)
class ModelArgs(WkvHeadArgs):
    """WkvHeadArgs as they are: RWKV-7 has no hyper-parameters of its own here."""


@dataclass
class Block:
    attn_norm: Norm
    ffn_norm: Norm
    lerp: torch.Tensor  # [6, E]: r, w, k, v, a, g
    w0: torch.Tensor  # [E]
    w_lora: LoRA
    a0: torch.Tensor
    a_lora: LoRA
    v0: torch.Tensor
    v_lora: LoRA
    g_lora: LoRA | None
    k_k: torch.Tensor  # [E]
    k_a: torch.Tensor  # [E]
    r_k: torch.Tensor  # [H, S]
    key: Linear
    value: Linear
    receptance: Linear
    ln_x: Norm
    output: Linear
    cm_lerp_k: torch.Tensor  # [E]
    cm_key: Linear
    cm_value: Linear


def _lora(src: TensorSource, p: str, n: str) -> LoRA:
    return src.weight(f"{p}{n}1.weight"), src.weight(f"{p}{n}2.weight")


def wkv7(
    r: torch.Tensor, w: torch.Tensor, k: torch.Tensor, v: torch.Tensor, a: torch.Tensor,
    b: torch.Tensor, s: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """r, w, k, v, a, b [B, T, H, S]; s [B, H, S(value), S(key)], updated in place.
    Per step: S <- S diag(w) + v^T k + (S a^T) b, y = S r^T. Returns y [B, T, H, S]."""
    ys = []
    state = s
    for i in range(r.shape[1]):
        sa = torch.einsum("bhvk,bhk->bhv", state, a[:, i])  # [B, H, V]
        state = (
            state * w[:, i, :, None, :]
            + v[:, i, :, :, None] * k[:, i, :, None, :]
            + sa[..., None] * b[:, i, :, None, :]
        )
        ys.append(torch.einsum("bhvk,bhk->bhv", state, r[:, i]))
    s.copy_(state)
    return torch.stack(ys, dim=1)


class Model(RecurrentLM[ModelArgs]):
    """An RWKV-7 network built from GGUF tensors (names as llama.cpp has them)."""

    args_class = ModelArgs

    def __init__(self, args: ModelArgs, src: TensorSource) -> None:
        super().__init__(args, src)
        self.blocks = [self._block(src, f"blk.{i}.", args) for i in range(args.n_layers)]

    @staticmethod
    def _block(src: TensorSource, p: str, args: ModelArgs) -> Block:
        tm = p + "time_mix_"
        has_gate = src.has(tm + "g1.weight")
        return Block(
            attn_norm=load_norm(src, p + "attn_norm", optional_bias=False),
            ffn_norm=load_norm(src, p + "attn_norm_2", optional_bias=False),
            lerp=src.vector(tm + "lerp_fused.weight").reshape(-1, args.n_embd),
            w0=flat_vector(src, tm + "w0.weight"),
            w_lora=_lora(src, tm, "w"),
            a0=flat_vector(src, tm + "a0.weight"),
            a_lora=_lora(src, tm, "a"),
            v0=flat_vector(src, tm + "v0.weight"),
            v_lora=_lora(src, tm, "v"),
            g_lora=_lora(src, tm, "g") if has_gate else None,
            k_k=flat_vector(src, tm + "k_k.weight"),
            k_a=flat_vector(src, tm + "k_a.weight"),
            r_k=flat_vector(src, tm + "r_k.weight").view(args.n_head, args.head_size),
            key=src.weight(tm + "key.weight"),
            value=src.weight(tm + "value.weight"),
            receptance=src.weight(tm + "receptance.weight"),
            ln_x=load_norm(src, tm + "ln", optional_bias=False),
            output=src.weight(tm + "output.weight"),
            cm_lerp_k=flat_vector(src, p + "channel_mix_lerp_k.weight"),
            cm_key=src.weight(p + "channel_mix_key.weight"),
            cm_value=src.weight(p + "channel_mix_value.weight"),
        )

    def make_cache(self, max_len: int, batch: int = 1) -> RecurrentState:
        return head_state(self.args, self.device, max_len, batch)

    def _lora(self, lora: LoRA, x: torch.Tensor, act: str | None = None) -> torch.Tensor:
        dt = self.device.dtype
        h = matmul(lora[0], x, dt)
        if act == "tanh":
            h = torch.tanh(h)
        elif act == "sigmoid":
            h = torch.sigmoid(h)
        return matmul(lora[1], h, dt)

    def _time_mix(
        self, blk: Block, x: torch.Tensor, st: RecurrentState, i: int,
        v_first: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """x [B, T, E] (normalized) -> (output [B, T, E], the first layer's value)."""
        a, dt = self.args, self.device.dtype
        b, t, e = x.shape
        heads = (b, t, a.n_head, a.head_size)
        sx = st.token_shift(i, 0, x)  # x_prev - x [B, T, E]
        mixed = (x[:, :, None] + sx[:, :, None] * blk.lerp).unbind(2)  # 5 or 6 x [B, T, E]
        xr, xw, xk, xv, xa = mixed[:5]
        r = matmul(blk.receptance, xr, dt)
        w = self._lora(blk.w_lora, xw, "tanh") + blk.w0
        w = torch.exp(_DECAY_SCALE * torch.sigmoid(w))
        k = matmul(blk.key, xk, dt)
        v = matmul(blk.value, xv, dt)
        if v_first is None:
            v_first = v
        else:  # pull the value towards the first layer's
            v = v + (v_first - v) * torch.sigmoid(self._lora(blk.v_lora, xv) + blk.v0)
        iclr = torch.sigmoid(self._lora(blk.a_lora, xa) + blk.a0)  # [B, T, E]
        kk = F.normalize((k * blk.k_k).view(heads), dim=-1, eps=1e-12)  # [B, T, H, S]
        k = k + (iclr * k * blk.k_a - k * blk.k_a)
        r, k, v, iclr = r.view(heads), k.view(heads), v.view(heads), iclr.view(heads)
        y = wkv7(r, w.view(heads), k, v, -kk, kk * iclr, st.wkv[i])  # [B, T, H, S]
        y = group_norm(y.reshape(b, t, e), blk.ln_x, a.head_size)
        bonus = (r * k * blk.r_k).sum(-1, keepdim=True) * v  # [B, T, H, S]
        y = y + bonus.reshape(b, t, e)
        if blk.g_lora is not None:
            y = y * self._lora(blk.g_lora, mixed[5], "sigmoid")
        return matmul(blk.output, y, dt), v_first

    def _channel_mix(self, blk: Block, x: torch.Tensor, st: RecurrentState, i: int) -> torch.Tensor:
        dt = self.device.dtype
        sx = st.token_shift(i, 1, x)
        k = torch.relu(matmul(blk.cm_key, x + sx * blk.cm_lerp_k, dt)).square()
        return matmul(blk.cm_value, k, dt)

    @torch.inference_mode()
    def forward(
        self, tokens: torch.Tensor, cache: RecurrentState, last_only: bool = False
    ) -> torch.Tensor:
        """tokens [B, T] -> logits [B, T, V] float32 ([B, 1, V] when last_only); the state
        moves on by T tokens (from zero when the cache's offset is 0)."""
        a = self.args
        st = enter_state(cache)
        x = self.embed(tokens)  # [B, T, E]
        v_first = None
        for i, blk in enumerate(self.blocks):
            h = layer_norm(x, blk.attn_norm, a.norm_eps)
            out, v_first = self._time_mix(blk, h, st, i, v_first)
            x = x + out
            x = x + self._channel_mix(blk, layer_norm(x, blk.ffn_norm, a.norm_eps), st, i)
        cache.advance(tokens.shape[1])
        return self.head(x, last_only)
