"""RWKV-6 "Finch" as llama.cpp stores it (`general.architecture` = "rwkv6").

No attention: each block is a time-mix (a linear recurrence over a per-head matrix state,
with data-dependent decay) and a channel-mix (a squared-ReLU MLP gated by a sigmoid), both
fed a mix of the current and the previous token's normalized input (token shift):

    x = LN0(embed(t))
    per block:  x += TimeMix(LN1(x));  x += ChannelMix(LN2(x));  x *= 0.5 every n layers
    logits = head(LN_out(x))

The WKV recurrence per head, with r, k, v, w (decay in (0, 1)) and the bonus u:
    y_t = r_t . (S + diag(u) k_t^T v_t),   S <- diag(w_t) S + k_t^T v_t
State (token shifts and S) lives in a RecurrentState instead of a KV cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from corral.models.decoder import Norm, load_norm
from corral.models.rwkv_common import (
    GatedChannelMix,
    RecurrentLM,
    RecurrentState,
    WkvHeadArgs,
    flat_vector,
    group_norm,
    head_state,
    matmul,
)
from corral.models.weights import Linear, TensorSource, to_float


@dataclass(frozen=True)
class ModelArgs(WkvHeadArgs):
    """RWKV-6 hyper-parameters: those of every head-wise RWKV (WkvHeadArgs)."""


@dataclass
class Block:
    attn_norm: Norm
    ffn_norm: Norm
    lerp_x: torch.Tensor  # [E]
    lerp: torch.Tensor  # [5, E]: w, k, v, r, g
    w1: Linear  # [5 * X, E]
    w2: torch.Tensor  # [5, E, X]
    first: torch.Tensor  # [H, S]: the bonus u
    decay: torch.Tensor  # [E]
    decay_w1: Linear
    decay_w2: Linear
    key: Linear
    value: Linear
    receptance: Linear
    gate: Linear
    ln_x: Norm
    output: Linear
    channel_mix: GatedChannelMix


def wkv6(
    r: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: torch.Tensor, u: torch.Tensor,
    s: torch.Tensor,
) -> torch.Tensor:  # fmt: skip
    """r, k, v, w [B, T, H, S]; u [H, S]; s [B, H, S(key), S(value)], updated in place.
    Returns y [B, T, H, S]."""
    ys = []
    state = s
    for i in range(r.shape[1]):
        kv = k[:, i, :, :, None] * v[:, i, :, None, :]  # [B, H, K, V]
        ys.append(torch.einsum("bhk,bhkv->bhv", r[:, i], state + u[..., None] * kv))
        state = state * w[:, i, :, :, None] + kv
    s.copy_(state)
    return torch.stack(ys, dim=1)


class Model(RecurrentLM[ModelArgs]):
    """An RWKV-6 network built from GGUF tensors (names as llama.cpp has them)."""

    args_class = ModelArgs

    def __init__(self, args: ModelArgs, src: TensorSource) -> None:
        super().__init__(args, src)
        self.blocks = [self._block(src, f"blk.{i}.") for i in range(args.n_layers)]

    @staticmethod
    def _block(src: TensorSource, p: str) -> Block:
        dev = src.device.torch_device
        tm = p + "time_mix_"
        if src.has(tm + "lerp_fused.weight"):
            lerp = src.vector(tm + "lerp_fused.weight").reshape(5, -1)
        else:  # older files: one vector each
            lerp = torch.stack([flat_vector(src, tm + f"lerp_{c}.weight") for c in "wkvrg"])
        return Block(
            attn_norm=load_norm(src, p + "attn_norm", optional_bias=False),
            ffn_norm=load_norm(src, p + "attn_norm_2", optional_bias=False),
            lerp_x=flat_vector(src, tm + "lerp_x.weight"),
            lerp=lerp,
            w1=src.weight(tm + "w1.weight"),
            w2=to_float(src.info(tm + "w2.weight")).to(dev),
            first=src.vector(tm + "first.weight"),
            decay=flat_vector(src, tm + "decay.weight"),
            decay_w1=src.weight(tm + "decay_w1.weight"),
            decay_w2=src.weight(tm + "decay_w2.weight"),
            key=src.weight(tm + "key.weight"),
            value=src.weight(tm + "value.weight"),
            receptance=src.weight(tm + "receptance.weight"),
            gate=src.weight(tm + "gate.weight"),
            ln_x=load_norm(src, tm + "ln", optional_bias=False),
            output=src.weight(tm + "output.weight"),
            channel_mix=GatedChannelMix.load(src, p),
        )

    def make_cache(self, max_len: int, batch: int = 1) -> RecurrentState:
        return head_state(self.args, self.device, max_len, batch)

    def _time_mix(self, blk: Block, x: torch.Tensor, st: RecurrentState, i: int) -> torch.Tensor:
        a, dt = self.args, self.device.dtype
        b, t, _ = x.shape
        heads = (b, t, a.n_head, a.head_size)
        sx = st.token_shift(i, 0, x)  # x_prev - x [B, T, E]
        xxx = x + sx * blk.lerp_x
        h = torch.tanh(matmul(blk.w1, xxx, dt)).view(b, t, 5, -1)  # [B, T, 5, X]
        m = torch.einsum("btfx,fex->btfe", h, blk.w2)  # [B, T, 5, E]
        xw, xk, xv, xr, xg = (x[:, :, None] + sx[:, :, None] * (m + blk.lerp)).unbind(2)
        r = matmul(blk.receptance, xr, dt).view(heads)
        k = matmul(blk.key, xk, dt).view(heads)
        v = matmul(blk.value, xv, dt).view(heads)
        g = F.silu(matmul(blk.gate, xg, dt))
        w = matmul(blk.decay_w2, torch.tanh(matmul(blk.decay_w1, xw, dt)), dt) + blk.decay
        w = torch.exp(-torch.exp(w)).view(heads)
        y = wkv6(r, k, v, w, blk.first, st.wkv[i]).reshape(b, t, -1)  # [B, T, E]
        y = group_norm(y, blk.ln_x, a.head_size)
        return matmul(blk.output, y * g, dt)
