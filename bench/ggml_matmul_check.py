#!/usr/bin/env python3
"""corral's quantized matmul against ggml's own, called in-process through ctypes.

    python bench/ggml_matmul_check.py LIBDIR

LIBDIR holds libggml-base.so and libggml-cpu.so of a llama.cpp build (e.g. an AVX2 build of
llama-cpp-python: .../site-packages/llama_cpp/lib). Each case builds a one-op ggml graph
(mul_mat of a random weight of every supported type by random float32 rows), computes it on
2 threads and compares it with corral.kernels.qmatmul bit for bit, for 1, 5, 8 and 13 rows:
ggml's vec_dot kernels, its tiled K-quant kernels (8 rows or more) and whatever it uses for
the legacy types. A plain graph does not repack weights (that takes llama.cpp's extra buffer
types), so the weights here have row counts that llama.cpp would not repack either (36; Q4_K
and Q4_0 weights of 40 rows are compared in the "vec_dot"/"rows" sense instead: see
bench/llama_matmul_check.py for the repacked kernels). Exits 1 on any difference.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "kernels"))

from gguf import GGMLQuantizationType as Q  # noqa: E402
from test_qkernels import make_weight, make_x  # noqa: E402

from corral import kernels  # noqa: E402


class _Params(ctypes.Structure):
    _fields_ = [
        ("mem_size", ctypes.c_size_t),
        ("mem_buffer", ctypes.c_void_p),
        ("no_alloc", ctypes.c_bool),
    ]


def ggml_matmul(lib: Path, raw: np.ndarray, x: np.ndarray, t: int) -> np.ndarray:
    base = ctypes.CDLL(str(lib / "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
    cpu = ctypes.CDLL(str(lib / "libggml-cpu.so"), mode=ctypes.RTLD_GLOBAL)
    vp = ctypes.c_void_p
    base.ggml_init.restype, base.ggml_init.argtypes = vp, [_Params]
    base.ggml_new_tensor_2d.restype = vp
    base.ggml_new_tensor_2d.argtypes = [vp, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    base.ggml_mul_mat.restype, base.ggml_mul_mat.argtypes = vp, [vp, vp, vp]
    base.ggml_new_graph.restype, base.ggml_new_graph.argtypes = vp, [vp]
    base.ggml_build_forward_expand.argtypes = [vp, vp]
    base.ggml_free.argtypes = [vp]
    cpu.ggml_graph_compute_with_ctx.argtypes = [vp, vp, ctypes.c_int]
    cpu.ggml_cpu_init()
    n, (m, k) = raw.shape[0], x.shape
    ctx = base.ggml_init(_Params(raw.nbytes + 2 * x.nbytes + 4 * m * n + (64 << 20), None, False))
    try:
        a = base.ggml_new_tensor_2d(ctx, t, k, n)
        b = base.ggml_new_tensor_2d(ctx, 0, k, m)

        def data(tensor: int) -> int:  # struct ggml_tensor: data at byte 248
            return ctypes.c_void_p.from_address(tensor + 248).value

        ctypes.memmove(data(a), np.ascontiguousarray(raw).ctypes.data, raw.nbytes)
        ctypes.memmove(data(b), np.ascontiguousarray(x).ctypes.data, x.nbytes)
        c = base.ggml_mul_mat(ctx, a, b)
        graph = base.ggml_new_graph(ctx)
        base.ggml_build_forward_expand(graph, c)
        cpu.ggml_graph_compute_with_ctx(ctx, graph, 2)
        y = np.empty((m, n), np.float32)
        ctypes.memmove(y.ctypes.data, data(c), y.nbytes)
        return y
    finally:
        base.ggml_free(ctx)


def main() -> int:
    lib = Path(sys.argv[1])
    types = (Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K)
    bad = 0
    for t in types:
        for n in (36, 40):
            for m in (1, 5, 8, 13):
                k = 512
                raw = make_weight(t, n, k, seed=m + n)
                x = make_x(m, k, seed=k + m)
                want = ggml_matmul(lib, raw, x.numpy(), int(t))
                repacked = kernels.QMatrix(torch.from_numpy(raw), t, n, k).repacked
                # a repacked weight: what ggml gives when it does not repack (vec_dot, or
                # tiled from 8 rows for Q4_K) is corral's "vec_dot" order (below 8 rows)
                if repacked and (t == Q.Q4_0 or m < 8):
                    order = "vec_dot"
                elif repacked:
                    continue  # tiled Q4_K of a repackable shape: not a llama.cpp case
                else:
                    order = "llama"
                old = kernels.set_order(order)
                try:
                    got = kernels.qmatmul(x, torch.from_numpy(raw), t, n, k).numpy()
                finally:
                    kernels.set_order(old)
                diff = int((got.view(np.uint32) != want.view(np.uint32)).sum())
                bad += diff
                print(f"{t.name:5s} N={n} M={m:2d} ({order:7s}): {diff} of {got.size} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
