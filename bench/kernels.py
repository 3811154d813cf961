#!/usr/bin/env python3
"""Micro-benchmark: corral.kernels.qmatmul against torch's F.linear on float weights.

    python bench/kernels.py [--threads 2] [--m 1 512] [--models smollm2 gemma3-270m]
                            [--min-time 0.3] [--out FILE]

Two parts, JSON on stdout (or --out), a table on stderr:

* shapes: SmolLM2's and Gemma 3's matrix shapes and types (random blocks), each timed at
  every M: the int8 kernels on the raw blocks (qmatmul), for M > 1 also QMatrix's dense
  route (dequantize + float32 GEMM), F.linear with float32 weights, and F.linear in float16
  (`F.linear(x.half(), w16).float()`); speedups vs float32 for the int8 kernels and for
  QMatrix(dense_rows="auto") (dense from the measured break-even). Medians of repeated
  calls, the variants taking turns; a matrix called in a loop stays in cache if it fits,
  so small shapes here are the cache-hot case.
* token_pass: for each model file found (store name or .gguf path), every matmul weight of
  the real file once at M=1 in file order, as one decoded token does (30 layers' worth of
  distinct weights, so the cache-cold case), plus the output head; median per pass. Also
  with the matrices that share an input (q/k/v, gate/up) fused into one qmatmul_many call.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as Q

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from corral.kernels import SUPPORTED_TYPES, QMatrix, cpu_features, qmatmul_many  # noqa: E402
from corral.quant import dequantize  # noqa: E402

# (model, name, type, N, K): the matrices a token goes through, N outputs of K inputs
SHAPES: list[tuple[str, str, Q, int, int]] = [
    ("smollm2", "attn_q/o", Q.Q4_1, 576, 576),
    ("smollm2", "attn_k/v", Q.Q4_1, 192, 576),
    ("smollm2", "ffn_gate/up", Q.Q4_1, 1536, 576),
    ("smollm2", "ffn_down", Q.Q4_1, 576, 1536),
    ("smollm2", "head", Q.Q8_0, 49152, 576),
    ("gemma3", "attn_q", Q.Q5_0, 1024, 640),
    ("gemma3", "ffn_gate/up", Q.Q5_0, 2048, 640),
    ("gemma3", "ffn_down", Q.Q6_K, 640, 2048),
    ("gemma3", "attn_output", Q.Q4_K, 640, 1024),
    ("gemma3", "head", Q.Q8_0, 262144, 640),
]
# weights that read the same input within a layer, fused in the token pass
_ATTN_IN = {"attn_q", "attn_k", "attn_v"}
_FFN_IN = {"ffn_gate", "ffn_up"}
# fp16 scale fields of each block type (byte offsets): random blocks get sane values there
_SCALE_FIELDS = {
    Q.Q4_0: (0,),
    Q.Q4_1: (0, 2),
    Q.Q5_0: (0,),
    Q.Q5_1: (0, 2),
    Q.Q8_0: (0,),
    Q.Q2_K: (80, 82),
    Q.Q3_K: (108,),
    Q.Q4_K: (0, 2),
    Q.Q5_K: (0, 2),
    Q.Q6_K: (208,),
}


def random_blocks(t: Q, n: int, k: int, seed: int = 0) -> np.ndarray:
    """uint8 [n, row_bytes] of random blocks (any bit pattern is a valid block) with small
    positive fp16 scales, so dequantized values are of a sane size."""
    rng = np.random.default_rng(seed)
    block, size = GGML_QUANT_SIZES[t]
    raw = rng.integers(0, 256, size=(n, k // block, size), dtype=np.uint8)
    for off in _SCALE_FIELDS[t]:
        d = rng.uniform(1e-3, 1e-2, size=(n, k // block)).astype(np.float16)
        raw[:, :, off : off + 2] = d.view(np.uint8).reshape(n, k // block, 2)
    return raw.reshape(n, -1)


def medians_ms(
    fns: dict[str, Callable[[], object]], min_time: float, min_reps: int = 5
) -> dict[str, float]:
    """Median wall time in ms of each fn: the fns take turns, one call each per round (so
    a burst of load from elsewhere on a shared machine hits them all alike), for at least
    min_reps rounds and min_time seconds (at most 1000 rounds), after one warm-up round."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    rounds = 0
    while rounds < 1000 and (rounds < min_reps or time.perf_counter() - start < min_time):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        rounds += 1
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


