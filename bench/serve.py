#!/usr/bin/env python3
"""Serving benchmark: corral's server against llama.cpp's (llama-cpp-python) in one run.

    python bench/serve.py [--model smollm2] [--clients 1,4,8] [--tokens 64] [--rounds 3]
                          [--threads 2] [--ctx 2048] [--prefix-tokens 1000] [--prefix-trials 3]
                          [--peer-python PATH] [--peer-model PATH] [--no-peer]
                          [--llama-extra-bufts auto|on|off] [--out FILE]

For each engine a server is started on a free loopback port (corral from the store at
$CORRAL_HOME or ~/.cache/corral, with as many slots as the largest client count; llama.cpp's
`python -m llama_cpp.server` in the peer environment on the same GGUF file), warmed up, and
then, for each client count C, C concurrent clients each stream `--rounds` chat answers of at
most `--tokens` tokens (greedy, varied prompts) from /v1/chat/completions. Reported per level:
aggregate tokens/s (all tokens / wall time), time to first token p50/p95/max, per-stream
decode tokens/s, and dropped streams (an error, a non-200, or no `[DONE]`) and empty ones
(no text at all).

Prefix cache: a request whose ~`--prefix-tokens`-token system prompt is new, then a second
one with the same system prompt and another question; the second's time to first token over
the first's (floor: <= 0.25 for corral). Each trial uses a fresh prefix, so no earlier request
has cached it; the median over trials is reported.

llama.cpp's CPU "extra buffer types" (weight repacking, AMX) crash some builds with SIGILL on
prompts longer than one token on CPUs that report AMX. llama_cpp.server has no setting for
them, so the server runs under a small wrapper that can load the model with
`use_extra_bufts = False`; "auto" tries with them first and falls back if the server dies of
SIGILL, recording which was used under "llama.cpp" -> "extra_bufts".

JSON goes to stdout (and --out). Needs httpx (in corral's dev extra); the peer environment
needs llama-cpp-python's server extra (fastapi, uvicorn, sse-starlette, starlette-context,
pydantic-settings).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

DEFAULT_PEER_PYTHON = "/tmp/corral-peers/bin/python"
DEFAULT_PEER_MODEL = "/tmp/corral-peers/models/SmolLM2-135M-Instruct.Q4_1.gguf"
SIGILL_RETURN_CODES = (-signal.SIGILL, 128 + signal.SIGILL)
PREFIX_FLOOR = 0.25
SCALING_FLOOR = 3.0  # 8 clients' aggregate tokens/s over one client's

# Questions that draw long answers, so most streams run to max_tokens; clients take them in
# turn, so concurrent streams decode different text.
PROMPTS = [
    "Explain in detail how a bicycle stays upright while it moves.",
    "Describe the water cycle step by step, with examples.",
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "What are the main differences between a list and a tuple in Python? Give examples.",
    "Give me a detailed recipe for a vegetable soup, with every step.",
    "Explain how vaccines train the immune system.",
    "Describe the history of the printing press and why it mattered.",
    "Write a letter to a friend describing a trip to the mountains.",
    "Explain what photosynthesis is and why plants need sunlight.",
    "List ten tips for learning a new language and explain each one.",
    "Describe how a computer boots, from power button to desktop.",
    "Write a poem about the sea in autumn, then explain its imagery.",
    "Explain the rules of chess to a beginner.",
    "How does a refrigerator keep food cold? Explain the physics.",
    "Describe a day in the life of a medieval blacksmith.",
    "Explain why the sky is blue and sunsets are red.",
]
PREFIX_SENTENCES = [
    "The archive holds letters, maps and ledgers from the old harbour town.",
    "Each ledger lists ships, their cargo, the weather and the names of the crews.",
    "Clerks wrote in brown ink that has faded to the colour of weak tea.",
    "Some maps show streets that were later flooded and never rebuilt.",
    "Researchers must wear gloves and may only use pencils in the reading room.",
    "The catalogue was begun by a retired schoolteacher and finished by volunteers.",
]
PREFIX_QUESTIONS = ["What must researchers wear?", "Who began the catalogue?"]

# Runs llama_cpp.server's own main(); with "off" the model loads without extra buffer types
# (llama.Llama builds its model params from llama_model_default_params, which has no keyword
# for them, so that function is wrapped).
LLAMA_WRAPPER = """
import sys
if sys.argv[1] == "off":
    import llama_cpp.llama_cpp as lib
    _defaults = lib.llama_model_default_params
    def _params():
        p = _defaults()
        p.use_extra_bufts = False
        return p
    lib.llama_model_default_params = _params
