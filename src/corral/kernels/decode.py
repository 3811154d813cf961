"""Every block of a decode step in one C call (`corral._decode`): llama-family and Gemma 3 blocks.

A one-token step of a small model spends more time dispatching than computing: each block is
~25 torch ops and C calls of a few microseconds each. `DecodePlan` binds a model's block weights
once; `DecodePlan.step` then runs all blocks on the new tokens' hidden states in C, through the
same kernels the eager path calls (quantized matmuls, float16-cache attention, RMS norm, rope,
the gate activations), so the result is the eager path's bit for bit. The few element-wise ops
the eager path leaves to torch (adds, the float16 cache stores) are redone with torch's
arithmetic.

The block kinds differ by what is present, not by separate code: optional q/k/v biases
(qwen2), per-head q/k norms and post-attention / post-FFN norms (Gemma 3) are fields of
`BlockWeights` (None where absent); the gate's activation (silu, or Gemma's table GELU), each
block's sliding window and which of the step's rope cos/sin sets it takes (Gemma 3's local and
global bases) are arguments of `DecodePlan`.

`available()` is False where the extension (or one of the three it calls) could not be built;
the models then keep to their eager path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from corral import kernels

try:  # torch first (shared OpenMP runtime); imports _qkernels, _attn and _rowops itself
    from corral import _decode as _ext
except ImportError:  # pragma: no cover - the extension is built by pip install
    _ext = None

__all__ = ["BlockWeights", "DecodePlan", "available"]


def available() -> bool:
    """Whether corral._decode is importable."""
    return _ext is not None


ACTIVATIONS = ("silu", "gelu_tanh")  # the gate activations a plan takes (see decode.c)


@dataclass(frozen=True)
class BlockWeights:
    """One pre-norm block's tensors as the fused step reads them: norms [E] float32, optional
    q/k/v biases, the seven projections as kernel-backed quantized matrices, and Gemma 3's
    optional norms: q_norm/k_norm [D] per head, attn_post_norm/ffn_post_norm [E] on each
    half's output before its residual add."""

    attn_norm: torch.Tensor
    ffn_norm: torch.Tensor
    bq: torch.Tensor | None
    bk: torch.Tensor | None
    bv: torch.Tensor | None
    wq: kernels.QMatrix
    wk: kernels.QMatrix
    wv: kernels.QMatrix
    wo: kernels.QMatrix
    gate: kernels.QMatrix
    up: kernels.QMatrix
    down: kernels.QMatrix
    q_norm: torch.Tensor | None = None
    k_norm: torch.Tensor | None = None
    attn_post_norm: torch.Tensor | None = None
    ffn_post_norm: torch.Tensor | None = None


def _vector(t: torch.Tensor | None, n: int, what: str) -> int:
    """Address of a float32 CPU vector [n] (0 for None)."""
    if t is None:
        return 0
    if t.dtype is not torch.float32 or not t.is_cpu or t.shape != (n,) or not t.is_contiguous():
        raise ValueError(f"{what} must be a contiguous float32 CPU vector of {n}")
    return t.data_ptr()


def _matrix(q: kernels.QMatrix, n_out: int, k: int, what: str) -> tuple[int, int]:
    if q.n_out != n_out or q.k != k:
        raise ValueError(f"{what} is [{q.n_out}, {q.k}], expected [{n_out}, {k}]")
    return int(q.ggml_type), q.w.data_ptr()