def bench_shapes(ms: list[int], min_time: float) -> list[dict[str, object]]:
    rows = []
    for model, name, qt, n, k in SHAPES:
        raw = random_blocks(qt, n, k)
        w = torch.from_numpy(raw)
        q_int = QMatrix(w, qt, n, k, dense_rows=None)  # always the int8 kernels
        q_dense = QMatrix(w, qt, n, k, dense_rows=1)  # always dequantize + float GEMM
        auto_from = QMatrix(w, qt, n, k, dense_rows="auto").dense_rows  # break-even
        w32 = dequantize(raw, qt, (n, k))
        w16 = w32.half()
        for m in ms:
            x = torch.randn(m, k)
            reps = 3 if m * n * k > 2e10 else 5  # the big heads at M=512 take seconds a call
            fns: dict[str, Callable[[], object]] = {
                "q": lambda x=x, qm=q_int: qm(x),
                "f32": lambda x=x, w=w32: F.linear(x, w),
                "f16": lambda x=x, w=w16: F.linear(x.half(), w).float(),
            }
            if m > 1:
                fns["dense"] = lambda x=x, qm=q_dense: qm(x)
            t_ms = medians_ms(fns, min_time, reps)
            q_ms, f32_ms, f16_ms = t_ms["q"], t_ms["f32"], t_ms["f16"]
            auto_ms = t_ms["dense"] if m >= auto_from else q_ms  # dense_rows="auto"
            rows.append(
                {
                    "model": model,
                    "name": name,
                    "type": qt.name,
                    "n": n,
                    "k": k,
                    "m": m,
                    "qmatmul_ms": round(q_ms, 4),
                    "dense_ms": round(t_ms["dense"], 4) if "dense" in t_ms else None,
                    "qmatrix_auto_ms": round(auto_ms, 4),
                    "f32_ms": round(f32_ms, 4),
                    "f16_ms": round(f16_ms, 4),
                    "speedup_vs_f32": round(f32_ms / q_ms, 2),
                    "speedup_vs_f16": round(f16_ms / q_ms, 2),
                    "auto_speedup_vs_f32": round(f32_ms / auto_ms, 2),
                    "weight_mb": {
                        "q": round(raw.nbytes / 2**20, 2),
                        "f32": round(w32.numel() * 4 / 2**20, 2),
                        "f16": round(w16.numel() * 2 / 2**20, 2),
                    },
                }
            )
            dense = f"dense {t_ms['dense']:9.3f} ms  " if "dense" in t_ms else " " * 22
            print(
                f"{model:8} {name:12} {qt.name:5} {n:6}x{k:<5} M={m:<4} "
                f"int8 {q_ms:9.3f} ms  {dense}f32 {f32_ms:9.3f} ms  f16 {f16_ms:9.3f} ms  "
                f"int8 x{f32_ms / q_ms:5.2f} vs f32, auto x{f32_ms / auto_ms:5.2f}",
                file=sys.stderr,
            )
        del w32, w16
    return rows


def model_path(name: str) -> Path | None:
    p = Path(name)
    if p.suffix == ".gguf" or p.exists():
        return p if p.exists() else None
    try:
        from corral.store import Store

        return Path(Store().resolve(name).path)
    except Exception:  # noqa: BLE001 - not pulled: skip that model
        return None


