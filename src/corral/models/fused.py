"""The fused decode step of the llama family and Gemma 3: every block of a decode step in one
C call.

`FusedDecode.build(...)` binds a model's blocks once (corral.kernels.decode.DecodePlan) when
they all qualify: the CPU, float32 activations, kernel-backed quantized weights (no LoRA
wrappers, no float matrices), the C extensions built. Each step then goes to the plan when it
can (at most KERNEL_MAX_ROWS new tokens over the batch, on a float16 KVCache or SlotBatch)
and the caller runs its eager loop otherwise. The results are the eager loop's bit for bit
(tests/kernels/test_decode.py, tests/models/test_fused_decode.py): on SmolLM2-135M a decode
step takes about half the time, the Python and torch dispatch of 30 blocks gone.

Gemma 3's block is the same stack with more present (q/k norms per head, post-attention and
post-FFN norms, read from the blocks when they have them), table GELU instead of silu, a
window per layer and two rope sets (local and global layers): see `build`'s arguments.

CORRAL_FUSED_DECODE=0 keeps every step on the eager loop (for debugging, or for comparing);
setting a model's `fused` attribute to None does the same for that model.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence
from typing import Any

import torch

from corral.engine.kv_cache import KVCache, SlotBatch
from corral.kernels import decode
from corral.models import layers
from corral.models.weights import KERNEL_MAX_ROWS, BlockWeight, Linear

ENABLED = os.environ.get("CORRAL_FUSED_DECODE", "1") != "0"


# Gemma 3's norms a block may have besides the two pre-norms (BlockWeights fields)
_EXTRA_NORMS = ("q_norm", "k_norm", "attn_post_norm", "ffn_post_norm")


def _qmatrix(w: Linear) -> Any:
    """The QMatrix behind a kernel-backed BlockWeight, else None (LoRA, float, no kernels)."""
    return w.kernel if type(w) is BlockWeight else None


class FusedDecode:
    """A model's blocks bound for decode steps (see the module docstring)."""

    def __init__(self, plan: decode.DecodePlan) -> None:
        self.plan = plan
        self.max_rows = min(plan.max_rows, KERNEL_MAX_ROWS)
        # kv tables per KVCache, built on first use (the buffers never move)
        self._tables: weakref.WeakKeyDictionary[KVCache, torch.Tensor | None] = (
            weakref.WeakKeyDictionary()
        )

    @classmethod
    def build(
        cls, blocks: Sequence[Any], device_type: str, dtype: torch.dtype, n_head: int,
        n_head_kv: int, head_dim: int, rope_dim: int, neox: bool, eps: float,
        window: int | None | Sequence[int | None], *, scale: float | None = None,
        rope_sets: Sequence[int] | None = None, activation: str = "silu",
    ) -> FusedDecode | None:  # fmt: skip
        """The fused step for `blocks` (GluBlock-shaped: attn_norm, wq, wk, wv, wo, ffn_norm,
        gate, up, down; optional bq/bk/bv, and Gemma 3's q_norm/k_norm/attn_post_norm/
        ffn_post_norm), or None where the eager loop must run every step (see the module
        docstring).

        window: one for every block or one per block; scale: the attention scale (default
        1/sqrt(head_dim)); rope_sets: which cos/sin set each block takes (see __call__);
        activation: "silu", or "gelu_tanh" for layers.gelu_tanh's CPU table GELU."""
        if not ENABLED or layers._EXACT or not layers._ROWOPS or not decode.available():
            return None
        # GPUs (and float16/bfloat16 activations) keep their eager path: the C step reads
        # CPU float32 rows and float16 CPU caches only
        if device_type != "cpu" or dtype != torch.float32:
            return None
        specs = []
        for b in blocks:
            mats = [_qmatrix(getattr(b, n)) for n in ("wq", "wk", "wv", "wo", "gate", "up", "down")]
            if any(m is None for m in mats):
                return None
            bias = [getattr(b, n, None) for n in ("bq", "bk", "bv")]
            norms = {n: getattr(b, n, None) for n in _EXTRA_NORMS}
            specs.append(decode.BlockWeights(b.attn_norm, b.ffn_norm, *bias, *mats, **norms))
        try:
            plan = decode.DecodePlan(
                specs, n_head, n_head_kv, head_dim, rope_dim, neox, eps,
                layers.default_scale(head_dim) if scale is None else scale, window,
                rope_sets, activation,
            )  # fmt: skip
        except ValueError:  # a shape the C step does not take (e.g. head_dim > 512)
            return None
        return cls(plan) if plan.max_rows > 0 else None

    def _table(self, kv: KVCache) -> torch.Tensor | None:
        if kv not in self._tables:
            try:
                table: torch.Tensor | None = self.plan.kv_table(kv.k, kv.v)
            except ValueError:  # not float16 CPU buffers: the eager loop's business
                table = None
            self._tables[kv] = table
        return self._tables[kv]

    def __call__(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: object,
        last_only: bool = False,
    ) -> bool:  # fmt: skip
        """Run every block on x [B, T, E] (in place) when this step qualifies: cos/sin
        [B, 1, T, R/2] from layers.rope_cos_sin at the new positions, or [S, B, 1, T, R/2]
        (S such sets stacked, block i taking set rope_sets[i]). False (nothing done) when
        the eager loop must run it; the caller advances the cache either way. last_only: only
        each sequence's last row finishes the last block (the others are left unfinished), as
        in llama.cpp when only the last logits are wanted (see layers.last_rows).

        A step of several new tokens (a short prompt, a speculative draft being verified)
        qualifies too: each token is a row of its own, at its own position, as the eager
        loop's kernels and C attention compute it."""
        b, t, e = x.shape
        m = b * t
        if m > self.max_rows or not x.is_contiguous():
            return False
        kind = type(cache)
        if kind is KVCache:
            kv = cache
        elif kind is SlotBatch:
            kv = cache.cache  # type: ignore[attr-defined]
        else:
            return False
        table = self._table(kv)  # type: ignore[arg-type]
        if table is None:
            return False
        slots, lengths, _ = cache.step_rows(t)  # type: ignore[attr-defined]
        half = cos.shape[-1]
        # rows in [B, T] order: what step_rows and a [B, 1, T, R/2] reshape give; [S, M, R/2]
        # with S = 1 for a single set
        self.plan.step(
            x.view(m, e), cos.reshape(-1, m, half), sin.reshape(-1, m, half), table, slots,
            lengths, one_token=cache.one_token_sums(t),  # type: ignore[attr-defined]
            last_of=t if last_only and t > 1 else 0,
        )  # fmt: skip
        return True
