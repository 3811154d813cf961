"""Which of llama.cpp's kernels the quantized matmuls follow (corral._qkernels' switch).

llama.cpp picks a kernel per weight and per call (repacked, tiled or vec_dot: see order()),
and each sums in its own float order; these set which of those orders corral's kernels
reproduce, for the process (set_order, $CORRAL_MATMUL_ORDER) or for one thread's calls for a
while (rows_alone).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import torch  # noqa: F401 - first, as in corral.kernels: its libgomp serves our OpenMP

try:
    from corral import _qkernels as _ext
except ImportError:  # pragma: no cover - built by pip install
    _ext = None

__all__ = ["ORDERS", "order", "rows_alone", "set_order"]

# What the matmuls follow (see order()), as _qkernels numbers the modes.
ORDERS: Final[tuple[str, ...]] = ("vec_dot", "llama", "rows")


def _require():  # noqa: ANN202 - returns the extension module
    if _ext is None:
        raise RuntimeError("corral._qkernels is not built (reinstall corral: pip install -e .)")
    return _ext


def set_order(mode: str) -> str:
    """Set which of llama.cpp's kernels the matmuls follow (see order()) for the process;
    returns the previous setting. ValueError for a mode not in ORDERS."""
    if mode not in ORDERS:
        raise ValueError(f"matmul order must be one of {', '.join(ORDERS)}, got {mode!r}")
    return ORDERS[_require().set_order(ORDERS.index(mode))]


def order() -> str:
    """Which of llama.cpp's kernels the quantized matmuls follow on this thread now.

    llama.cpp's AVX2 build (extra buffer types on, its default) repacks Q4_K and Q4_0 weights
    with a multiple of 8 rows at load and multiplies them with its own kernels: Q4_K with its
    gemm for rows [0, M - M % 4) of an M-row input when M > 3 and its gemv for the rest (every
    decode step), Q4_0 with one order for all rows; it multiplies the other K-quants (Q2_K..
    Q6_K) by inputs of 8 rows or more with its tiled kernels; everything else with
    ggml_vec_dot_*. Each sums in its own float order. "llama" follows all of that (row m of a
    call then depends on the call's row count); "rows" computes every row as a one-row call
    (row m the same bits whatever the batch); "vec_dot" uses vec_dot's order everywhere
    (llama.cpp with extra buffer types and GGML_CPU_TILED_MM off)."""
    return ORDERS[_require().order()]


@contextmanager
def rows_alone() -> Iterator[None]:
    """Within the block, this thread's calls compute every row as a one-row call would
    ("llama" acts as "rows"), so a step of several tokens gives each the bits of one-token
    steps (speculative decoding's draft checks)."""
    if _ext is None:
        yield
        return
    old = _ext.set_rows_alone(True)
    try:
        yield
    finally:
        _ext.set_rows_alone(old)


if _ext is not None:
    _env_order = os.environ.get("CORRAL_MATMUL_ORDER", "").strip().lower()
    if _env_order:
        set_order(_env_order)
