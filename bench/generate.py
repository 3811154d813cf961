#!/usr/bin/env python3
"""Generation benchmark: corral against llama.cpp on the same GGUF file, in one run.

    python bench/generate.py MODEL [--runs 3] [--threads 2] [--peer-python PATH] [--out FILE]
                               [--hf] [--llama-extra-bufts auto|on|off]

MODEL is a store name (smollm2, gemma3-270m) or a .gguf path. Each measurement runs in a
fresh child process (so peak RSS is that engine's own), the two engines alternating, and the
medians are reported as JSON with corral/llama.cpp ratios. llama.cpp runs through
llama-cpp-python from the peer environment (../shared/bench/setup-peers.sh), found at
--peer-python or $CORRAL_PEER_PYTHON or /tmp/corral-peers/bin/python; without it only
corral's figures are printed.

Measures: load (until the first token can be produced), prompt tokens/s (a 512-token
prompt), decode tokens/s (128 greedy tokens after a 1-token prompt), decode tokens/s with
--ctx-fill tokens already in context, peak RSS.

--hf adds a third child in the peer environment: HF transformers loading the same GGUF
(`from_pretrained(folder, gguf_file=name)`, dequantized to float32, torch threads = --threads;
needs `accelerate` there). It reports load time (tokenizer and model, until the first token
can be produced) and decode tokens/s: `model.generate` with a 1-token prompt, greedy,
max_new_tokens = min_new_tokens = --decode-tokens, timed by a streamer from the first new token
to the last (so the prefill is left out, as for the other engines), after a short warm-up
generate. Figures go under "transformers", ratios corral/transformers under
"ratio_transformers".

--llama-extra-bufts: llama.cpp's CPU "extra buffer types" (weight repacking, and AMX on CPUs
that report it). Some builds crash with SIGILL in the AMX matmul on machines whose CPU reports
AMX (a tile instruction runs without a loaded tile config); "auto" (the default) runs with them
and, if the child dies of SIGILL, reruns it with `use_extra_bufts = False` and says so in the
JSON ("llama.cpp_extra_bufts"). "off" also disables the AVX2 repacks, which can slow llama.cpp.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import resource
import signal
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
SIGILL_RETURN_CODES = (-signal.SIGILL, 128 + signal.SIGILL)


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

    def decode(start: list[int], speculative: bool = False) -> float:
        # llama.cpp decodes one token per step: compare like with like, and report
        # corral's prompt-lookup speculation (on by default for greedy) on its own
        os.environ["CORRAL_SPECULATIVE"] = "1" if speculative else "0"
        model._cached_ids = []  # no prefix reuse between the measurements
        r = model.generate(start, max_tokens=a.decode_tokens, temperature=0, ignore_eos=True)
        return r.timings.decode_tps

    first = [model.tokenizer.bos_id or prompt[0]]
    decode_tps = decode(first)
    fill = model.tokenize(TEXT * 80, add_special=False)[: a.ctx_fill]
    decode_ctx_tps = decode(fill)
    decode_spec_tps = decode(first, speculative=True)
    return {
        "load_s": load_s,
        "prompt_tps": len(prompt) / prompt_s,
        "decode_tps": decode_tps,
        "decode_ctx_tps": decode_ctx_tps,
        "decode_speculative_tps": decode_spec_tps,
        "peak_rss_mb": peak_rss_mb(),
        "kv_cache_mb": model._kv().nbytes() / 2**20,
    }


def set_llama_extra_bufts(mode: str) -> None:
    """With mode "off", make llama-cpp-python load models with `use_extra_bufts = False`
    (llama.Llama builds its model params from llama_cpp.llama_cpp.llama_model_default_params,
    which has no keyword for this)."""
    if mode != "off":
        return
    import llama_cpp.llama_cpp as lib

    defaults = lib.llama_model_default_params

    def params() -> object:  # a llama_model_params ctypes struct
        p = defaults()
        p.use_extra_bufts = False
        return p

    lib.llama_model_default_params = params


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


class _TokenTimes:
    """A transformers generate() streamer that records when each new token arrives."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value: object) -> None:
        if not self._prompt_seen:  # the first put() is the prompt
            self._prompt_seen = True
            return
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def child_transformers(path: str, a: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = Path(path).resolve()
    tok = AutoTokenizer.from_pretrained(p.parent, gguf_file=p.name)
    model = AutoModelForCausalLM.from_pretrained(p.parent, gguf_file=p.name, dtype=torch.float32)
    model.eval()
    load_s = time.perf_counter() - t0
    first = tok.bos_token_id
    if first is None:
        first = tok(TEXT, add_special_tokens=False)["input_ids"][0]
    ids = torch.tensor([[first]])
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def generate(n: int) -> list[float]:
        times = _TokenTimes()
        with torch.inference_mode():
            model.generate(
                ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                do_sample=False, streamer=times, pad_token_id=pad,
            )  # fmt: skip
        return times.times

    generate(4)  # warm-up: the other engines have run a prompt before their decode figures
    times = generate(a.decode_tokens)
    n = len(times) - 1  # tokens after the first one (which came out of the prefill)
    return {
        "load_s": load_s,
        "decode_tps": n / (times[-1] - times[0]) if n > 0 else 0.0,
        "peak_rss_mb": peak_rss_mb(),
    }


# -- parent: alternate the engines, take medians, print JSON -----------------------------


def spawn(cmd: list[str], threads: int) -> subprocess.CompletedProcess[str]:
    """Run one child (OMP_NUM_THREADS = threads, Hugging Face hub offline) and wait for it."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def child_result(out: subprocess.CompletedProcess[str], engine: str) -> dict:
    """The child's JSON (its last stdout line); exits with its stderr when it failed."""
    if out.returncode != 0:
        how = f"signal {-out.returncode}" if out.returncode < 0 else f"exit {out.returncode}"
        raise SystemExit(f"{engine} run failed ({how}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_llama_child(cmd: list[str], a: argparse.Namespace) -> dict:
    """Run a llama.cpp child with --llama-extra-bufts. In "auto" mode the first run settles
    a.llama_extra_bufts: "on", or "off" when the child dies of SIGILL with them on."""
    mode = "on" if a.llama_extra_bufts == "auto" else a.llama_extra_bufts
    out = spawn([*cmd, "--llama-extra-bufts", mode], a.threads)
    if a.llama_extra_bufts == "auto":
        if out.returncode in SIGILL_RETURN_CODES:
            print("llama.cpp died of SIGILL (its AMX path?); rerunning with use_extra_bufts off",
                  file=sys.stderr)  # fmt: skip
            mode = "off"
            out = spawn([*cmd, "--llama-extra-bufts", mode], a.threads)
        a.llama_extra_bufts = mode
    return child_result(out, "llama.cpp")


def run_child(python: str, engine: str, path: str, a: argparse.Namespace) -> dict:
    cmd = [python, __file__, path, "--child", engine, "--threads", str(a.threads),
           "--n-ctx", str(a.n_ctx), "--prompt-tokens", str(a.prompt_tokens),
           "--decode-tokens", str(a.decode_tokens), "--ctx-fill", str(a.ctx_fill)]  # fmt: skip
    if engine == "llama.cpp":
        return run_llama_child(cmd, a)
    return child_result(spawn(cmd, a.threads), engine)


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
    ap.add_argument("--hf", action="store_true",
                    help="also measure HF transformers (peer environment) on the same GGUF")  # fmt: skip
    ap.add_argument("--llama-extra-bufts", choices=["auto", "on", "off"], default="auto",
                    help="llama.cpp's repack/AMX buffers (auto: off only if on dies of SIGILL)")  # fmt: skip
    ap.add_argument("--out")
    ap.add_argument("--child", choices=["corral", "llama.cpp", "transformers"],
                    help=argparse.SUPPRESS)  # fmt: skip
    a = ap.parse_args()
    if a.child:
        children = {
            "corral": child_corral,
            "llama.cpp": child_llama_cpp,
            "transformers": child_transformers,
        }
        print(json.dumps(children[a.child](a.model, a)))
        return
    path = model_path(a.model)
    peer = None if a.no_peer or not Path(a.peer_python).exists() else a.peer_python
    if a.hf and not peer:
        raise SystemExit("--hf needs the peer environment (--peer-python), and not --no-peer")
    # byte-compile corral as `pip install` does for an installed package: where
    # PYTHONDONTWRITEBYTECODE is set, every child would otherwise count ~0.1 s of compiling
    # sources into its load time (llama-cpp-python comes compiled)
    compileall.compile_dir(Path(__file__).resolve().parents[1] / "src" / "corral", quiet=1)
    ours, theirs, hf = [], [], []
    for _ in range(a.runs):
        ours.append(run_child(sys.executable, "corral", path, a))
        if peer:
            theirs.append(run_child(peer, "llama.cpp", path, a))
        if a.hf:
            hf.append(run_child(peer, "transformers", path, a))
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
        report["llama.cpp_extra_bufts"] = a.llama_extra_bufts
    if hf:
        report["transformers"] = median_of(hf)
        report["transformers_runs"] = hf
        t = report["transformers"]
        report["ratio_transformers"] = {
            "decode_tps": round(c["decode_tps"] / t["decode_tps"], 3),
            "load_s": round(t["load_s"] / c["load_s"], 3),
        }
    text = json.dumps(report, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