sys.argv = ["llama_cpp.server"] + sys.argv[2:]
from llama_cpp.server.__main__ import main
main()
"""

# corral's app with an explicit slot count, for a `corral serve` without --slots
CORRAL_LAUNCHER = """
import json, sys
import uvicorn
from corral.server import ServerConfig, create_app
kw = json.loads(sys.argv[1])
uvicorn.run(create_app(ServerConfig(**kw)), host=kw["host"], port=kw["port"], log_level="warning")
"""


# -- measuring one stream -----------------------------------------------------------------


@dataclass
class StreamResult:
    """One streamed answer as the client saw it."""

    ok: bool  # HTTP 200 and the stream ended with [DONE]
    error: str | None
    ttft_s: float | None  # request sent -> first text
    total_s: float  # request sent -> stream closed
    tokens: int
    chars: int
    prompt_tokens: int | None = None  # from the usage chunk, where the server sends one
    cached_tokens: int | None = None  # prompt tokens the server took from its cache


async def stream_chat(
    client: httpx.AsyncClient,
    base: str,
    model: str,
    messages: list[dict[str, str]],
    max_tokens: int,
) -> StreamResult:
    """POST a streaming chat request and time it.

    Tokens come from the final usage chunk where the server sends one (corral, asked with
    stream_options.include_usage), else from the number of chunks carrying text (llama.cpp's
    server sends one per token).
    """
    body = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,  # greedy: both engines write (nearly) the same answers
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    ttft: float | None = None
    chunks = chars = 0
    usage: dict[str, Any] = {}
    done = False
    try:
        async with client.stream("POST", f"{base}/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                text = (await r.aread()).decode(errors="replace")
                return StreamResult(False, f"HTTP {r.status_code}: {text[:200]}", None, 0.0, 0, 0)
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                obj = json.loads(data)
                if "error" in obj:
                    raise RuntimeError(f"in-stream error: {obj['error']}")
                usage = obj.get("usage") or usage
                for choice in obj.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content") or ""
                    if piece:
                        ttft = ttft if ttft is not None else time.perf_counter() - t0
                        chunks += 1
                        chars += len(piece)
    except (httpx.HTTPError, RuntimeError, json.JSONDecodeError) as e:
        return StreamResult(False, f"{type(e).__name__}: {e}", ttft, time.perf_counter() - t0,
                            chunks, chars)  # fmt: skip
    total = time.perf_counter() - t0
    tokens = usage.get("completion_tokens", chunks)
    error = None if done else "stream ended without [DONE]"
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    return StreamResult(done, error, ttft, total, tokens, chars, usage.get("prompt_tokens"), cached)


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def r3(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


# -- load levels ----------------------------------------------------------------------------


async def run_level(base: str, model: str, clients: int, rounds: int, tokens: int) -> dict:
    """`clients` concurrent clients, each streaming `rounds` answers one after another."""
    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)
    # long read timeout: a server that serves one stream at a time makes the others wait
    timeout = httpx.Timeout(connect=10, read=900, write=30, pool=900)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:

        async def one_client(i: int) -> list[StreamResult]:
            out = []
            for r in range(rounds):
                prompt = PROMPTS[(i * rounds + r) % len(PROMPTS)]
                msgs = [{"role": "user", "content": prompt}]
                out.append(await stream_chat(client, base, model, msgs, tokens))
            return out

        t0 = time.perf_counter()
        per_client = await asyncio.gather(*(one_client(i) for i in range(clients)))
        wall = time.perf_counter() - t0
    results = [r for rs in per_client for r in rs]
    ttfts = [r.ttft_s for r in results if r.ttft_s is not None]
    decode = [
        (r.tokens - 1) / (r.total_s - r.ttft_s)
        for r in results
        if r.ok and r.ttft_s is not None and r.tokens > 1 and r.total_s > r.ttft_s
    ]
    total_tokens = sum(r.tokens for r in results)
    errors = sorted({r.error for r in results if r.error})
    return {
        "clients": clients,
        "streams": len(results),
        "wall_s": r3(wall),
        "tokens": total_tokens,
        "mean_tokens_per_stream": r3(total_tokens / len(results)),
        "aggregate_tps": r3(total_tokens / wall),
        "ttft_p50_s": r3(percentile(ttfts, 50)),
        "ttft_p95_s": r3(percentile(ttfts, 95)),
        "ttft_max_s": r3(max(ttfts, default=None)),
        "stream_decode_tps_median": r3(statistics.median(decode) if decode else None),
        "dropped_streams": sum(not r.ok for r in results),
        "empty_streams": sum(r.ok and r.chars == 0 for r in results),
        "errors": errors[:5],
    }


async def prefix_trial(base: str, model: str, prefix: str) -> dict:
    """Two requests sharing `prefix` as their system prompt, one after the other."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(600, connect=10)) as client:
        out = []
        for question in PREFIX_QUESTIONS:
            msgs = [{"role": "system", "content": prefix}, {"role": "user", "content": question}]
            out.append(await stream_chat(client, base, model, msgs, 8))
    first, second = out
    ratio = None
    if first.ttft_s and second.ttft_s is not None:
        ratio = second.ttft_s / first.ttft_s
    return {
        "first_ttft_s": r3(first.ttft_s),
        "second_ttft_s": r3(second.ttft_s),
        "ratio": r3(ratio),
        # what the server says it reused (corral reports it; llama.cpp's server does not)
        "first_cached_tokens": first.cached_tokens,
        "second_cached_tokens": second.cached_tokens,
        "second_prompt_tokens": second.prompt_tokens,
        "ok": first.ok and second.ok,
        "errors": [r.error for r in out if r.error],
    }