def bench_token_pass(name: str, min_time: float) -> dict[str, object] | None:
    """Every supported 2-D weight of the file at M=1 (the head last), once per pass."""
    from corral.gguf.reader import open_gguf

    path = model_path(name)
    if path is None:
        print(f"{name}: no such model file here, token pass skipped", file=sys.stderr)
        return None
    g = open_gguf(path)
    mats = [
        t
        for t in g.tensors.values()
        if len(t.shape) == 2 and t.name.startswith("blk.") and t.ggml_type in SUPPORTED_TYPES
    ]
    head = g.tensors.get("output.weight") or g.tensors.get("token_embd.weight")
    if head is not None and head.ggml_type in SUPPORTED_TYPES:
        mats.append(head)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only map
        qms = [QMatrix(torch.from_numpy(t.data), t.ggml_type, *t.shape) for t in mats]  # M=1: int8
    w32 = [dequantize(t.data, t.ggml_type, t.shape) for t in mats]
    w16 = [w.half() for w in w32]
    xs = {k: torch.randn(1, k) for k in {t.shape[1] for t in mats}}
    plan = [(qm, a, b, xs[qm.k]) for qm, a, b in zip(qms, w32, w16, strict=True)]

    def run_q() -> None:
        for qm, _, _, x in plan:
            qm(x)

    def run_f32() -> None:
        for _, w, _, x in plan:
            F.linear(x, w)

    def run_f16() -> None:
        for _, _, w, x in plan:
            F.linear(x.half(), w).float()

    # fused: the matrices that read the same input (q/k/v, gate/up) in one qmatmul_many call
    groups: dict[str, list[QMatrix]] = {}
    for t, qm in zip(mats, qms, strict=True):
        layer, _, role = t.name.rpartition(".weight")[0].partition(".")[2].partition(".")
        key = f"{layer}.{'attn_in' if role in _ATTN_IN else 'ffn_in' if role in _FFN_IN else role}"
        groups.setdefault(key if t.name.startswith("blk.") else t.name, []).append(qm)
    fused = [(g, xs[g[0].k]) for g in groups.values()]

    def run_fused() -> None:
        for g, x in fused:
            qmatmul_many(x, g) if len(g) > 1 else g[0](x)

    ms = medians_ms(
        {"q": run_q, "fused": run_fused, "f32": run_f32, "f16": run_f16}, min_time, min_reps=10
    )
    q_ms, fused_ms, f32_ms, f16_ms = ms["q"], ms["fused"], ms["f32"], ms["f16"]
    types = sorted({t.ggml_type.name for t in mats})
    print(
        f"token pass {name}: {len(mats)} matrices ({', '.join(types)}), "
        f"{sum(t.data.nbytes for t in mats) / 2**20:.1f} MiB quantized: "
        f"q {q_ms:.2f} ms (fused calls {fused_ms:.2f} ms)  f32 {f32_ms:.2f} ms  "
        f"f16 {f16_ms:.2f} ms per token",
        file=sys.stderr,
    )
    return {
        "model": name,
        "file": path.name,
        "matrices": len(mats),
        "types": types,
        "quantized_mb": round(sum(t.data.nbytes for t in mats) / 2**20, 2),
        "qmatmul_ms": round(q_ms, 3),
        "qmatmul_fused_ms": round(fused_ms, 3),
        "calls": len(mats),
        "fused_calls": len(fused),
        "f32_ms": round(f32_ms, 3),
        "f16_ms": round(f16_ms, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--m", type=int, nargs="+", default=[1, 512], help="activation rows")
    ap.add_argument("--models", nargs="*", default=["smollm2", "gemma3-270m"])
    ap.add_argument("--no-shapes", action="store_true", help="only the token passes")
    ap.add_argument("--min-time", type=float, default=0.3, help="seconds per measurement")
    ap.add_argument("--out", help="write the JSON here instead of stdout")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    report = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "threads": a.threads,
            "qkernels": cpu_features(),
        },
        "shapes": [] if a.no_shapes else bench_shapes(a.m, a.min_time),
        "token_pass": [r for r in (bench_token_pass(n, a.min_time) for n in a.models) if r],
    }
    text = json.dumps(report, indent=2)
    if a.out:
        Path(a.out).write_text(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
