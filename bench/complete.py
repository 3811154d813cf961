#!/usr/bin/env python3
"""Editor-completion latency: typing through a 200-line file, one request per character.

    python bench/complete.py MODEL [--file PATH] [--keystrokes 120] [--max-tokens 16]
                               [--start-line 100] [--fim | --prefix] [--out FILE]

MODEL is a store name or a .gguf path. The document is the first 200 lines of --file
(default: corral's scheduler module). Starting at --start-line, the text is "typed" one
character at a time; each keystroke asks for a completion at the cursor through the same
Completer `corral lsp` uses (prefix = the text up to the cursor, suffix = the lines below
the cursor's line: the rest of that line is not typed yet), greedy, --max-tokens at most,
cut to the cursor's shape as the server does.

Two passes over the same keystrokes: with the prompt cache (the Scheduler's slot keeps the
last prompt, so the next one computes only what changed) and without it (the slot is
emptied before each request, as if every keystroke were the first). The JSON gives latency
p50/p95/mean in ms per pass, prompt tokens per request and tokens served from the cache.

FIM prompts are used when the model has FIM tokens; --prefix forces prefix-only prompts,
--fim fails on a model without them. SmolLM2 has none, so it runs prefix-only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from corral.lsp.complete import Ask, Completer, FimMode

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FILE = ROOT / "src" / "corral" / "engine" / "scheduler.py"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def _pass(
    completer: Completer, text: str, start: int, n: int, args: argparse.Namespace,
    mode: FimMode, cached: bool,
) -> dict:  # fmt: skip
    """Type `n` characters from `start`, one completion each; latency and cache figures."""

    sched = completer.scheduler
    lat, prompt_tokens = [], []
    reused_before = sched.stats.cached_prompt_tokens_total
    for i in range(n):
        pos = start + i
        if not cached:
            # no prompt cache: forget what the slot holds (the worker is idle between
            # requests, so this is safe; there is no public switch for it)
            for held in sched._slot_tokens:
                held.clear()
        eol = text.find("\n", pos)
        below = text[eol:] if eol >= 0 else ""
        ask = Ask("bench", text[:pos], below, mode, args.context_window, args.max_tokens)
        t0 = time.perf_counter()
        ans = await completer.complete(ask)
        lat.append((time.perf_counter() - t0) * 1000)
        prompt_tokens.append(ans.prompt_tokens)
    reused = sched.stats.cached_prompt_tokens_total - reused_before
    return {
        "p50_ms": round(_percentile(lat, 0.5), 1),
        "p95_ms": round(_percentile(lat, 0.95), 1),
        "mean_ms": round(statistics.fmean(lat), 1),
        "prompt_tokens_mean": round(statistics.fmean(prompt_tokens), 1),
        "cached_tokens_per_request": round(reused / n, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--file", type=Path, default=DEFAULT_FILE)
    ap.add_argument("--lines", type=int, default=200)
    ap.add_argument("--start-line", type=int, default=100)
    ap.add_argument("--keystrokes", type=int, default=120)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--context-window", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=None)
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--fim", action="store_true", help="FIM prompts or fail")
    group.add_argument("--prefix", action="store_true", help="prefix-only prompts")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    from corral.fim import find_fim_tokens

    lines = args.file.read_text().splitlines(keepends=True)[: args.lines]
    text = "".join(lines)
    start = len("".join(lines[: args.start_line]))
    n = min(args.keystrokes, len(text) - start)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    completer = Completer(args.model)
    completer.load()
    model = completer.model
    has_fim = find_fim_tokens(model.tokenizer, model.info.metadata) is not None
    if args.fim and not has_fim:
        print(f"{model.info.name} has no FIM tokens", file=sys.stderr)
        return 1
    mode = FimMode.FIM if has_fim and not args.prefix else FimMode.PREFIX

    async def run() -> dict:
        # warm-up: first-call costs (allocations, the healing table) stay out of both passes
        await completer.complete(Ask("warm", text[:start], text[start:], mode, 1024, 4))
        with_cache = await _pass(completer, text, start, n, args, mode, cached=True)
        without = await _pass(completer, text, start, n, args, mode, cached=False)
        return {"cache": with_cache, "no_cache": without}

    try:
        passes = asyncio.run(run())
    finally:
        completer.close()
    result = {
        "bench": "complete",
        "model": model.info.name,
        "file": str(args.file.relative_to(ROOT) if args.file.is_relative_to(ROOT) else args.file),
        "lines": len(lines),
        "start_line": args.start_line,
        "keystrokes": n,
        "max_tokens": args.max_tokens,
        "prompt": mode.value,
        "threads": args.threads,
        **passes,
        "speedup_p50": round(
            passes["no_cache"]["p50_ms"] / max(passes["cache"]["p50_ms"], 1e-9), 2
        ),
    }
    out = json.dumps(result, indent=2)
    print(out)
    if args.out:
        args.out.write_text(out + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
