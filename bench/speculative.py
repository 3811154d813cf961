#!/usr/bin/env python3
"""Prompt-lookup speculative decoding: decode speed with and without drafts, same tokens.

    python bench/speculative.py [--models smollm2 gemma3-270m] [--max-tokens 192]
                                [--runs 3] [--threads 2] [--out FILE]

For each model and task (a chat prompt that quotes its input: fix the typos in a paragraph,
rename a variable in a function; and one that does not: a free-form answer), the same
greedy generation runs through the plain decode loop and through the speculative one (the
engine's own code paths: prefill, then `decode_loop` or `speculative_decode`), alternating,
`--runs` times each. Reports the median decode tokens/s of each, the speed-up, the draft
acceptance rate, forward passes per token, and whether the two token sequences are identical
(they must be: a mismatch is a bug and makes the exit status 1). JSON on stdout and in --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

import corral  # noqa: E402
from corral.engine.generate import (  # noqa: E402
    GenerationRequest,
    Timings,
    generate_tokens,
    prefill,
)
from corral.engine.sampling import SamplingParams  # noqa: E402
from corral.engine.speculative import (  # noqa: E402
    DraftStats,
    speculation_applies,
    speculative_decode,
)

PARAGRAPH = (
    "The old lighthouse stood on the edge of the cliff for more then two hundred years. "
    "Every night its keeper climbed the narow stairs, lit the great lamp and watched the "
    "ships pass safely through the dangerous strait. In winter the storms were so strong "
    "that the hole tower shook, and the waves reached almost to the gallery. The keeper "
    "wrote everything in his log: the wind, the wether, the ships he saw and the ones he "
    "feared were lost. When the light was finaly automated, the log books were sent to "
    "the town museum, where visitors can still read them today."
)
CODE = """def summarize(orders):
    x = 0
    count = 0
    for order in orders:
        if order["status"] != "cancelled":
            x += order["price"] * order["quantity"]
            count += 1
    average = x / count if count else 0.0
    print(f"orders: {count}, revenue: {x:.2f}, average: {average:.2f}")
    return {"count": count, "revenue": x, "average": average}
"""
TASKS = {
    "typos": f"Repeat this paragraph with the typos fixed:\n\n{PARAGRAPH}",
    "code_edit": "Rename the variable `x` to `revenue` in this Python function and show the "
    f"whole function:\n\n```python\n{CODE}```",
    "free": "Write a short story about a lighthouse keeper who finds a message in a bottle.",
}


def run_once(
    model: corral.Model, ids: list[int], max_tokens: int, speculative: bool
) -> dict[str, Any]:
    """One greedy generation from a fresh cache: tokens, decode tok/s, draft stats."""
    req = GenerationRequest(
        prompt_ids=ids, max_tokens=max_tokens, sampling=SamplingParams(temperature=0.0),
        stop_ids=model.tokenizer.eog_ids, speculative=None if speculative else False,
    )  # fmt: skip
    cache = model.net.make_cache(len(ids) + max_tokens + 16)
    t, stats = Timings(), DraftStats()
    if speculative:
        if not speculation_applies(model.net, req, cache):
            raise SystemExit(f"speculation does not apply to {model.info.name} here")
        logits = prefill(model.net, cache, ids)
        events = list(speculative_decode(model.net, req, cache, ids, logits, t, stats))
    else:
        events = list(generate_tokens(model.net, req, cache, t))
    return {
        "tokens": [e.token_id for e in events],
        "decode_tps": t.decode_tps,
        "stats": stats,
        "offset": cache.offset,
    }


def bench_task(model: corral.Model, prompt: str, max_tokens: int, runs: int) -> dict[str, Any]:
    ids = model.chat_prompt_ids([{"role": "user", "content": prompt}])
    plain_tps, spec_tps = [], []
    identical = True
    for _ in range(runs):  # alternate, so load on the machine hits both alike
        a = run_once(model, ids, max_tokens, speculative=False)
        b = run_once(model, ids, max_tokens, speculative=True)
        identical &= a["tokens"] == b["tokens"] and a["offset"] == b["offset"]
        plain_tps.append(a["decode_tps"])
        spec_tps.append(b["decode_tps"])
    st: DraftStats = b["stats"]
    plain, spec = statistics.median(plain_tps), statistics.median(spec_tps)
    return {
        "prompt_tokens": len(ids),
        "generated_tokens": len(b["tokens"]),
        "plain_decode_tps": round(plain, 2),
        "speculative_decode_tps": round(spec, 2),
        "speedup": round(spec / plain, 3) if plain else None,
        "acceptance": round(st.acceptance, 3),
        "drafted": st.drafted,
        "accepted": st.accepted,
        "forwards_per_token": round(st.forwards / max(len(b["tokens"]) - 1, 1), 3),
        "identical": identical,
        "runs_tps": {"plain": [round(x, 2) for x in plain_tps],
                     "speculative": [round(x, 2) for x in spec_tps]},
        "output_head": model.detokenize(b["tokens"])[:160],
    }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["smollm2", "gemma3-270m"])
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--max-tokens", type=int, default=192)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict[str, Any] = {
        "bench": "speculative",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "threads": torch.get_num_threads(),
        "max_tokens": args.max_tokens,
        "runs": args.runs,
        "models": {},
    }
    ok = True
    for name in args.models:
        model = corral.load(name)
        run_once(model, model.tokenize("warm up"), 8, speculative=False)  # page the weights in
        per_task = {}
        for task in args.tasks:
            per_task[task] = r = bench_task(model, TASKS[task], args.max_tokens, args.runs)
            ok &= r["identical"]
            print(f"{name} {task}: {r['plain_decode_tps']} -> {r['speculative_decode_tps']} "
                  f"tok/s (x{r['speedup']}), acceptance {r['acceptance']}, "
                  f"identical={r['identical']}", file=sys.stderr)  # fmt: skip
        result["models"][name] = per_task
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
