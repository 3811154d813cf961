"""What the RWKV family shares: the recurrent state that stands in for a KV cache, token
shift, layer norms, and float32 matmuls on any device.

An RWKV layer carries two things from one token to the next: the normalized input of its
time-mix and of its channel-mix (token shift), and the WKV state (a matrix per head for
v6/v7, running sums for v4). `RecurrentState` holds them for `batch` rows and plays the part
of the KV cache for the engine: `offset` counts the tokens consumed, a forward pass at offset
0 starts from a zero state (a fresh generation), and `truncate` can keep the whole history
or none of it, since a state cannot be rewound. The CUDA-graph decoder wraps it in its
StaticCache; `enter_state` unwraps that. Continuous batching (slots) is not offered.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from corral.engine.cuda_graph import StaticCache
from corral.errors import UnsupportedError
from corral.models.weights import Linear


class RecurrentLM:
    """Base of the RWKV models: marks a network whose cache is a RecurrentState, which the
    continuous-batching scheduler refuses (it needs slots and prefix copies)."""


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

    def nbytes(self) -> int:
        return sum(x.numel() * x.element_size() for x in (self.shift, self.wkv))

    def slot(self, index: int, offset: int) -> None:
        raise UnsupportedError(_NO_SLOTS)

    def copy_slot(self, src: int, dst: int, length: int) -> None:
        raise UnsupportedError(_NO_SLOTS)


_NO_SLOTS = (
    "RWKV models keep a recurrent state, which continuous batching does not support yet; "
    "use corral.load(...).generate()"
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
        raise UnsupportedError(_NO_SLOTS)
    cache.begin()
    return cache


def token_shift(x: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
    """x [B, T, E], prev [B, E] (the row before x) -> the previous row of each: [B, T, E]."""
    return torch.cat([prev[:, None], x[:, :-1]], dim=1)


def layer_norm(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float) -> torch.Tensor:
    return F.layer_norm(x, (x.shape[-1],), w, b, eps)


def group_norm(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, head_size: int, eps: float = 64e-5
) -> torch.Tensor:
    """Per-head layer norm of x [B, T, E] (heads of head_size), then w, b [E]; llama.cpp's
    eps for the WKV output (64e-5) is the default."""
    bt = x.shape[:-1]
    h = F.layer_norm(x.reshape(*bt, -1, head_size), (head_size,), eps=eps)
    return h.reshape(*bt, -1) * w + b


def matmul(w: Linear, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """w(x) with x cast to the weights' compute dtype; float32 out. The residual stream and
    the state stay float32 on every device (RWKV's state is sensitive to rounding)."""
    return w(x.to(dtype)).float()
