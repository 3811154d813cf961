#!/usr/bin/env python3
"""GPU decode benchmark: tok/s at batch 1 and aggregate at batch 8, and the fraction of the
memory-bandwidth roofline at batch 1 (weight bytes read per token x tok/s / bandwidth).

    python bench/cuda.py MODEL.gguf [--tokens 128] [--prompt 32] [--batch 8] [--out FILE]

Weights are dequantized once into GPU memory as bfloat16 (corral's CUDA path), so the bytes
read per token are the bf16 bytes of every matrix used per token (the token embedding table
is only gathered from, so it is not counted unless the output head shares it). Bandwidth is
reported two ways: the card's nominal figure and a measured device-to-device copy. Eager and
CUDA-graph decoding are both timed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

NOMINAL_GBPS = {"H100": 3350.0, "H200": 4800.0, "A100": 2039.0}


def measured_bandwidth_gbps() -> float:
    """Device-to-device copy of 1 GiB, counting bytes read and written."""
    n = 1 << 28
    a = torch.empty(n, dtype=torch.float32, device="cuda")
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    t = time.perf_counter()
    reps = 10
    for _ in range(reps):
        b.copy_(a)
    torch.cuda.synchronize()
    return 2 * a.numel() * 4 * reps / (time.perf_counter() - t) / 1e9


def weight_bytes_per_token(net: object) -> int:
    """bf16 bytes of the matrices read for each token."""
    from corral.models.weights import DeviceWeight

    seen: set[int] = set()
    total = 0
    tok = getattr(net, "tok_embd", None)
    out = getattr(net, "output", None)
    for obj in [out, *[v for blk in getattr(net, "blocks", []) for v in vars(blk).values()]]:
        if isinstance(obj, DeviceWeight) and id(obj) not in seen:
            seen.add(id(obj))
            total += obj.w.numel() * obj.w.element_size()
    if tok is not None and tok is not out and isinstance(tok, DeviceWeight):
        total += 0  # gathered rows only
    return total


def timed_decode(step, first: torch.Tensor, n: int) -> float:  # type: ignore[no-untyped-def]
    tok = first
    for _ in range(3):
        step(tok)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        tok = step(tok).argmax(-1)
    torch.cuda.synchronize()
    return n / (time.perf_counter() - t)


def bench(path: str, a: argparse.Namespace) -> dict:
    import corral
    from corral.engine.cuda_graph import GraphedDecoder

    t0 = time.perf_counter()
    model = corral.load(path, device="cuda", n_ctx=a.prompt + a.tokens + 16)
    load_s = time.perf_counter() - t0
    net = model.net
    res: dict = {"file": Path(path).name, "load_s": round(load_s, 2)}
    ids = torch.randint(3, net.vocab_size, (1, a.prompt), device="cuda")

    # eager, batch 1
    kv = net.make_cache(a.prompt + a.tokens + 16)
    logits = net.forward(ids, kv, last_only=True)[:, -1]

    def eager_step(tok: torch.Tensor) -> torch.Tensor:
        return net.forward(tok.view(-1, 1), kv, last_only=True)[:, -1]

    res["eager_tps_b1"] = round(timed_decode(eager_step, logits.argmax(-1), a.tokens), 1)
    if a.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            timed_decode(eager_step, logits.argmax(-1), 4)
        try:  # GPU time per kernel kind; the key's name changed across torch versions
            table = prof.key_averages().table(sort_by="device_time_total", row_limit=25)
        except Exception:  # noqa: BLE001
            table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25)
        res["eager_profile"] = table
    max_len = a.prompt + a.tokens + 16
    if a.compile:
        # fuse the small per-layer kernels (norms, rope, residuals); graphs are ours
        net.forward = torch.compile(net.forward, dynamic=False)
    for batch in (1, a.batch):
        g = GraphedDecoder(net, batch, max_len)
        first = g.prefill(ids.expand(batch, -1)).argmax(-1)
        tps = timed_decode(g.step, first, a.tokens)
        res[f"graph_tps_b{batch}"] = round(tps, 1)
        res[f"graph_aggregate_tps_b{batch}"] = round(tps * batch, 1)
        del g
        torch.cuda.empty_cache()
    wb = weight_bytes_per_token(net)
    res["weight_bytes_per_token"] = wb
    best_b1 = max(res["eager_tps_b1"], res["graph_tps_b1"])
    res["achieved_GBps_b1"] = round(wb * best_b1 / 1e9, 1)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out")
    ap.add_argument("--compile", action="store_true", help="torch.compile the step first")
    ap.add_argument("--profile", action="store_true", help="profile a few eager steps")
    a = ap.parse_args()
    name = torch.cuda.get_device_name(0)
    nominal = next((v for k, v in NOMINAL_GBPS.items() if k in name), None)
    measured = measured_bandwidth_gbps()
    report: dict = {"device": name, "torch": torch.__version__,
                    "nominal_GBps": nominal, "measured_copy_GBps": round(measured, 1), "models": []}  # fmt: skip
    for path in a.models:
        r = bench(path, a)
        if nominal:
            r["roofline_fraction_nominal_b1"] = round(r["achieved_GBps_b1"] / nominal, 3)
        r["roofline_fraction_measured_b1"] = round(r["achieved_GBps_b1"] / measured, 3)
        report["models"].append(r)
        prof = r.pop("eager_profile", None)
        print(json.dumps(r), flush=True)
        if prof:
            print(prof, flush=True)
    text = json.dumps(report, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
