#!/usr/bin/env python3
"""A/B of a model's decode step (llama family, qwen2, gemma3): the eager block loop against
the fused C step, in one process, alternating (this VM's speed drifts by tens of percent
within minutes, so numbers from separate processes or separate minutes do not compare).

    python bench/decode_ab.py [MODEL] [--rounds 5] [--tokens 128] [--threads 2] [--ctx 0]

MODEL is a store name or a .gguf path (default smollm2; e.g. gemma3-270m). Each round runs
`--tokens` greedy one-token steps with each path (after `--ctx` tokens of context) and takes
the median step time; the JSON gives every round's medians (ms per step), their medians and
the speedup, and checks that both paths produced the same logits bits.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import corral  # noqa: E402


def steps(net: object, fused: object, ctx: int, n: int) -> tuple[list[float], list[torch.Tensor]]:
    """(seconds per step, logits [1, 1, V] per step) of n greedy steps after ctx tokens."""
    saved = net.fused  # type: ignore[attr-defined]
    net.fused = fused  # type: ignore[attr-defined]
    try:
        cache = net.make_cache(ctx + n + 1)  # type: ignore[attr-defined]
        if ctx:
            net.forward(torch.arange(ctx)[None] % 1000 + 100, cache)  # type: ignore[attr-defined]
        tok, times, outs = torch.tensor([[1]]), [], []
        for _ in range(n):
            t = time.perf_counter()
            logits = net.forward(tok, cache, last_only=True)  # type: ignore[attr-defined]
            times.append(time.perf_counter() - t)
            outs.append(logits)
            tok = logits[:, -1].argmax(-1, keepdim=True)
        return times, outs
    finally:
        net.fused = saved  # type: ignore[attr-defined]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", nargs="?", default="smollm2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    net = corral.load(a.model, n_ctx=a.ctx + a.tokens + 1).net
    fused = getattr(net, "fused", None)
    if fused is None:
        raise SystemExit("this model has no fused decode step (see corral.models.fused)")
    _, eager_out = steps(net, None, a.ctx, min(a.tokens, 32))  # warm-up, and the bits check
    _, fused_out = steps(net, fused, a.ctx, min(a.tokens, 32))
    same = all(torch.equal(x, y) for x, y in zip(eager_out, fused_out, strict=True))
    rounds: dict[str, list[float]] = {"eager": [], "fused": []}
    for _ in range(a.rounds):
        for name, f in (("eager", None), ("fused", fused)):
            times, _ = steps(net, f, a.ctx, a.tokens)
            rounds[name].append(round(statistics.median(times) * 1e3, 3))
    med = {k: statistics.median(v) for k, v in rounds.items()}
    print(json.dumps({
        "model": a.model, "threads": a.threads, "ctx": a.ctx, "tokens": a.tokens,
        "ms_per_step_rounds": rounds, "ms_per_step": med,
        "speedup": round(med["eager"] / med["fused"], 3), "same_logits": same,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
