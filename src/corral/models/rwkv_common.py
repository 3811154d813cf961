"""What the RWKV family shares: hyper-parameters (`RwkvArgs`, `WkvHeadArgs`), the embedding
and output head around the blocks (`RecurrentLM`), RWKV-4/6's channel-mix, the recurrent
state that stands in for a KV cache, token shift, group norm, and float32 matmuls on any
device. Each version's time-mix and forward pass stay in its own file.

An RWKV layer carries two things from one token to the next: the normalized input of its
time-mix and of its channel-mix (token shift), and the WKV state (a matrix per head for
v6/v7, running sums for v4). `RecurrentState` holds them for `batch` rows and plays the part
of the KV cache for the engine: `offset` counts the tokens consumed, a forward pass at offset
0 starts from a zero state (a fresh generation), and `truncate` can keep the whole history
or none of it, since a state cannot be rewound. The CUDA-graph decoder wraps it in its
StaticCache; `enter_state` unwraps that. The continuous-batching scheduler serves these
models with one RecurrentState (batch 1) per slot, stacking the states of the generating slots
into one batch for each decode step (engine/slots.py, `RecurrentSlots`); a state has no
KV-cache slot views or prefix copies, so no prompt prefix is shared between requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar

import torch
import torch.nn.functional as F

from corral.engine.cuda_graph import StaticCache
from corral.engine.device import Device
from corral.errors import UnsupportedError
from corral.gguf.hparams import HParams
from corral.gguf.reader import GGUFFile
from corral.models.decoder import ArgsBase, GGUFModel, Norm, layer_norm, load_norm, plus
from corral.models.weights import Linear, TensorSource


@dataclass(frozen=True)
class RwkvArgs(ArgsBase):
    """ArgsBase plus the LayerNorm epsilon every RWKV file has, and the residual rescaling
    of RWKV-4/6 files."""

    norm_eps: float
    rescale_every: int  # halve the residual stream after every this many blocks (0: never)

    CONTEXT_LENGTH: ClassVar[int] = 4096
    VOCAB_FROM_METADATA: ClassVar[bool] = True

    @classmethod
    def read(cls, hp: HParams, gguf: GGUFFile) -> dict[str, Any]:
        return super().read(hp, gguf) | {
            "norm_eps": hp.float("attention.layer_norm_epsilon", 1e-5),
            "rescale_every": hp.int("rescale_every_n_layers", 0),
        }


@dataclass(frozen=True)
class WkvHeadArgs(RwkvArgs):
    """RwkvArgs plus the WKV head width (RWKV-6 and 7: a matrix state per head)."""

    head_size: int

    @property
    def n_head(self) -> int:
        return self.n_embd // self.head_size

    @classmethod
    def read(cls, hp: HParams, gguf: GGUFFile) -> dict[str, Any]:
        return super().read(hp, gguf) | {"head_size": hp.int("wkv.head_size")}


R = TypeVar("R", bound=RwkvArgs)


class RecurrentLM(GGUFModel[R]):
    """Base of the RWKV models: the embeddings with their LayerNorm and the output head with
    its own. It also marks a network whose cache is a RecurrentState: the scheduler gives
    such a model a state per slot (engine/slots.py, `RecurrentSlots`) instead of the slots
    and prefix copies of a shared KV cache."""

    def __init__(self, args: R, src: TensorSource) -> None:
        super().__init__(args, src)
        self.tok_norm = load_norm(src, "token_embd_norm", optional_bias=False)
        self.output_norm = load_norm(src, "output_norm", optional_bias=False)
        self.output = src.weight("output.weight")

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, T] -> the normalized float32 embeddings [B, T, E] (ln0)."""
        tokens = tokens.to(self.device.torch_device)
        return layer_norm(self.tok_embd.rows(tokens).float(), self.tok_norm, self.args.norm_eps)

    def head(self, x: torch.Tensor, last_only: bool) -> torch.Tensor:
        """The residual stream [B, T, E] -> logits [B, T, V] ([B, 1, V] when last_only)."""
        if last_only:
            x = x[:, -1:]
        x = layer_norm(x, self.output_norm, self.args.norm_eps)
        return matmul(self.output, x, self.device.dtype)

    def _time_mix(self, blk: Any, x: torch.Tensor, st: RecurrentState, i: int) -> torch.Tensor:
        raise NotImplementedError

    @torch.inference_mode()
    def forward(
        self, tokens: torch.Tensor, cache: RecurrentState, last_only: bool = False
    ) -> torch.Tensor:
        """tokens [B, T] -> logits [B, T, V] float32 ([B, 1, V] when last_only); the state
        moves on by T tokens (from zero when the cache's offset is 0). The RWKV-4/6 layer
        loop (time mix, channel mix, optional halving); RWKV-7 has its own."""
        a, dt = self.args, self.device.dtype
        st = enter_state(cache)
        x = self.embed(tokens)  # [B, T, E]
        for i, blk in enumerate(self.blocks):  # type: ignore[attr-defined]
            x = x + self._time_mix(blk, layer_norm(x, blk.attn_norm, a.norm_eps), st, i)
            h = layer_norm(x, blk.ffn_norm, a.norm_eps)
            x = x + blk.channel_mix(h, st.token_shift(i, 1, h), dt)
            if a.rescale_every and (i + 1) % a.rescale_every == 0:
                x = x * 0.5
        cache.advance(tokens.shape[1])
        return self.head(x, last_only)


