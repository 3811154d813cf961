#!/usr/bin/env python3
"""Decode speed against context length: corral and llama.cpp on one GGUF, as JSON and a PNG.

    python bench/plot.py MODEL [--contexts 0,500,1000,2000,3000,4000] [--decode-tokens 64]
                         [--runs 1] [--threads 2] [--out bench/out/decode_vs_context.png]

MODEL is a store name or a .gguf path. For each engine, one fresh child process (run in turn,
the engines alternating when --runs > 1) loads the model once and sweeps the context lengths
in ascending order: it extends the context to L tokens (a BOS token, then bench/generate.py's
TEXT tokens repeated; only the new tokens are prefilled, the ones decoded at the previous length
are dropped from the cache first), then decodes --decode-tokens tokens greedily and records
decode tokens/s. L = 0 means a 1-token prompt (BOS), as generate.py's decode figure. Before
the sweep each child decodes a few tokens from BOS, unmeasured, so that first-call costs
(paging the mapped weights in) stay out of the first point.

Both engines are timed the same way: from the first greedy pick after the prefill to the last
one, i.e. N picks and N-1 forward passes for N = --decode-tokens, reported as (N-1)/seconds
(corral: Timings.decode_s of `Model.generate`, which spans exactly that; llama.cpp: the same
loop of eval + argmax over llama-cpp-python). The decode at length L runs at positions L..L+N-1.
Medians over --runs go to the JSON (default: the PNG's path with .json) with corral/llama.cpp
ratios; the PNG plots tokens/s against L for both engines. llama.cpp runs in the peer
environment, as in bench/generate.py (same --peer-python and --llama-extra-bufts options).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from generate import (
    DEFAULT_PEER,
    TEXT,
    child_result,
    model_path,
    peak_rss_mb,
    run_llama_child,
    set_llama_extra_bufts,
    spawn,
)

DEFAULT_OUT = Path(__file__).resolve().parent / "out" / "decode_vs_context.png"
DEFAULT_CONTEXTS = "0,500,1000,2000,3000,4000"
WARMUP_TOKENS = 4  # decoded from BOS before the sweep, not measured


def fill_tokens(bos: int | None, text_ids: list[int], n: int) -> list[int]:
    """n context tokens: BOS (when the model has one), then the text's tokens repeated."""
    head = [] if bos is None else [bos]
    reps = (n - len(head)) // max(len(text_ids), 1) + 1
    return (head + text_ids * reps)[: max(n, 1)]


# -- children: one engine, the whole sweep, JSON on stdout -------------------------------


