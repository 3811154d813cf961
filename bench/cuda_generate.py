#!/usr/bin/env python3
"""End-to-end GPU check: corral.load(device="cuda").generate() (graph-replayed decode) and the
continuous-batching scheduler with 8 concurrent requests, tokens/s as a user sees them.

    python bench/cuda_generate.py MODEL.gguf [--tokens 128]
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--clients", type=int, default=8)
    a = ap.parse_args()
    import corral
    from corral.engine.sampling import SamplingParams
    from corral.engine.scheduler import Request, Scheduler

    model = corral.load(a.model, device="cuda", n_ctx=512)
    prompt = [1] + list(range(100, 131))
    model.generate(prompt, max_tokens=4, temperature=0, ignore_eos=True)  # capture the graph
    r = model.generate(prompt, max_tokens=a.tokens, temperature=0, ignore_eos=True)
    out = {"file": Path(a.model).name, "generate_decode_tps": round(r.timings.decode_tps, 1),
           "generate_tokens": len(r.token_ids)}  # fmt: skip
    sched = Scheduler(model, slots=a.clients, n_ctx=512)
    counts = [0] * a.clients

    def client(i: int) -> None:
        req = Request(
            prompt[:-1] + [200 + i], a.tokens, SamplingParams(temperature=0), ignore_eos=True
        )
        counts[i] = sum(1 for _ in sched.submit(req))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(a.clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - t
    sched.close()
    out["scheduler_clients"] = a.clients
    out["scheduler_tokens"] = sum(counts)
    out["scheduler_aggregate_tps"] = round(sum(counts) / elapsed, 1)
    out["scheduler_mean_batch"] = round(
        sched.stats.decode_rows / max(1, sched.stats.decode_steps), 2
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