class DecodePlan:
    """A stack of blocks bound for `step`: the model's tensors stay referenced here (the C
    plan holds their addresses).

    window: the sliding window of every block (None: none), or one per block (Gemma 3's local
    and global layers). rope_sets: per block, which cos/sin set of a step rotates its q and k
    (None: all set 0); a step passes max + 1 sets. activation: one of ACTIVATIONS."""

    def __init__(
        self, blocks: Sequence[BlockWeights], n_head: int, n_head_kv: int, head_dim: int,
        rope_dim: int, neox: bool, eps: float, scale: float,
        window: int | None | Sequence[int | None], rope_sets: Sequence[int] | None = None,
        activation: str = "silu",
    ) -> None:  # fmt: skip
        if _ext is None:
            raise RuntimeError("corral._decode is not built (reinstall corral: pip install -e .)")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, not {activation!r}")
        gelu = activation == "gelu_tanh"
        if not blocks:
            raise ValueError("no blocks")
        self.blocks = list(blocks)
        n = len(self.blocks)
        windows = list(window) if isinstance(window, Sequence) else [window] * n
        sets = [0] * n if rope_sets is None else list(rope_sets)
        if len(windows) != n or len(sets) != n:
            raise ValueError(f"expected {n} windows and rope sets")
        e = blocks[0].attn_norm.shape[0]
        f = blocks[0].gate.n_out
        nq, nk = n_head * head_dim, n_head_kv * head_dim
        layers = []
        for i, b in enumerate(self.blocks):
            layers.append(
                (
                    _vector(b.attn_norm, e, f"block {i} attn_norm"),
                    _vector(b.ffn_norm, e, f"block {i} ffn_norm"),
                    _vector(b.bq, nq, f"block {i} bq"),
                    _vector(b.bk, nk, f"block {i} bk"),
                    _vector(b.bv, nk, f"block {i} bv"),
                    _vector(b.q_norm, head_dim, f"block {i} q_norm"),
                    _vector(b.k_norm, head_dim, f"block {i} k_norm"),
                    _vector(b.attn_post_norm, e, f"block {i} attn_post_norm"),
                    _vector(b.ffn_post_norm, e, f"block {i} ffn_post_norm"),
                    _matrix(b.wq, nq, e, f"block {i} wq"),
                    _matrix(b.wk, nk, e, f"block {i} wk"),
                    _matrix(b.wv, nk, e, f"block {i} wv"),
                    _matrix(b.wo, e, nq, f"block {i} wo"),
                    _matrix(b.gate, f, e, f"block {i} gate"),
                    _matrix(b.up, f, e, f"block {i} up"),
                    _matrix(b.down, e, f, f"block {i} down"),
                    windows[i] or 0,
                    sets[i],
                )
            )
        self.n_rope = max(sets) + 1
        dims = (
            n, e, n_head, n_head_kv, head_dim, rope_dim, f, neox, eps, scale, gelu, self.n_rope,
            # the portable-C switches the eager calls use: CORRAL_QKERNELS_SCALAR for the
            # matmuls; attention's is a test-only argument, off in the models
            kernels._FORCE_SCALAR, False,
        )  # fmt: skip
        self._plan = _ext.plan(dims, tuple(layers))
        self.n_layers, self.n_embd, self.n_ff = n, e, f
        self.n_head_kv, self.head_dim, self.rope_dim = n_head_kv, head_dim, rope_dim
        # rows per call: a matrix's dense route would give the eager path other bits
        dense = min(m.dense_rows for b in self.blocks for m in _mats(b))
        self.max_rows = max(0, dense - 1)

    def kv_table(self, k: Sequence[torch.Tensor], v: Sequence[torch.Tensor]) -> torch.Tensor:
        """The cache buffers of every layer (float16 [slots, Hkv, len, D], CPU, unit stride
        on D, k and v strides equal) as the int64 [L, 5] table `step` reads."""
        if len(k) != self.n_layers or len(v) != self.n_layers:
            raise ValueError(f"expected {self.n_layers} k and v buffers")
        rows = []
        for kb, vb in zip(k, v, strict=True):
            want = (self.n_head_kv, self.head_dim)
            if (
                kb.dtype is not torch.float16 or vb.dtype is not torch.float16
                or not kb.is_cpu or not vb.is_cpu or kb.dim() != 4
                or kb.shape != vb.shape or tuple(kb.shape[1:2]) + (kb.shape[3],) != want
                or kb.stride() != vb.stride() or kb.stride(-1) != 1
            ):  # fmt: skip
                raise ValueError("cache buffers must be float16 CPU [slots, Hkv, len, D] pairs")
            rows.append((kb.data_ptr(), vb.data_ptr(), *kb.stride()[:3]))
        return torch.tensor(rows, dtype=torch.int64)

    def step(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv: torch.Tensor,
        slots: torch.Tensor, lengths: torch.Tensor, n_threads: int | None = None,
        one_token: bool = False, last_of: int = 0,
    ) -> None:  # fmt: skip
        """Runs every block on x [M, E] float32 (contiguous, updated in place): the new token
        of row m has rope angles cos/sin [M, R/2], or [S, M, R/2] for S >= n_rope sets (a
        model passes all of its sets, some of which a plan may not use: a tiny Gemma 3 with
        local layers only) and goes to position lengths[m] - 1 of cache
        slot slots[m] (int64 [M], checked against the buffers of `kv`, a kv_table). Rows may
        share a slot (several new tokens of one sequence); each attends to its slot's first
        lengths[m] positions, all rows' keys and values written first. one_token: the
        attention's summation order (corral.kernels.attention.decode_attention). last_of > 1:
        only every last_of-th row (each sequence's last of last_of new tokens) finishes the last
        block, as llama.cpp's last-logits-only graphs compute it; the other rows' x is left
        unfinished."""
        m = x.shape[0]
        if not 0 < m <= self.max_rows:
            raise ValueError(f"a fused step takes 1 to {self.max_rows} rows, got {m}")
        half = self.rope_dim // 2
        sets = cos.shape[0] if cos.dim() == 3 else 1
        want = (m, half) if cos.dim() == 2 else (sets, m, half)
        if (
            sets < self.n_rope or cos.dim() not in (2, 3)
            or x.dtype is not torch.float32 or not x.is_contiguous() or x.shape[1:] != (self.n_embd,)
            or cos.dtype is not torch.float32 or sin.dtype is not torch.float32
            or cos.shape != want or sin.shape != want
            or not cos.is_contiguous() or not sin.is_contiguous()
            or slots.dtype is not torch.int64 or lengths.dtype is not torch.int64
            or slots.shape != (m,) or lengths.shape != (m,)
            or not slots.is_contiguous() or not lengths.is_contiguous()
            or kv.dtype is not torch.int64 or kv.shape != (self.n_layers, 5)
        ):  # fmt: skip
            raise ValueError(
                "step takes x [M, E], cos/sin [M, R/2] or [S >= n_rope, M, R/2] float32 and "
                "int64 slots/lengths [M]"
            )
        _ext.step(  # type: ignore[union-attr]
            self._plan, x.data_ptr(), m, cos.data_ptr(), sin.data_ptr(), kv.data_ptr(),
            slots.data_ptr(), lengths.data_ptr(),
            torch.get_num_threads() if n_threads is None else n_threads, one_token, last_of,
        )  # fmt: skip


def _mats(b: BlockWeights) -> tuple[kernels.QMatrix, ...]:
    """The seven projections of a block."""
    return (b.wq, b.wk, b.wv, b.wo, b.gate, b.up, b.down)