def prefix_text(n_sentences: int) -> str:
    """`n_sentences` archive sentences behind a random tag, so no earlier request cached it."""
    parts = [f"Archive note {secrets.token_hex(4)}."]
    parts += [
        f"{PREFIX_SENTENCES[i % len(PREFIX_SENTENCES)]} (item {i})" for i in range(n_sentences)
    ]
    return " ".join(parts)


def count_tokens(base: str, model: str, text: str) -> int:
    r = httpx.post(f"{base}/tokenize", json={"model": model, "content": text}, timeout=60)
    r.raise_for_status()
    return len(r.json()["tokens"])


def sentences_for(base: str, model: str, n_tokens: int) -> int:
    """How many sentences make a prefix of at least `n_tokens` tokens (corral's /tokenize;
    llama.cpp then gets the same number of sentences from the same file's tokenizer)."""
    n = 8
    while count_tokens(base, model, prefix_text(n)) < n_tokens:
        n += 4
    return n


async def prefix_cache(
    base: str, model: str, n_sentences: int, trials: int, count_base: str | None
) -> dict:
    runs = []
    for _ in range(trials):
        prefix = prefix_text(n_sentences)
        count = count_tokens(count_base, model, prefix) if count_base else None
        runs.append({"prefix_tokens": count, **(await prefix_trial(base, model, prefix))})
    ratios = [t["ratio"] for t in runs if t["ratio"] is not None]
    ratio = statistics.median(ratios) if ratios else None
    return {
        "prefix_sentences": n_sentences,
        "trials": runs,
        "median_ratio": r3(ratio),
        "floor": PREFIX_FLOOR,
        "meets_floor": ratio is not None and ratio <= PREFIX_FLOOR,
    }


# -- servers -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")


