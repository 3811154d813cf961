"""Quantized matmul on raw GGML blocks, computed as llama.cpp's CPU backend computes it.

`qmatmul(x, w, ggml_type, n_out, k)` multiplies float32 activations x [..., K] by a weight
kept as its GGUF bytes w (uint8 [N, row_bytes]) and returns float32 [..., N]. Like ggml it
first rounds each activation row to 8-bit blocks (Q8_0, Q8_1 or Q8_K, by weight type) and
then sums integer products block by block, with the float32 steps of the ggml kernel
llama.cpp's AVX2 build would pick (see order()), so the AVX2 path's result is llama.cpp's bit
for bit (the portable C path's too for the repacked and tiled orders; for vec_dot's it sums
per block, a float32 order apart). The work runs in C (`corral._qkernels`, AVX2 when the CPU
has it, portable C otherwise) on OpenMP threads, without the GIL.

`QMatrix` wraps one weight once (checks done up front) for repeated calls from model code;
optionally prompt-sized batches take its dense route (the weight dequantized in C, times
the same rounded activations, in torch's float32 GEMM: faster, ~1e-7 off ggml's sums).
`qmatmul_many(x, [q, k, v])` runs several of them on one input, quantizing it once and
sharing one parallel region (fewer calls and thread wake-ups per token).
`available()` says whether the C extension could be imported; everything else raises
`RuntimeError` when it is not.

llama.cpp's AVX2 build multiplies some weights with other kernels than ggml_vec_dot_*, in
other float orders: Q4_K and Q4_0 weights with a multiple of 8 rows (repacked at load), and the
other K-quants times inputs of 8 rows or more (its tiled matmul). `order()` says what the
kernels here follow ("llama": as llama.cpp, so row m of a call depends on the call's row count;
"rows": every row as a one-row call; "vec_dot": ggml_vec_dot's order everywhere),
`set_order` sets it for the process (default from $CORRAL_MATMUL_ORDER, else "llama") and
`rows_alone()` gives "rows" to one thread's calls for a while (qkernels.c, "Which of
llama.cpp's kernels a matmul follows").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Final

import torch

from corral.gguf.consts import GGMLQuantizationType

try:  # torch first: its libgomp.so.1 then also serves our OpenMP (one thread pool)
    from corral import _qkernels as _ext
except ImportError:  # pragma: no cover - the extension is built by pip install
    _ext = None

from corral.kernels.checks import (
    _WEIGHT_BLOCK,
    SUPPORTED_TYPES,
    _check_w,
    _check_x,
    _threads,
    _type_id,
    row_bytes,
)
from corral.kernels.order import ORDERS, order, rows_alone, set_order

try:  # prompt-sized matmul on AMX int8 tiles (corral.kernels.amx.c)
    from corral import _amx
except ImportError:  # pragma: no cover - optional like _qkernels
    _amx = None

_qmatmul = _ext.qmatmul if _ext is not None else None
_F32: Final = torch.float32

__all__ = [
    "ORDERS",
    "SUPPORTED_TYPES",
    "QMatrix",
    "available",
    "cpu_features",
    "qmatmul",
    "qmatmul_many",
    "order",
    "quantize_activations",
    "row_bytes",
    "rows_alone",
    "set_order",
]

Q = GGMLQuantizationType
# ggml's activation blocks per weight type: (values per block, bytes per block) of
# block_q8_0 (fp16 d, 32 int8), block_q8_1 (fp16 d, fp16 s, 32 int8) or block_q8_K
# (float d, 256 int8, 16 int16 sums).
_ACT_BLOCK: Final[dict[int, tuple[int, int]]] = {
    **dict.fromkeys((int(Q.Q4_0), int(Q.Q5_0), int(Q.Q8_0)), (32, 34)),
    **dict.fromkeys((int(Q.Q4_1), int(Q.Q5_1)), (32, 36)),
    **dict.fromkeys((int(t) for t in (Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K)), (256, 292)),
}
_MAX_MATS: Final = 8  # matrices per qmatmul_many call in C
_WITH_MIN: Final[frozenset[int]] = frozenset((int(Q.Q4_1), int(Q.Q5_1)))
# The dense route (see QMatrix) is off unless asked for: it is ~1e-7 off the integer
# kernels, and a quantized model is chaotic at that level (activation roundings flip): on
# SmolLM2 a 1e-7 nudge to one matmul input moves some logits by ~1, the size of the
# llama.cpp parity tolerance. DENSE_BREAK_EVEN: the rows from which it is faster, measured
# single-threaded on an AVX-512 Xeon (torch GEMM against our AVX2 int8) for 32-value and
# 256-value blocks; `dense_rows="auto"` uses it. CORRAL_QKERNELS_DENSE_ROWS sets the
# default: unset or 0 off, "auto", or a row count.
DENSE_BREAK_EVEN: Final[dict[int, int]] = {32: 64, 256: 128}
_DENSE_ENV = os.environ.get("CORRAL_QKERNELS_DENSE_ROWS", "").strip().lower()
DENSE_ROWS: int | str = (
    "auto" if _DENSE_ENV == "auto" else int(_DENSE_ENV) if _DENSE_ENV.isdigit() else 0
)
# weight values dequantized per step on the dense route: 8 MiB of float32
_DENSE_SLICE: Final = 1 << 21
# The dense route on CPUs with AMX-INT8 (Sapphire Rapids and later): integer block sums in
# AMX tiles, scaled per block as ggml's kernels do (closer to them than the float32 GEMM,
# and several times faster; no float32 copy of the weight). CORRAL_AMX=0 turns it off.
AMX: Final[bool] = (
    _amx is not None and _amx.available() and os.environ.get("CORRAL_AMX", "1") != "0"
)
# With AMX the dense route pays off from fewer rows than the float32 GEMM (7B-shaped Q4_K
# 4096x14336: 1.5x the int8 kernels at 32 rows, 1.8-3x at 64; Q6_K 4096x14336, its
# unpacking vectorized: 2.4x at 32 rows, 3x at 64). Never below KERNEL_MAX_ROWS
# (models.weights): short steps stay exact.
AMX_BREAK_EVEN: Final[dict[int, int]] = dict.fromkeys(
    (int(t) for t in (Q.Q4_0, Q.Q5_0, Q.Q8_0, Q.Q4_K, Q.Q5_K, Q.Q6_K)), 32
)
# Whether prompt-sized steps may leave llama.cpp's exact arithmetic for speed: weights past
# their break-even take the dense route (QMatrix dense_rows), and attention over more than
# engine.kv_cache.DECODE_MAX_T new tokens runs in torch. CORRAL_DENSE=0: neither, so prompts
# of any length get llama.cpp's logits (at some cost in prompt speed).
DENSE: bool = os.environ.get("CORRAL_DENSE", "1") != "0"
# CORRAL_QKERNELS_SCALAR=1 forces the portable C path (for tests and for comparison).
_FORCE_SCALAR: Final[bool] = os.environ.get("CORRAL_QKERNELS_SCALAR", "") not in ("", "0")
# rows from which llama.cpp multiplies (not repacked) K-quants with its tiled kernels
TILED_MIN_ROWS: Final = 8
_K_QUANT_IDS: Final = frozenset(int(t) for t in (Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K))


def available() -> bool:
    """Whether the C extension is importable (built at `pip install`)."""
    return _ext is not None


def cpu_features() -> dict[str, object]:
    """What the extension found: {'avx2': bool, 'openmp': bool, 'omp_max_threads': int}."""
    return dict(_require().cpu_features())


def _require():  # noqa: ANN202 - returns the extension module
    if _ext is None:
        raise RuntimeError("corral._qkernels is not built (reinstall corral: pip install -e .)")
    return _ext


def qmatmul(
    x: torch.Tensor,
    w: torch.Tensor,
    ggml_type: GGMLQuantizationType | int,
    n_out: int,
    k: int,
    *,
    n_threads: int | None = None,
    _scalar: bool = False,
) -> torch.Tensor:
    """x [..., k] float32 times the quantized weight w -> float32 [..., n_out].

    `w` is uint8 [n_out, row_bytes]: n_out rows of k values in `ggml_type` blocks, exactly
    as in the GGUF file (a read-only memmap view is fine: it is only read). Output column n
    is the dot product of weight row n with each x row, as llama.cpp computes it.
    `n_threads` defaults to torch.get_num_threads(). Raises ValueError on a wrong dtype,
    device, shape or type.
    """
    _require()
    tid = _type_id(ggml_type)
    x = _check_x(x, k)
    _check_w(w, tid, n_out, k)
    shape = x.shape
    m = x.numel() // k
    y = torch.empty(m, n_out)
    if len(shape) != 2:
        y = y.view(*shape[:-1], n_out)
    _qmatmul(
        tid,
        x.data_ptr(),
        w.data_ptr(),
        y.data_ptr(),
        m,
        n_out,
        k,
        _threads(n_threads),
        _scalar or _FORCE_SCALAR,
    )
    return y


# rows from which quantize_activations splits its rows over threads
_QUANT_PARALLEL_ROWS = 64


def quantize_activations(
    x: torch.Tensor, ggml_type: GGMLQuantizationType | int, *, _scalar: bool = False
) -> torch.Tensor:
    """x [..., K] float32 -> the 8-bit blocks llama.cpp dots with weights of `ggml_type`.

    Returns uint8 [..., bytes] in ggml's own layout: block_q8_0 (fp16 d, 32 int8) for
    Q4_0/Q5_0/Q8_0 weights, block_q8_1 (fp16 d, fp16 s = d*sum(q), 32 int8) for
    Q4_1/Q5_1, block_q8_K (float32 d, 256 int8, 16 int16 sums of 16) for the k-quants.
    """
    ext = _require()
    tid = _type_id(ggml_type)
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        raise ValueError("x must be a torch.Tensor of shape [..., K]")
    k = x.shape[-1]
    block, size = _ACT_BLOCK[tid]
    if k == 0 or k % block:
        raise ValueError(f"K={k} is not a positive multiple of the {block}-value block")
    x = _check_x(x, k)
    m = x.numel() // k
    out = torch.empty((*x.shape[:-1], k // block * size), dtype=torch.uint8)
    # a prompt's rows on torch's threads (the AMX route quantizes every matmul input here);
    # a few rows are not worth waking them. Each row's bytes are the same either way.
    nth = _threads(None) if m >= _QUANT_PARALLEL_ROWS else 1
    ext.quantize(tid, x.data_ptr(), out.data_ptr(), m, k, _scalar or _FORCE_SCALAR, nth)
    return out


class QMatrix:
    """A quantized weight [n_out, k] ready for repeated `self(x)` calls (the model's weight).

    Checks the bytes once; each call then only checks x. Keeps a reference to `w`, so a
    memmap-backed tensor stays valid for as long as this object lives.

    With `dense_rows` set, calls with at least that many activation rows (prompt
    processing) take the dense route: the weight is dequantized in slices of rows (C,
    threaded) and multiplied by the activations rounded exactly as the integer kernels
    round them, with torch's float32 GEMM, which on CPUs with wide FMA units beats int8
    dot products by 1.5-3x at 512 rows. The result equals the integer path's up to float32
    rounding (~1e-7 relative, the _1 types' min term corrected to ggml's), but is no
    longer llama.cpp's exact arithmetic, nor bit-identical to the same rows computed
    alone. `dense_rows`: a row count, "auto" (DENSE_BREAK_EVEN for the type), or None/0
    (never); the default is the module's DENSE_ROWS (off unless the environment says).
    """

    __slots__ = (
        "w", "ggml_type", "n_out", "k", "dense_rows", "_tid", "_ptr", "_mins_t", "amx", "repacked",
    )  # fmt: skip

    def __init__(
        self,
        w: torch.Tensor,
        ggml_type: GGMLQuantizationType | int,
        n_out: int,
        k: int,
        *,
        dense_rows: int | str | None = -1,
    ) -> None:
        _require()
        self._tid = _type_id(ggml_type)
        _check_w(w, self._tid, n_out, k)
        self.w = w
        self.ggml_type = GGMLQuantizationType(self._tid)
        self.n_out = n_out
        self.k = k
        self._ptr = w.data_ptr()
        # a weight llama.cpp repacks (see order())
        self.repacked = self._tid in (int(Q.Q4_K), int(Q.Q4_0)) and n_out % 8 == 0
        # the dense route on AMX tiles, where this CPU and type have it (see _amx_dense)
        self.amx = AMX and bool(_amx.supports(self._tid))  # type: ignore[union-attr]
        if dense_rows == -1:
            dense_rows = DENSE_ROWS
        if dense_rows == "auto":
            dense_rows = AMX_BREAK_EVEN.get(self._tid, 0) if self.amx else 0
            dense_rows = dense_rows or DENSE_BREAK_EVEN[_WEIGHT_BLOCK[self._tid][0]]
        if dense_rows is not None and not isinstance(dense_rows, int):
            raise ValueError(f"dense_rows must be a row count, 'auto' or None, got {dense_rows!r}")
        self.dense_rows = dense_rows if dense_rows and dense_rows > 0 else 1 << 62
        self._mins_t: torch.Tensor | None = None

    @property
    def shape(self) -> torch.Size:
        """[n_out, k], as a float weight of the same matrix would have."""
        return torch.Size((self.n_out, self.k))

    def __call__(self, x: torch.Tensor, *, n_threads: int | None = None) -> torch.Tensor:
        """x [..., k] float32 -> [..., n_out] float32."""
        # the per-token hot path: a few attribute reads (torch.empty with int sizes is
        # ~1 us cheaper than with a shape tuple, x.is_cpu ~0.7 us cheaper than .device)
        if type(x) is not torch.Tensor or x.dtype is not _F32 or not x.is_cpu:
            x = _check_x(x, self.k)  # raises with the reason
        shape = x.shape
        if len(shape) == 0 or shape[-1] != self.k:
            x = _check_x(x, self.k)
        if not x.is_contiguous():
            x = x.contiguous()
        n = self.n_out
        m = shape[0] if len(shape) == 2 else x.numel() // self.k
        nth = torch.get_num_threads() if n_threads is None else _threads(n_threads)
        if m >= self.dense_rows:
            y = self._dense(x, m, nth)
        else:
            y = torch.empty(m, n)
            _qmatmul(
                self._tid, x.data_ptr(), self._ptr, y.data_ptr(), m, n, self.k, nth, _FORCE_SCALAR
            )
        return y if len(shape) == 2 else y.view(*shape[:-1], n)

    def dequantize(
        self, rows: slice | None = None, *, n_threads: int | None = None
    ) -> torch.Tensor:
        """The weight (or a slice of its rows) as float32 [rows, k], decoded in C."""
        start, stop, step = (rows or slice(None)).indices(self.n_out)
        if step != 1:
            raise ValueError("dequantize takes a contiguous slice of rows")
        count = max(0, stop - start)
        out = torch.empty(count, self.k)
        if count:
            _ext.dequantize(  # type: ignore[union-attr]
                self._tid,
                self._ptr + start * self.w.shape[1],
                out.data_ptr(),
                count,
                self.k,
                torch.get_num_threads() if n_threads is None else _threads(n_threads),
                _FORCE_SCALAR,
            )
        return out

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Embedding lookup: rows `ids` (any shape, negative ones count from the end) as
        float32 [*ids.shape, k], decoded in C from the raw blocks (a tied embedding/output
        weight needs no float copy). IndexError for an id out of range."""
        idx = torch.as_tensor(ids)
        if idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype is torch.bool:
            raise ValueError(f"row ids must be integers, got {idx.dtype}")
        flat = idx.reshape(-1).to(torch.int64).contiguous()
        out = torch.empty(flat.numel(), self.k)
        _ext.dequantize_rows(  # type: ignore[union-attr]
            self._tid,
            self._ptr,
            self.n_out,
            self.k,
            flat.data_ptr(),
            flat.numel(),
            out.data_ptr(),
            _FORCE_SCALAR,
        )
        return out.view(*idx.shape, self.k)

    def _round(self, x: torch.Tensor, m: int, nth: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [m, k] -> (the activation values this type's kernels dot with [m, k], and for
        Q4_1/Q5_1 the per-block sums [m, k/32] their mins meet, else None). The same for
        every weight type with the same activation block (see _ACT_BLOCK). On the AMX
        route: (ggml's activation blocks uint8 [m, bytes], None)."""
        k = self.k
        if self.amx:
            return quantize_activations(x, self._tid), None
        xr = torch.empty(m, k)
        corr = torch.empty(m, k // 32) if self._tid in _WITH_MIN else None
        _ext.round_activations(  # type: ignore[union-attr]
            self._tid,
            x.data_ptr(),
            xr.data_ptr(),
            corr.data_ptr() if corr is not None else 0,
            m,
            k,
            nth,
            _FORCE_SCALAR,
        )
        return xr, corr

    def _dense(
        self,
        x: torch.Tensor,
        m: int,
        nth: int,
        rounded: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """y [m, n] via float32 GEMM on the dequantized weight, a slice of rows at a time;
        `rounded`: what _round gives for x, when a sibling matrix already computed it."""
        k, n = self.k, self.n_out
        xr, corr = rounded if rounded is not None else self._round(x, m, nth)
        if self.amx:
            return self._amx_dense(xr, m, nth)
        if corr is not None and self._mins_t is None:
            self._mins_t = self._block_mins().T.contiguous()  # [k/32, n]
        step = max(1, _DENSE_SLICE // k)
        y = torch.empty(m, n) if step < n else None
        for n0 in range(0, n, step):
            n1 = min(n, n0 + step)
            part = torch.mm(xr, self.dequantize(slice(n0, n1), n_threads=nth).T)
            if corr is not None:
                # ggml adds m_w * s per block; the float product added m_w * d * sum(q)
                part.addmm_(corr, self._mins_t[:, n0:n1])  # type: ignore[index]
            if y is None:
                return part
            y[:, n0:n1] = part
        assert y is not None
        return y

    def _amx_dense(self, xq: torch.Tensor, m: int, nth: int) -> torch.Tensor:
        """y [m, n] from ggml's activation blocks xq (uint8 [m, bytes]) on AMX tiles, all in
        C (Q4_K/Q5_K's min term too, from the raw blocks: no per-matrix float copy)."""
        y = torch.empty(m, self.n_out)
        # the integer kernels' order (see order()): repacked Q4_K as ggml's gemm for rows
        # [0, gemm_rows) and its gemv for the rest; the other K-quants tiled from 8 rows.
        # Repacked Q4_0 needs nothing: one FMA per block is also how the tiles sum it.
        mode = order()
        repacked = mode != "vec_dot" and self.repacked and self._tid == int(Q.Q4_K)
        gemm_rows = m - m % 4 if repacked and mode == "llama" and m > 3 else 0
        tiled = (
            not repacked and mode == "llama" and m >= TILED_MIN_ROWS and self._tid in _K_QUANT_IDS
        )
        _amx.matmul(  # type: ignore[union-attr]
            self._tid, xq.data_ptr(), self._ptr, y.data_ptr(), m, self.n_out, self.k, nth,
            gemm_rows, repacked, tiled,
        )  # fmt: skip
        return y

    def _block_mins(self) -> torch.Tensor:
        """The fp16 min m of each block (types Q4_1/Q5_1), float32 [n, k/32]."""
        block_bytes = _WEIGHT_BLOCK[self._tid][1]
        blocks = self.w.view(self.n_out, self.k // 32, block_bytes)
        return blocks[:, :, 2:4].contiguous().view(torch.float16).float().view(self.n_out, -1)

    def __repr__(self) -> str:
        return f"QMatrix({self.ggml_type.name}, n_out={self.n_out}, k={self.k})"


def qmatmul_many(
    x: torch.Tensor, mats: Sequence[QMatrix], *, n_threads: int | None = None
) -> list[torch.Tensor]:
    """[m(x) for m in mats], with x quantized once per activation kind and the matrices'
    rows shared out in one parallel region (per kind, up to 8 matrices a call).

    Every matrix must take inputs of the same size k. Results are identical to calling
    each QMatrix on its own (prompt-sized inputs take each matrix's dense route).
    """
    if not mats:
        return []
    k = mats[0].k
    for qm in mats:
        if not isinstance(qm, QMatrix):
            raise ValueError(f"qmatmul_many takes QMatrix objects, got {type(qm).__name__}")
        if qm.k != k:
            raise ValueError(f"all matrices must take k={k} inputs, got one with k={qm.k}")
    x = _check_x(x, k)
    shape = x.shape
    m = x.numel() // k
    nth = torch.get_num_threads() if n_threads is None else _threads(n_threads)
    outs = [torch.empty(0) for _ in mats]
    groups: dict[tuple[int, int], list[int]] = {}
    rounded: dict[tuple[int, int, bool], tuple[torch.Tensor, torch.Tensor | None]] = {}
    for i, qm in enumerate(mats):
        if m >= qm.dense_rows:  # prompt-sized: that matrix's dense route
            xm = x.view(m, k)
            # q/k/v (gate/up) of one kind round x once (per route: AMX takes ggml's blocks)
            kind = (*_ACT_BLOCK[qm._tid], qm.amx)
            if kind not in rounded:
                rounded[kind] = qm._round(xm, m, nth)
            outs[i] = qm._dense(xm, m, nth, rounded[kind])
        else:
            outs[i] = torch.empty(m, qm.n_out)
            groups.setdefault(_ACT_BLOCK[qm._tid], []).append(i)
    for idx in groups.values():
        for start in range(0, len(idx), _MAX_MATS):
            part = idx[start : start + _MAX_MATS]
            specs = tuple(
                (mats[i]._tid, mats[i]._ptr, outs[i].data_ptr(), mats[i].n_out) for i in part
            )
            _require().qmatmul_many(x.data_ptr(), m, k, nth, _FORCE_SCALAR, specs)
    if len(shape) != 2:
        outs = [y.view(*shape[:-1], y.shape[-1]) for y in outs]
    return outs
