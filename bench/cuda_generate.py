#!/usr/bin/env python3
"""End-to-end GPU check: corral.load(device="cuda").generate() (graph-replayed decode) and the
continuous-batching scheduler with N concurrent requests, tokens/s as a user sees them, with
the scheduler's steps replayed from CUDA graphs (the default) and eagerly
(CORRAL_CUDA_GRAPHS=0), one after the other in this process.

    python bench/cuda_generate.py MODEL.gguf [--tokens 128] [--clients 8] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def run_clients(model, prompt: list[int], clients: int, tokens: int) -> dict:  # type: ignore[no-untyped-def]
    """`clients` greedy requests at once through a fresh Scheduler; aggregate tok/s."""
    from corral.engine.sampling import SamplingParams
    from corral.engine.scheduler import Request, Scheduler

    sched = Scheduler(model, slots=clients, n_ctx=512)
    counts = [0] * clients

    def client(i: int, n: int) -> None:
        req = Request(prompt[:-1] + [200 + i], n, SamplingParams(temperature=0), ignore_eos=True)
        counts[i] = sum(1 for _ in sched.submit(req))

    def round_(n: int) -> float:
        threads = [threading.Thread(target=client, args=(i, n)) for i in range(clients)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return time.perf_counter() - t

    warm = round_(8)  # captures the graphs this load needs (first use of each bucket)
    elapsed = round_(tokens)
    sched.close()
    return {
        "warmup_s": round(warm, 2),
        "tokens": sum(counts),
        "aggregate_tps": round(sum(counts) / elapsed, 1),
        "mean_batch": round(sched.stats.decode_rows / max(1, sched.stats.decode_steps), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--out")
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of this script")
    a = ap.parse_args()
    import torch

    import corral

    model = corral.load(a.model, device=a.device, n_ctx=512)
    prompt = [1] + list(range(100, 131))
    model.generate(prompt, max_tokens=4, temperature=0, ignore_eos=True)  # capture the graph
    r = model.generate(prompt, max_tokens=a.tokens, temperature=0, ignore_eos=True)
    out: dict = {
        "device": torch.cuda.get_device_name(0) if a.device != "cpu" else "cpu",
        "torch": torch.__version__,
        "file": Path(a.model).name,
        "generate_decode_tps": round(r.timings.decode_tps, 1),
        "generate_tokens": len(r.token_ids),
        "scheduler_clients": a.clients,
    }
    for label, flag in (("graphs", "1"), ("eager", "0")):
        os.environ["CORRAL_CUDA_GRAPHS"] = flag
        out[f"scheduler_{label}"] = run_clients(model, prompt, a.clients, a.tokens)
        print(json.dumps({label: out[f"scheduler_{label}"]}), flush=True)
    text = json.dumps(out, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