class RecurrentState:
    """Token-shift and WKV state of every layer for `batch` rows that advance together."""

    def __init__(
        self,
        n_layers: int,
        n_embd: int,
        wkv_shape: tuple[int, ...],
        max_len: int,
        batch: int = 1,
        device: torch.device | str = "cpu",
        wkv_init: torch.Tensor | None = None,
    ) -> None:
        self.max_len = max_len
        self.batch = batch
        self.device = torch.device(device)
        self.offset = 0
        # shift[l, 0]: last time-mix input, shift[l, 1]: last channel-mix input  [L, 2, B, E]
        self.shift = torch.zeros(n_layers, 2, batch, n_embd, device=self.device)
        self.wkv = torch.zeros(n_layers, batch, *wkv_shape, device=self.device)  # [L, B, ...]
        # what a fresh row's WKV state holds (broadcast to wkv_shape); None: zeros
        self.wkv_init = None if wkv_init is None else wkv_init.to(self.device)
        self.reset()

    def begin(self) -> None:
        """Called by the model before a forward pass: at offset 0, start from zero."""
        if self.offset == 0:
            self.reset()

    def reset(self) -> None:
        self.shift.zero_()
        if self.wkv_init is None:
            self.wkv.zero_()
        else:
            self.wkv.copy_(self.wkv_init.expand_as(self.wkv))
        self.offset = 0

    def advance(self, t: int) -> None:
        self.offset += t

    def truncate(self, n: int) -> None:
        """Keep the first n tokens: all of them (n >= offset) or, since a recurrent state
        cannot be rewound, none (the next forward pass starts afresh)."""
        if n < self.offset:
            self.reset()

    def token_shift(self, layer: int, mix: int, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, E], the input of `layer`'s time-mix (mix 0) or channel-mix (1) ->
        x_prev - x [B, T, E]; the state keeps x's last row for the next call."""
        sx = token_shift(x, self.shift[layer, mix]) - x
        self.shift[layer, mix].copy_(x[:, -1])
        return sx

    def nbytes(self) -> int:
        return sum(x.numel() * x.element_size() for x in (self.shift, self.wkv))

    def slot(self, index: int, offset: int) -> None:
        raise UnsupportedError(_NO_SLOTS)

    def copy_slot(self, src: int, dst: int, length: int) -> None:
        raise UnsupportedError(_NO_SLOTS)


_NO_SLOTS = (
    "an RWKV recurrent state has no KV-cache slot views or prefix copies; "
    "the scheduler keeps one RecurrentState per slot instead (engine/slots.py)"
)


def enter_state(cache: object) -> RecurrentState:
    """The RecurrentState behind what the engine handed a model's forward pass: the state
    itself (zeroed first at offset 0), or the CUDA-graph decoder's StaticCache around it
    (one decode step, replayed: nothing may be reset there)."""
    if isinstance(cache, StaticCache):
        state = cache.kv
        if isinstance(state, RecurrentState):
            return state
    if not isinstance(cache, RecurrentState):
        raise UnsupportedError(
            f"RWKV models run on a RecurrentState (their make_cache()), not {type(cache).__name__}"
        )
    cache.begin()
    return cache


def token_shift(x: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """x [B, T, E], prev [B, E] (the row before x) -> the previous row of each: [B, T, E]."""
    return torch.cat([prev[:, None], x[:, :-1]], dim=1)


def head_state(args: WkvHeadArgs, device: Device, max_len: int, batch: int = 1) -> RecurrentState:
    """A zero RecurrentState with a [head_size, head_size] WKV matrix per head (v6, v7)."""
    wkv_shape = (args.n_head, args.head_size, args.head_size)
    return RecurrentState(
        args.n_layers, args.n_embd, wkv_shape, max_len, batch, device.torch_device
    )


def flat_vector(src: TensorSource, name: str) -> torch.Tensor:
    """A GGUF vector (stored [1, 1, E] by llama.cpp's converter) as [E]."""
    return src.vector(name).reshape(-1)


@dataclass
class GatedChannelMix:
    """RWKV-4/6's channel-mix: a squared-ReLU MLP gated by a sigmoid, on a lerp of each
    token's input towards the previous one's."""

    lerp_k: torch.Tensor  # [E]
    lerp_r: torch.Tensor  # [E]
    key: Linear
    value: Linear
    receptance: Linear

    @classmethod
    def load(cls, src: TensorSource, p: str) -> Self:
        """Block prefix p's channel_mix_* tensors."""
        cm = p + "channel_mix_"
        return cls(
            lerp_k=flat_vector(src, cm + "lerp_k.weight"),
            lerp_r=flat_vector(src, cm + "lerp_r.weight"),
            key=src.weight(cm + "key.weight"),
            value=src.weight(cm + "value.weight"),
            receptance=src.weight(cm + "receptance.weight"),
        )

    def __call__(self, x: torch.Tensor, sx: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """x [B, T, E] (normalized), sx = x_prev - x -> [B, T, E]."""
        r = torch.sigmoid(matmul(self.receptance, x + sx * self.lerp_r, dtype))
        k = torch.relu(matmul(self.key, x + sx * self.lerp_k, dtype)).square()
        return r * matmul(self.value, k, dtype)


def group_norm(x: torch.Tensor, norm: Norm, head_size: int, eps: float = 64e-5) -> torch.Tensor:
    """Per-head layer norm of x [B, T, E] (heads of head_size), then norm's weight and bias
    [E]; llama.cpp's eps for the WKV output (64e-5) is the default."""
    bt = x.shape[:-1]
    h = F.layer_norm(x.reshape(*bt, -1, head_size), (head_size,), eps=eps)
    return plus(h.reshape(*bt, -1) * norm[0], norm[1])


def matmul(w: Linear, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """w(x) with x cast to the weights' compute dtype; float32 out. The residual stream and
    the state stay float32 on every device (RWKV's state is sensitive to rounding)."""
    return w(x.to(dtype)).float()
