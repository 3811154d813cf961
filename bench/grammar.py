#!/usr/bin/env python3
"""Cost of constrained decoding: per-token decode time with and without a JSON-schema
constraint, on the same model, prompt and sampling, in one process.

    python bench/grammar.py [MODEL] [--tokens N] [--runs R] [--threads T] [--out FILE]

MODEL is a store name or .gguf path (default: SmolLM2-135M, found as the tests find it).
Each run decodes N tokens unconstrained (ignore_eos) and N tokens under a schema that
cannot end sooner (an array of at least N/4 small objects), alternating, and reports the
median ms/token of each, their ratio, and the constraint's own time per token (mask +
accept, timed inside the engine's calls). The issue's bar: at most 10% over unconstrained.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ITEM = {
    "type": "object",
    "properties": {"id": {"type": "integer", "minimum": 0, "maximum": 999},
                   "tag": {"enum": ["red", "green", "blue"]}},
    "required": ["id", "tag"],
}  # fmt: skip


class Timed:
    """A constraint wrapper that adds up the time spent in the constraint itself."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.steps = 0

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        out = self.inner.mask(logits)
        self.seconds += time.perf_counter() - t0
        return out  # type: ignore[no-any-return]

    def accept(self, token: int) -> None:
        t0 = time.perf_counter()
        self.inner.accept(token)
        self.seconds += time.perf_counter() - t0
        self.steps += 1

    def is_done(self) -> bool:
        return self.inner.is_done()  # type: ignore[no-any-return]


def _model_path(name: str | None) -> Path:
    if name:
        return Path(name)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import real_model_path

    return real_model_path("smollm2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import corral
    from corral.engine.sampling import SamplingParams
    from corral.grammar import GrammarSpec, make_constraint

    model = corral.load(_model_path(args.model), threads=args.threads)
    ids = model.chat_prompt_ids([{"role": "user", "content": "List some items as JSON."}])
    schema = {"type": "array", "items": ITEM, "minItems": args.tokens // 4}
    spec = GrammarSpec.json_schema(schema)
    params = SamplingParams(temperature=0.7, seed=0)
    make_constraint(model.tokenizer, spec)  # the tokenizer info is built once per model
    free, constrained, own = [], [], []
    for _ in range(args.runs):
        r = model.generate_with(ids, args.tokens, params, ignore_eos=True)
        free.append(r.timings.decode_s / max(1, r.timings.decode_tokens) * 1e3)
        c = Timed(make_constraint(model.tokenizer, spec))
        r = model.generate_with(ids, args.tokens, params, ignore_eos=True, constraint=c)
        constrained.append(r.timings.decode_s / max(1, r.timings.decode_tokens) * 1e3)
        own.append(c.seconds / max(1, c.steps) * 1e3)
    out = {
        "model": model.info.name,
        "vocab": model.tokenizer.vocab_size,
        "tokens": args.tokens,
        "runs": args.runs,
        "free_ms_per_token": round(statistics.median(free), 3),
        "constrained_ms_per_token": round(statistics.median(constrained), 3),
        "constraint_ms_per_token": round(statistics.median(own), 3),
        "overhead_ratio": round(statistics.median(constrained) / statistics.median(free), 3),
        "constraint_share": round(statistics.median(own) / statistics.median(free), 3),
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
