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

import torch

from corral.engine.device import CPU, Device
from corral.gguf.hparams import HParams
from corral.gguf.reader import GGUFFile
from corral.models.rwkv_common import (
    RecurrentLM,
    RecurrentState,
    enter_state,
    layer_norm,
    matmul,
    token_shift,
)
from corral.models.weights import Linear, TensorSource

Norm = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class ModelArgs:
    n_layers: int
    n_embd: int
    norm_eps: float
    rescale_every: int  # halve the residual stream after every this many blocks (0: never)
    context_length: int
    vocab_size: int

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> ModelArgs:
        hp = HParams(gguf.metadata, gguf.architecture, gguf.path.name)
        vocab = hp.int("vocab_size", 0) or len(gguf.get("tokenizer.ggml.tokens", []))
        return cls(
            n_layers=hp.int("block_count"),
            n_embd=hp.int("embedding_length"),
            norm_eps=hp.float("attention.layer_norm_epsilon", 1e-5),
            rescale_every=hp.int("rescale_every_n_layers", 0),
            context_length=hp.int("context_length", 1024),
            vocab_size=vocab,
        )


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
    cm_lerp_k: torch.Tensor
    cm_lerp_r: torch.Tensor
    cm_key: Linear
    cm_value: Linear
    cm_receptance: Linear


def _vec(src: TensorSource, name: str) -> torch.Tensor:
    return src.vector(name).reshape(-1)


def _norm(src: TensorSource, name: str) -> Norm:
    return src.vector(name + ".weight"), src.vector(name + ".bias")


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


class Model(RecurrentLM):
    """An RWKV-4 network built from GGUF tensors."""

    def __init__(self, args: ModelArgs, src: TensorSource) -> None:
        self.args = args
        self.device = src.device
        self.vocab_size = args.vocab_size
        self.context_length = args.context_length
        self.tok_embd = src.weight("token_embd.weight")
        self.tok_norm = _norm(src, "token_embd_norm")
        self.output_norm = _norm(src, "output_norm")
        self.output = src.weight("output.weight")
        self.blocks = [self._block(src, f"blk.{i}.") for i in range(args.n_layers)]

    @classmethod
    def from_gguf(cls, gguf: GGUFFile, device: Device = CPU) -> Model:
        return cls(ModelArgs.from_gguf(gguf), TensorSource(gguf, device))

    @staticmethod
    def _block(src: TensorSource, p: str) -> Block:
        tm, cm = p + "time_mix_", p + "channel_mix_"
        return Block(
            attn_norm=_norm(src, p + "attn_norm"),
            ffn_norm=_norm(src, p + "attn_norm_2"),
            lerp=torch.stack([_vec(src, tm + f"lerp_{c}.weight") for c in "kvr"]),
            first=_vec(src, tm + "first.weight"),
            decay=-torch.exp(_vec(src, tm + "decay.weight")),
            key=src.weight(tm + "key.weight"),
            value=src.weight(tm + "value.weight"),
            receptance=src.weight(tm + "receptance.weight"),
            output=src.weight(tm + "output.weight"),
            cm_lerp_k=_vec(src, cm + "lerp_k.weight"),
            cm_lerp_r=_vec(src, cm + "lerp_r.weight"),
            cm_key=src.weight(cm + "key.weight"),
            cm_value=src.weight(cm + "value.weight"),
            cm_receptance=src.weight(cm + "receptance.weight"),
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
        sx = token_shift(x, st.shift[i, 0]) - x  # [B, T, E]
        st.shift[i, 0].copy_(x[:, -1])
        xk, xv, xr = (x[:, :, None] + sx[:, :, None] * blk.lerp).unbind(2)
        k, v = matmul(blk.key, xk, dt), matmul(blk.value, xv, dt)
        r = torch.sigmoid(matmul(blk.receptance, xr, dt))
        return matmul(blk.output, r * wkv4(k, v, blk.decay, blk.first, st.wkv[i]), dt)

    def _channel_mix(self, blk: Block, x: torch.Tensor, st: RecurrentState, i: int) -> torch.Tensor:
        dt = self.device.dtype
        sx = token_shift(x, st.shift[i, 1]) - x
        st.shift[i, 1].copy_(x[:, -1])
        r = torch.sigmoid(matmul(blk.cm_receptance, x + sx * blk.cm_lerp_r, dt))
        k = torch.relu(matmul(blk.cm_key, x + sx * blk.cm_lerp_k, dt)).square()
        return r * matmul(blk.cm_value, k, dt)

    @torch.inference_mode()
    def forward(
        self, tokens: torch.Tensor, cache: RecurrentState, last_only: bool = False
    ) -> torch.Tensor:
        """tokens [B, T] -> logits [B, T, V] float32 ([B, 1, V] when last_only); the state
        moves on by T tokens (from zero when the cache's offset is 0)."""
        a = self.args
        st = enter_state(cache)
        tokens = tokens.to(self.device.torch_device)
        x = layer_norm(self.tok_embd.rows(tokens).float(), *self.tok_norm, a.norm_eps)
        for i, blk in enumerate(self.blocks):
            x = x + self._time_mix(blk, layer_norm(x, *blk.attn_norm, a.norm_eps), st, i)
            x = x + self._channel_mix(blk, layer_norm(x, *blk.ffn_norm, a.norm_eps), st, i)
            if a.rescale_every and (i + 1) % a.rescale_every == 0:
                x = x * 0.5
        cache.advance(tokens.shape[1])
        if last_only:
            x = x[:, -1:]
        x = layer_norm(x, *self.output_norm, a.norm_eps)
        return matmul(self.output, x, self.device.dtype)