@contextmanager
def server(cmd: list[str], ready_path: str, port: int, log: Path, env: dict[str, str]) -> Iterator[
    tuple[str, subprocess.Popen]
]:  # fmt: skip
    """Run `cmd` until the block ends; yields (base URL, process)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_up(base + ready_path, proc)
            yield base, proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def log_tail(log: Path, n: int = 1500) -> str:
    try:
        return log.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def corral_command(a: argparse.Namespace, port: int, slots: int) -> tuple[list[str], dict]:
    """`corral serve` when it takes --slots; else corral's app through a launcher that sets
    them (the benchmark needs one slot per client: with fewer, clients queue)."""
    corral = Path(sys.executable).with_name("corral")
    serve = [str(corral) if corral.exists() else "corral", "serve"]
    help_text = subprocess.run([*serve, "--help"], capture_output=True, text=True).stdout
    common = ["--host", "127.0.0.1", "--port", str(port), "--keep-alive", "-1"]
    if "--slots" in help_text:
        cmd = [*serve, *common, "--slots", str(slots), "--ctx", str(a.ctx)]
        return cmd, {"launch": " ".join(cmd), "slots": slots}
    kw = {
        "host": "127.0.0.1", "port": port, "slots": slots, "n_ctx": a.ctx, "threads": a.threads,
        # inf, not -1: ServerConfig's manager unloads at once on a negative keep_alive
        "keep_alive": float("inf"), "max_queue": max(64, 4 * slots),
    }  # fmt: skip
    cmd = [sys.executable, "-c", CORRAL_LAUNCHER, json.dumps(kw)]
    why = "`corral serve` has no --slots option; the app was started with ServerConfig"
    return cmd, {"launch": f"create_app(ServerConfig(**{kw}))", "slots": slots, "note": why}


async def warm_up(base: str, model: str) -> StreamResult:
    """Load the model and run a multi-token prompt once (llama.cpp's SIGILL shows here)."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(600, connect=10)) as client:
        msgs = [{"role": "user", "content": "Say hello to the people of the valley."}]
        return await stream_chat(client, base, model, msgs, 4)


async def measure(base: str, model: str, a: argparse.Namespace, count_base: str | None) -> dict:
    levels = {}
    for c in a.clients:
        levels[str(c)] = await run_level(base, model, c, a.rounds, a.tokens)
        print(f"  {c} clients: {json.dumps(levels[str(c)])}", file=sys.stderr)
    out: dict[str, Any] = {"levels": levels}
    if a.prefix_trials > 0:
        out["prefix_cache"] = await prefix_cache(
            base, model, a.prefix_sentences, a.prefix_trials, count_base
        )
        print(f"  prefix cache: {json.dumps(out['prefix_cache'])}", file=sys.stderr)
    return out


def bench_corral(a: argparse.Namespace, workdir: Path) -> dict:
    port = free_port()
    cmd, info = corral_command(a, port, max(a.clients))
    log = workdir / "corral.log"
    print(f"corral: {info['launch']}", file=sys.stderr)
    with server(cmd, "/health", port, log, dict(os.environ)) as (base, _):
        warm = asyncio.run(warm_up(base, a.model))
        if not warm.ok:
            raise RuntimeError(f"corral warm-up failed: {warm.error}\n{log_tail(log)}")
        if a.prefix_trials > 0:
            a.prefix_sentences = sentences_for(base, a.model, a.prefix_tokens)
        return {"server": info, **asyncio.run(measure(base, a.model, a, base))}


def bench_llama(a: argparse.Namespace, workdir: Path) -> dict:
    """llama_cpp.server on the peer model; retries without extra buffer types on SIGILL."""
    modes = {"auto": ["on", "off"], "on": ["on"], "off": ["off"]}[a.llama_extra_bufts]
    last_error = ""
    for mode in modes:
        port = free_port()
        args = [
            "--model", a.peer_model, "--host", "127.0.0.1", "--port", str(port),
            "--n_threads", str(a.threads), "--n_threads_batch", str(a.threads),
            "--n_ctx", str(a.ctx),
        ]  # fmt: skip
        cmd = [a.peer_python, "-c", LLAMA_WRAPPER, mode, *args]
        log = workdir / f"llama-{mode}.log"
        print(f"llama.cpp: python -m llama_cpp.server {' '.join(args)} (extra bufts {mode})",
              file=sys.stderr)  # fmt: skip
        with server(cmd, "/v1/models", port, log, dict(os.environ)) as (base, proc):
            warm = asyncio.run(warm_up(base, "peer"))
            time.sleep(0.5)  # let a crashing server finish dying
            if proc.poll() in SIGILL_RETURN_CODES:
                last_error = f"SIGILL with extra buffer types {mode}"
                continue
            if not warm.ok:
                raise RuntimeError(f"llama.cpp warm-up failed: {warm.error}\n{log_tail(log)}")
            note = "on" if mode == "on" else "off (use_extra_bufts=False via wrapper)"
            if mode == "off" and len(modes) > 1:
                note += f": {last_error}"
            info = {"launch": f"python -m llama_cpp.server {' '.join(args)}", "extra_bufts": note}
            # its prefixes have as many sentences as corral's (same file, same tokenizer)
            return {"server": info, **asyncio.run(measure(base, "peer", a, None))}
    raise RuntimeError(f"llama.cpp server failed: {last_error}")


def summarize(res: dict, a: argparse.Namespace) -> dict:
    """Floors (corral) and corral/llama.cpp ratios per level."""
    out: dict[str, Any] = {}
    corral = res.get("corral")
    if corral:
        lv = corral["levels"]
        lo, hi = str(min(a.clients)), str(max(a.clients))
        if lo != hi and lv[lo]["aggregate_tps"]:
            scale = lv[hi]["aggregate_tps"] / lv[lo]["aggregate_tps"]
            out[f"corral_scaling_{hi}_vs_{lo}"] = {
                "ratio": r3(scale),
                "floor": SCALING_FLOOR,
                "meets_floor": scale >= SCALING_FLOOR,
            }
        if "prefix_cache" in corral:
            pc = corral["prefix_cache"]
            out["corral_prefix_cache"] = {
                k: pc[k] for k in ("median_ratio", "floor", "meets_floor")
            }
        out["corral_dropped_or_empty"] = sum(
            v["dropped_streams"] + v["empty_streams"] for v in lv.values()
        )
    peer = res.get("llama.cpp")
    if corral and isinstance(peer, dict) and "levels" in peer:
        vs = {}
        for c, mine in corral["levels"].items():
            theirs = peer["levels"].get(c)
            if not theirs:
                continue

            def ratio(key: str, mine: dict = mine, theirs: dict = theirs) -> float | None:
                m, t = mine.get(key), theirs.get(key)
                return r3(m / t) if m is not None and t else None

            vs[c] = {
                "aggregate_tps": ratio("aggregate_tps"),
                "ttft_p50": ratio("ttft_p50_s"),
                "ttft_p95": ratio("ttft_p95_s"),
            }
        out["corral_over_llama.cpp"] = vs
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2", help="corral store name (default smollm2)")
    p.add_argument("--clients", default="1,4,8", help="concurrency levels (default 1,4,8)")
    p.add_argument("--tokens", type=int, default=64, help="max tokens per answer (default 64)")
    p.add_argument("--rounds", type=int, default=3, help="answers per client per level")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for each engine")
    p.add_argument("--ctx", type=int, default=2048, help="context size for both servers")
    p.add_argument("--prefix-tokens", type=int, default=1000)
    p.add_argument("--prefix-trials", type=int, default=3, help="0 skips the prefix test")
    p.add_argument(
        "--peer-python", default=os.environ.get("CORRAL_PEER_PYTHON", DEFAULT_PEER_PYTHON)
    )
    p.add_argument("--peer-model", help=f"GGUF for llama.cpp (default {DEFAULT_PEER_MODEL}, "
                   "else corral's file for --model)")  # fmt: skip
    p.add_argument("--no-peer", action="store_true", help="corral only")
    p.add_argument("--llama-extra-bufts", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    a = p.parse_args(argv)
    a.clients = sorted({int(c) for c in a.clients.split(",") if c.strip()})
    if not a.clients or min(a.clients) < 1:
        p.error("--clients needs positive counts")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    from corral.store import Store

    model_file = Store().resolve(a.model).path  # honours CORRAL_HOME, as the server does
    if a.peer_model is None:
        a.peer_model = DEFAULT_PEER_MODEL if Path(DEFAULT_PEER_MODEL).exists() else str(model_file)
    res: dict[str, Any] = {
        "bench": "serve",
        "model": a.model,
        "model_file": str(model_file),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    with tempfile.TemporaryDirectory(prefix="corral-bench-serve-") as tmp:
        workdir = Path(tmp)
        res["corral"] = bench_corral(a, workdir)
        if a.no_peer:
            res["llama.cpp"] = "skipped (--no-peer)"
        elif not Path(a.peer_python).exists():
            res["llama.cpp"] = f"skipped: no peer python at {a.peer_python}"
        else:
            try:
                res["llama.cpp"] = bench_llama(a, workdir)
            except (RuntimeError, TimeoutError) as e:
                res["llama.cpp"] = f"failed: {e}"
    res["summary"] = summarize(res, a)
    text = json.dumps(res, indent=2)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
