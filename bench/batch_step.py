#!/usr/bin/env python3
"""One batched decode step, as the server's scheduler runs it, exact per row or not.

    python bench/batch_step.py MODEL [--rows 8] [--fill 64] [--runs 12] [--threads 2]
                               [--out FILE]

MODEL is a store name or a .gguf path. A KV cache of --rows rows, each holding --fill
positions, then one decode step over all rows (`SlotBatch`, one token per row), timed both
ways in turn: under `generated_tokens` (each row gets the bits of its sequence's own one-token
step: the default, CORRAL_BATCH_EXACT=1) and with llama.cpp's batch kernels
(CORRAL_BATCH_EXACT=0). Every step writes the same position, so each does the same work.
JSON: the median ms per step of each, aggregate tokens/s, and their ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--fill", type=int, default=64)
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import corral
    from corral.engine.kv_cache import SlotBatch, generated_tokens

    model = corral.load(a.model, n_ctx=a.fill + 16)
    net = model.net
    cache = net.make_cache(a.fill + 16, batch=a.rows)
    for b in range(a.rows):  # each row its own prompt
        prompt = torch.tensor([[(10 + b + i) % net.vocab_size for i in range(a.fill)]])
        net.forward(prompt, SlotBatch(cache, [b], [0]), last_only=True)
    rows = list(range(a.rows))
    ids = torch.tensor([[100 + b] for b in rows])

    def step(exact: bool) -> float:
        view = SlotBatch(cache, rows, [a.fill] * a.rows)
        t = time.perf_counter()
        with generated_tokens(view) if exact else contextlib.nullcontext():
            net.forward(ids, view, last_only=True)
        return time.perf_counter() - t

    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(a.runs + 2):  # the first two of each are warm-up
        for exact in (True, False):
            times[exact].append(step(exact))
    ms = {k: statistics.median(v[2:]) * 1e3 for k, v in times.items()}
    out = {
        "model": a.model,
        "machine": f"{platform.machine()}, {a.threads} threads",
        "rows": a.rows,
        "fill": a.fill,
        "exact_ms": round(ms[True], 2),
        "batch_kernels_ms": round(ms[False], 2),
        "exact_tps": round(a.rows / ms[True] * 1e3, 2),
        "batch_kernels_tps": round(a.rows / ms[False] * 1e3, 2),
        "batch_kernels_speedup": round(ms[True] / ms[False], 3),
    }
    text = json.dumps(out, indent=2)
    if a.out:
        Path(a.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
