"""RWKV-4 (the RWKV-LM / rwkv.cpp generation; transformers' RwkvForCausalLM) from GGUF.

llama.cpp has no RWKV-4, so corral names it: `general.architecture` = "rwkv", with the
tensor names of llama.cpp's rwkv6 where the pieces match (token_embd_norm = ln0,
attn_norm / attn_norm_2 = ln1 / ln2, time_mix_{key,value,receptance,output,first,decay},
time_mix_lerp_{k,v,r}, channel_mix_*). As in rwkv6 files, a lerp mixes towards the previous
token: x + (x_prev - x) * lerp, so lerp = 1 - the checkpoint's time_mix (corral convert does
that). The WKV recurrence per channel, with decay w = -exp(time_decay) and bonus u:

    y_t = (a + e^(u + k_t) v_t) / (b + e^(u + k_t)),   a <- e^w a + e^k_t v_t,  b <- e^w b + e^k_t

kept as (a, b) scaled by e^-p with the running maximum exponent p, as RWKV-LM does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from corral.models.decoder import Norm, load_norm
from corral.models.rwkv_common import (
    GatedChannelMix,
    RecurrentLM,
    RecurrentState,
    RwkvArgs,
    flat_vector,
    matmul,
)
from corral.models.weights import Linear, TensorSource


@dataclass(frozen=True)
class ModelArgs(RwkvArgs):
    """RWKV-4 hyper-parameters: RwkvArgs with a shorter default context."""

    CONTEXT_LENGTH: ClassVar[int] = 1024


@dataclass
class Block:
    attn_norm: Norm
    ffn_norm: Norm
    lerp: torch.Tensor  # [3, E]: k, v, r
    first: torch.Tensor  # [E]: u
    decay: torch.Tensor  # [E]: w = -exp(time_decay)
    key: Linear
    value: Linear
    receptance: Linear
    output: Linear
    channel_mix: GatedChannelMix


def wkv4(
    k: torch.Tensor, v: torch.Tensor, w: torch.Tensor, u: torch.Tensor, s: torch.Tensor
) -> torch.Tensor:
    """k, v [B, T, E]; w, u [E]; s [B, 3, E] = (a, b, p), updated in place -> y [B, T, E]."""
    a, b, p = s.unbind(1)
    ys = []
    for i in range(k.shape[1]):
        kt, vt = k[:, i], v[:, i]
        ww = u + kt
        q = torch.maximum(p, ww)
        e1, e2 = torch.exp(p - q), torch.exp(ww - q)
        ys.append((e1 * a + e2 * vt) / (e1 * b + e2))
        ww = p + w
        q = torch.maximum(ww, kt)
        e1, e2 = torch.exp(ww - q), torch.exp(kt - q)
        a, b, p = e1 * a + e2 * vt, e1 * b + e2, q
    s.copy_(torch.stack([a, b, p], dim=1))
    return torch.stack(ys, dim=1)


class Model(RecurrentLM[ModelArgs]):
    """An RWKV-4 network built from GGUF tensors."""

    args_class = ModelArgs

    def __init__(self, args: ModelArgs, src: TensorSource) -> None:
        super().__init__(args, src)
        self.blocks = [self._block(src, f"blk.{i}.") for i in range(args.n_layers)]

    @staticmethod
    def _block(src: TensorSource, p: str) -> Block:
        tm = p + "time_mix_"
        return Block(
            attn_norm=load_norm(src, p + "attn_norm", optional_bias=False),
            ffn_norm=load_norm(src, p + "attn_norm_2", optional_bias=False),
            lerp=torch.stack([flat_vector(src, tm + f"lerp_{c}.weight") for c in "kvr"]),
            first=flat_vector(src, tm + "first.weight"),
            decay=-torch.exp(flat_vector(src, tm + "decay.weight")),
            key=src.weight(tm + "key.weight"),
            value=src.weight(tm + "value.weight"),
            receptance=src.weight(tm + "receptance.weight"),
            output=src.weight(tm + "output.weight"),
            channel_mix=GatedChannelMix.load(src, p),
        )

    def make_cache(self, max_len: int, batch: int = 1) -> RecurrentState:
        a = self.args
        init = torch.zeros(3, a.n_embd)
        init[2] = -1e38  # p: no exponent seen yet (a = b = 0)
        return RecurrentState(
            a.n_layers, a.n_embd, (3, a.n_embd), max_len, batch, self.device.torch_device, init
        )

    def _time_mix(self, blk: Block, x: torch.Tensor, st: RecurrentState, i: int) -> torch.Tensor:
        dt = self.device.dtype
        sx = st.token_shift(i, 0, x)  # x_prev - x [B, T, E]
        xk, xv, xr = (x[:, :, None] + sx[:, :, None] * blk.lerp).unbind(2)
        k, v = matmul(blk.key, xk, dt), matmul(blk.value, xv, dt)
        r = torch.sigmoid(matmul(blk.receptance, xr, dt))
        return matmul(blk.output, r * wkv4(k, v, blk.decay, blk.first, st.wkv[i]), dt)
