#!/usr/bin/env python3
"""Generation benchmark: corral against llama.cpp on the same GGUF file, in one run.

    python bench/generate.py MODEL [--runs 3] [--threads 2] [--peer-python PATH] [--out FILE]

MODEL is a store name (smollm2, gemma3-270m) or a .gguf path. Each measurement runs in a
fresh child process (so peak RSS is that engine's own), the two engines alternating, and the
medians are reported as JSON with corral/llama.cpp ratios. llama.cpp runs through
llama-cpp-python from the peer environment (../shared/bench/setup-peers.sh), found at
--peer-python or $CORRAL_PEER_PYTHON or /tmp/corral-peers/bin/python; without it only
corral's figures are printed.

Measures: load (until the first token can be produced), prompt tokens/s (a 512-token
prompt), decode tokens/s (128 greedy tokens after a 1-token prompt), decode tokens/s with
--ctx-fill tokens already in context, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

TEXT = (
    "The history of the river valley is long and varied. Farmers settled its banks, built "
    "mills and bridges, traded grain and wool with the towns downstream, and argued for "
    "centuries about water rights, floods and the price of bread. "
)
DEFAULT_PEER = "/tmp/corral-peers/bin/python"


def model_path(name: str) -> str:
    p = Path(name)
    if p.suffix == ".gguf" or p.exists():
        return str(p)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from corral.store import Store

    return str(Store().resolve(name).path)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- children: one engine, one measurement set, JSON on stdout ---------------------------


def child_corral(path: str, a: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    import corral

    model = corral.load(path, n_ctx=a.n_ctx)
    load_s = time.perf_counter() - t0
    net = model.net
    prompt = model.tokenize(TEXT * 40, add_special=False)[: a.prompt_tokens]
    cache = net.make_cache(a.n_ctx)
    t = time.perf_counter()
    net.forward(torch.tensor([prompt]), cache, last_only=True)
    prompt_s = time.perf_counter() - t

    def decode(start: list[int]) -> float:
        r = model.generate(start, max_tokens=a.decode_tokens, temperature=0, ignore_eos=True)
        return r.timings.decode_tps

    first = [model.tokenizer.bos_id or prompt[0]]
    model._cached_ids = []  # no prefix reuse between the measurements
    decode_tps = decode(first)
    model._cached_ids = []
    fill = model.tokenize(TEXT * 80, add_special=False)[: a.ctx_fill]
    decode_ctx_tps = decode(fill)
    return {
        "load_s": load_s,
        "prompt_tps": len(prompt) / prompt_s,
        "decode_tps": decode_tps,
        "decode_ctx_tps": decode_ctx_tps,
        "peak_rss_mb": peak_rss_mb(),
        "kv_cache_mb": model._kv().nbytes() / 2**20,
    }


def child_llama_cpp(path: str, a: argparse.Namespace) -> dict:
    import llama_cpp
    import numpy as np
    from llama_cpp import Llama

    t0 = time.perf_counter()
    llm = Llama(
        model_path=path, n_ctx=a.n_ctx, n_batch=512, n_ubatch=512, n_threads=a.threads,
        n_threads_batch=a.threads, n_gpu_layers=0, verbose=False,
    )  # fmt: skip
    load_s = time.perf_counter() - t0
    n_vocab = llm.n_vocab()
    prompt = llm.tokenize((TEXT * 40).encode(), add_bos=False, special=False)[: a.prompt_tokens]
    llm.reset()
    t = time.perf_counter()
    llm.eval(prompt)
    prompt_s = time.perf_counter() - t

    def decode(start: list[int]) -> float:
        llm.reset()
        llm.eval(start)
        tok = int(
            np.argmax(
                np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
            )
        )
        t = time.perf_counter()
        for _ in range(a.decode_tokens):
            llm.eval([tok])
            row = np.ctypeslib.as_array(
                llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,)
            )
            tok = int(np.argmax(row))
        return a.decode_tokens / (time.perf_counter() - t)

    first = [llm.token_bos()]
    decode_tps = decode(first)
    fill = llm.tokenize((TEXT * 80).encode(), add_bos=False, special=False)[: a.ctx_fill]
    decode_ctx_tps = decode(fill)
    return {
        "load_s": load_s,
        "prompt_tps": len(prompt) / prompt_s,
        "decode_tps": decode_tps,
        "decode_ctx_tps": decode_ctx_tps,
        "peak_rss_mb": peak_rss_mb(),
    }


# -- parent: alternate the engines, take medians, print JSON -----------------------------


def run_child(python: str, engine: str, path: str, a: argparse.Namespace) -> dict:
    cmd = [python, __file__, path, "--child", engine, "--threads", str(a.threads),
           "--n-ctx", str(a.n_ctx), "--prompt-tokens", str(a.prompt_tokens),
           "--decode-tokens", str(a.decode_tokens), "--ctx-fill", str(a.ctx_fill)]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{engine} run failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_of(runs: list[dict]) -> dict:
    return {k: round(statistics.median(r[k] for r in runs), 4) for k in runs[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--ctx-fill", type=int, default=1024)
    ap.add_argument("--peer-python", default=os.environ.get("CORRAL_PEER_PYTHON", DEFAULT_PEER))
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--child", choices=["corral", "llama.cpp"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        path = a.model
        res = child_corral(path, a) if a.child == "corral" else child_llama_cpp(path, a)
        print(json.dumps(res))
        return
    path = model_path(a.model)
    peer = None if a.no_peer or not Path(a.peer_python).exists() else a.peer_python
    ours, theirs = [], []
    for _ in range(a.runs):
        ours.append(run_child(sys.executable, "corral", path, a))
        if peer:
            theirs.append(run_child(peer, "llama.cpp", path, a))
    size_mb = Path(path).stat().st_size / 2**20
    report: dict = {
        "model": a.model,
        "file": Path(path).name,
        "file_mb": round(size_mb, 1),
        "threads": a.threads,
        "runs": a.runs,
        "machine": f"{os.cpu_count()} cpus, {os.uname().machine}",
        "corral": median_of(ours),
        "corral_runs": ours,
    }
    c = report["corral"]
    report["rss_budget_mb"] = round(1.5 * size_mb + c["kv_cache_mb"] + 400, 1)
    report["rss_within_budget"] = c["peak_rss_mb"] <= report["rss_budget_mb"]
    if peer:
        report["llama.cpp"] = median_of(theirs)
        report["llama.cpp_runs"] = theirs
        lc = report["llama.cpp"]
        report["ratio"] = {
            k: round(c[k] / lc[k], 3) if "tps" in k else round(lc[k] / c[k], 3)
            for k in ("prompt_tps", "decode_tps", "decode_ctx_tps", "load_s")
        }
        report["ratio_note"] = (
            "corral/llama.cpp for tokens/s; llama.cpp/corral for load time (>1 = corral faster)"
        )
    text = json.dumps(report, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
