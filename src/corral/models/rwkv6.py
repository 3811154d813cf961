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

from corral.engine.device import CPU, Device
from corral.gguf.hparams import HParams
from corral.gguf.reader import GGUFFile
from corral.models.rwkv_common import (
    RecurrentLM,
    RecurrentState,
    enter_state,
    group_norm,
    layer_norm,
    matmul,
    token_shift,
)
from corral.models.weights import Linear, TensorSource, to_float

Norm = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class ModelArgs:
    n_layers: int
    n_embd: int
    head_size: int
    norm_eps: float
    rescale_every: int  # halve the residual stream after every this many blocks (0: never)
    context_length: int
    vocab_size: int

    @property
    def n_head(self) -> int:
        return self.n_embd // self.head_size

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> ModelArgs:
        hp = HParams(gguf.metadata, gguf.architecture, gguf.path.name)
        vocab = hp.int("vocab_size", 0) or len(gguf.get("tokenizer.ggml.tokens", []))
        return cls(
            n_layers=hp.int("block_count"),
            n_embd=hp.int("embedding_length"),
            head_size=hp.int("wkv.head_size"),
            norm_eps=hp.float("attention.layer_norm_epsilon", 1e-5),
            rescale_every=hp.int("rescale_every_n_layers", 0),
            context_length=hp.int("context_length", 4096),
            vocab_size=vocab,
        )


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
    cm_lerp_k: torch.Tensor  # [E]
    cm_lerp_r: torch.Tensor  # [E]
    cm_key: Linear
    cm_value: Linear
    cm_receptance: Linear


def _vec(src: TensorSource, name: str) -> torch.Tensor:
    return src.vector(name).reshape(-1)


def _norm(src: TensorSource, name: str) -> Norm:
    return src.vector(name + ".weight"), src.vector(name + ".bias")


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


class Model(RecurrentLM):
    """An RWKV-6 network built from GGUF tensors (names as llama.cpp has them)."""

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
        dev = src.device.torch_device
        tm = p + "time_mix_"
        if src.has(tm + "lerp_fused.weight"):
            lerp = src.vector(tm + "lerp_fused.weight").reshape(5, -1)
        else:  # older files: one vector each
            lerp = torch.stack([_vec(src, tm + f"lerp_{c}.weight") for c in "wkvrg"])
        return Block(
            attn_norm=_norm(src, p + "attn_norm"),
            ffn_norm=_norm(src, p + "attn_norm_2"),
            lerp_x=_vec(src, tm + "lerp_x.weight"),
            lerp=lerp,
            w1=src.weight(tm + "w1.weight"),
            w2=to_float(src.info(tm + "w2.weight")).to(dev),
            first=src.vector(tm + "first.weight"),
            decay=_vec(src, tm + "decay.weight"),
            decay_w1=src.weight(tm + "decay_w1.weight"),
            decay_w2=src.weight(tm + "decay_w2.weight"),
            key=src.weight(tm + "key.weight"),
            value=src.weight(tm + "value.weight"),
            receptance=src.weight(tm + "receptance.weight"),
            gate=src.weight(tm + "gate.weight"),
            ln_x=_norm(src, tm + "ln"),
            output=src.weight(tm + "output.weight"),
            cm_lerp_k=_vec(src, p + "channel_mix_lerp_k.weight"),
            cm_lerp_r=_vec(src, p + "channel_mix_lerp_r.weight"),
            cm_key=src.weight(p + "channel_mix_key.weight"),
            cm_value=src.weight(p + "channel_mix_value.weight"),
            cm_receptance=src.weight(p + "channel_mix_receptance.weight"),
        )

    def make_cache(self, max_len: int, batch: int = 1) -> RecurrentState:
        a = self.args
        wkv_shape = (a.n_head, a.head_size, a.head_size)
        return RecurrentState(
            a.n_layers, a.n_embd, wkv_shape, max_len, batch, self.device.torch_device
        )

    def _time_mix(self, blk: Block, x: torch.Tensor, st: RecurrentState, i: int) -> torch.Tensor:
        a, dt = self.args, self.device.dtype
        b, t, _ = x.shape
        heads = (b, t, a.n_head, a.head_size)
        sx = token_shift(x, st.shift[i, 0]) - x  # [B, T, E]
        st.shift[i, 0].copy_(x[:, -1])
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
        y = group_norm(y, *blk.ln_x, a.head_size)
        return matmul(blk.output, y * g, dt)

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