def child_corral(path: str, a: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(a.threads)
    # one token per step, as llama.cpp decodes (prompt-lookup speculation is measured
    # on its own by bench/speculative.py)
    os.environ["CORRAL_SPECULATIVE"] = "0"
    import corral

    t0 = time.perf_counter()
    model = corral.load(path, n_ctx=a.n_ctx)
    load_s = time.perf_counter() - t0
    text_ids = model.tokenize(TEXT, add_special=False)
    fill = fill_tokens(model.tokenizer.bos_id, text_ids, max(a.contexts))
    # warm-up (pages the mapped weights in, first-call costs), then start from an empty cache;
    # each later length reuses the previous one's prefix
    model.generate(fill[:1], max_tokens=WARMUP_TOKENS, temperature=0, ignore_eos=True)
    model._cached_ids = []
    points = []
    for n in a.contexts:
        prompt = fill[: max(n, 1)]
        r = model.generate(prompt, max_tokens=a.decode_tokens, temperature=0, ignore_eos=True)
        t = r.timings
        points.append({
            "context": n,
            "decode_tps": (t.decode_tokens - 1) / t.decode_s,
            "prefilled": t.prompt_tokens,
            "prefill_s": t.prompt_s,
        })  # fmt: skip
    return {"load_s": load_s, "points": points, "peak_rss_mb": peak_rss_mb()}


def child_llama_cpp(path: str, a: argparse.Namespace) -> dict:
    set_llama_extra_bufts(a.llama_extra_bufts)
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
    text_ids = llm.tokenize(TEXT.encode(), add_bos=False, special=False)
    bos = llm.token_bos()
    fill = fill_tokens(bos if bos >= 0 else None, text_ids, max(a.contexts))

    def pick() -> int:
        row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
        return int(np.argmax(row))

    llm.reset()  # warm-up, as for corral
    llm.eval(fill[:1])
    for _ in range(WARMUP_TOKENS - 1):
        llm.eval([pick()])
    points = []
    llm.reset()
    held = 0  # fill tokens in the cache; eval() drops everything after llm.n_tokens
    for n in a.contexts:
        prompt = fill[: max(n, 1)]
        llm.n_tokens = held
        t = time.perf_counter()
        llm.eval(prompt[held:])
        prefill_s = time.perf_counter() - t
        prefilled, held = len(prompt) - held, len(prompt)
        t = time.perf_counter()
        tok = pick()
        for _ in range(a.decode_tokens - 1):
            llm.eval([tok])
            tok = pick()
        points.append({
            "context": n,
            "decode_tps": (a.decode_tokens - 1) / (time.perf_counter() - t),
            "prefilled": prefilled,
            "prefill_s": prefill_s,
        })  # fmt: skip
    return {"load_s": load_s, "points": points, "peak_rss_mb": peak_rss_mb()}


# -- parent ------------------------------------------------------------------------------


def run_child(python: str, engine: str, path: str, a: argparse.Namespace) -> dict:
    cmd = [python, __file__, path, "--child", engine, "--threads", str(a.threads),
           "--contexts", ",".join(map(str, a.contexts)), "--decode-tokens", str(a.decode_tokens),
           "--n-ctx", str(a.n_ctx)]  # fmt: skip
    if engine == "llama.cpp":
        return run_llama_child(cmd, a)
    return child_result(spawn(cmd, a.threads), engine)


def medians(runs: list[dict]) -> list[dict]:
    """Per context length, the median decode tokens/s over the runs."""
    by_len: dict[int, list[float]] = {}
    for r in runs:
        for p in r["points"]:
            by_len.setdefault(p["context"], []).append(p["decode_tps"])
    return [
        {"context": n, "decode_tps": round(statistics.median(v), 3)}
        for n, v in sorted(by_len.items())
    ]


def plot(report: dict, png: Path) -> None:
    """Decode tokens/s against tokens in context, one line per engine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for engine, style in (("corral", "o-"), ("llama.cpp", "s--")):
        if engine in report:
            pts = report[engine]
            ax.plot([p["context"] for p in pts], [p["decode_tps"] for p in pts], style,
                    label=engine)  # fmt: skip
    ax.set_xlabel("tokens already in context")
    ax.set_ylabel("decode tokens/s")
    ax.set_title(f"{report['model']}: {report['threads']} threads, "
                 f"{report['decode_tokens']} tokens per point, median of {report['runs']}",
                 fontsize=9)  # fmt: skip
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--contexts", default=DEFAULT_CONTEXTS,
                    help=f"comma-separated context lengths (default {DEFAULT_CONTEXTS})")  # fmt: skip
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-ctx", type=int, default=0, help="default: max context + decode + 16")
    ap.add_argument("--peer-python", default=os.environ.get("CORRAL_PEER_PYTHON", DEFAULT_PEER))
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--llama-extra-bufts", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the PNG")
    ap.add_argument("--json", type=Path, help="default: --out with .json")
    ap.add_argument("--child", choices=["corral", "llama.cpp"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.contexts = sorted({int(x) for x in a.contexts.split(",") if x.strip()})
    if a.decode_tokens < 2:
        raise SystemExit("--decode-tokens must be at least 2")
    a.n_ctx = a.n_ctx or max(a.contexts) + a.decode_tokens + 16
    if a.child:
        child = child_corral if a.child == "corral" else child_llama_cpp
        print(json.dumps(child(a.model, a)))
        return
    path = model_path(a.model)
    peer = None if a.no_peer or not Path(a.peer_python).exists() else a.peer_python
    ours, theirs = [], []
    for _ in range(a.runs):
        ours.append(run_child(sys.executable, "corral", path, a))
        if peer:
            theirs.append(run_child(peer, "llama.cpp", path, a))
    report: dict = {
        "model": a.model,
        "file": Path(path).name,
        "threads": a.threads,
        "runs": a.runs,
        "decode_tokens": a.decode_tokens,
        "n_ctx": a.n_ctx,
        "machine": f"{os.cpu_count()} cpus, {os.uname().machine}",
        "corral": medians(ours),
        "corral_runs": ours,
    }
    if peer:
        report["llama.cpp"] = medians(theirs)
        report["llama.cpp_runs"] = theirs
        report["llama.cpp_extra_bufts"] = a.llama_extra_bufts
        report["ratio"] = {
            str(c["context"]): round(c["decode_tps"] / lc["decode_tps"], 3)
            for c, lc in zip(report["corral"], report["llama.cpp"], strict=True)
        }
        report["ratio_note"] = "corral/llama.cpp decode tokens/s per context length"
    out_json = a.json or a.out.with_suffix(".json")
    out_json.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2)
    out_json.write_text(text + "\n")
    plot(report, a.out)
    print(text)
    print(f"wrote {a.out} and {out_json}", file=sys.stderr)


if __name__ == "__main__":
    main()
