#!/usr/bin/env python3
"""Which constrained-decoding library: xgrammar against llguidance on corral's tokenizers.

    python bench/grammar_libs.py [MODEL.gguf ...] [--steps N] [--out FILE]

For each GGUF (default: SmolLM2-135M and Gemma3-270M from CORRAL_TEST_MODELS or the store)
and each library that is installed, measures, in one process:

- import: seconds to import the library (a fresh child process, so nothing is cached);
- tokenizer: building the library's tokenizer info from our vocabulary (token bytes from
  `tokenizer.token_to_piece(i, special=True)`);
- compile: compiling a JSON schema (nested object, enum, bounded array, number range,
  optional field, anyOf), median of 3 with the library's cache off or a fresh compiler;
- mask: per generated token, computing the next-token bitmask and accepting the token, along
  a valid document tokenized by our tokenizer (median microseconds);
- apply: applying that bitmask to a float32 [V] logits tensor (the library's own helper and
  corral's numpy unpack), median microseconds.

Prints JSON. Neither library is a dependency of the bench: a missing one is reported as such.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "role": {"enum": ["admin", "user", "guest"]},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 4},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
            "required": ["city"],
        },
        "score": {"anyOf": [{"type": "number", "minimum": 0, "maximum": 1}, {"type": "null"}]},
    },
    "required": ["name", "age", "role", "tags", "address"],
}
DOC = {
    "name": "Ada Lovelace",
    "age": 36,
    "role": "admin",
    "tags": ["math", "engines", "poetry"],
    "address": {"city": "London", "zip": "W1"},
    "score": 0.75,
}


def _import_seconds(module: str) -> float | None:
    code = f"import time; t=time.perf_counter(); import {module}; print(time.perf_counter()-t)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return float(r.stdout.strip()) if r.returncode == 0 else None


def _median_us(xs: list[float]) -> float:
    return round(statistics.median(xs) * 1e6, 1)


def _our_tokenizer(path: Path) -> Any:
    from corral.gguf.reader import open_gguf
    from corral.tokenizer import load_tokenizer

    g = open_gguf(path)
    try:
        return load_tokenizer(g.metadata)
    finally:
        g.close()


def _apply_numpy(logits: Any, bitmask: Any) -> Any:
    """corral's way (corral.grammar.mask): each mask byte picks 8 additive biases."""
    from corral.grammar.mask import apply_bitmask

    return apply_bitmask(logits, bitmask)


def bench_llguidance(tok: Any, ids: list[int], steps: int) -> dict[str, Any]:
    import llguidance as llg
    import llguidance.torch as llt
    import torch

    from corral.grammar.vocab import llg_tokenizer_wrapper

    v = tok.vocab_size
    t0 = time.perf_counter()
    lltok = llg.LLTokenizer(llg_tokenizer_wrapper(tok), n_vocab=v, slices=None)
    t_tok = time.perf_counter() - t0
    grammar = llg.LLMatcher.grammar_from_json_schema(
        SCHEMA, defaults={"whitespace_flexible": False}
    )
    compiles = []
    for _ in range(3):
        t0 = time.perf_counter()
        m = llg.LLMatcher(lltok, grammar, log_level=0)
        compiles.append(time.perf_counter() - t0)
        assert not m.is_error(), m.get_error()
    mask = llt.allocate_token_bitmask(1, v)
    per, applies = [], []
    for t in ids[:steps]:
        t0 = time.perf_counter()
        llt.fill_next_token_bitmask(m, mask, 0)
        ok = m.consume_token(t)
        per.append(time.perf_counter() - t0)
        assert ok, m.get_error()
        logits = torch.randn(v)
        t0 = time.perf_counter()
        _apply_numpy(logits, mask[0])
        applies.append(time.perf_counter() - t0)
    return {
        "tokenizer_s": round(t_tok, 3),
        "compile_ms": round(statistics.median(compiles) * 1e3, 2),
        "mask_us_per_token": _median_us(per),
        "mask_us_max": _median_us([max(per)]),
        "apply_us_numpy": _median_us(applies),
        "accepting_at_end": m.is_accepting(),
    }


def bench_xgrammar(tok: Any, ids: list[int], steps: int) -> dict[str, Any]:
    import torch
    import xgrammar as xgr

    v = tok.vocab_size
    # control tokens print nothing: xgrammar then treats them as special (never in a grammar)
    t0 = time.perf_counter()
    pieces = [tok.token_to_piece(i) for i in range(v)]
    info = xgr.TokenizerInfo(
        pieces, xgr.VocabType.RAW, vocab_size=v, stop_token_ids=sorted(tok.eog_ids)
    )
    t_tok = time.perf_counter() - t0
    compiles = []
    for _ in range(3):
        comp = xgr.GrammarCompiler(info, max_threads=2, cache_enabled=False)
        t0 = time.perf_counter()
        g = comp.compile_json_schema(
            json.dumps(SCHEMA), any_whitespace=False, separators=(",", ":")
        )
        compiles.append(time.perf_counter() - t0)
    m = xgr.GrammarMatcher(g)
    mask = xgr.allocate_token_bitmask(1, v)
    per, applies, applies_np = [], [], []
    for t in ids[:steps]:
        t0 = time.perf_counter()
        m.fill_next_token_bitmask(mask)
        ok = m.accept_token(t)
        per.append(time.perf_counter() - t0)
        assert ok
        logits = torch.randn(1, v)
        t0 = time.perf_counter()
        xgr.apply_token_bitmask_inplace(logits, mask)
        applies.append(time.perf_counter() - t0)
        logits = torch.randn(v)
        t0 = time.perf_counter()
        _apply_numpy(logits, mask[0])
        applies_np.append(time.perf_counter() - t0)
    return {
        "tokenizer_s": round(t_tok, 3),
        "compile_ms": round(statistics.median(compiles) * 1e3, 2),
        "mask_us_per_token": _median_us(per),
        "mask_us_max": _median_us([max(per)]),
        "apply_us_library": _median_us(applies),
        "apply_us_numpy": _median_us(applies_np),
    }


def _default_models() -> list[Path]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import real_model_path  # the tests' lookup: CORRAL_TEST_MODELS or store

    return [real_model_path("smollm2"), real_model_path("gemma3-270m")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", type=Path)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    libs = {"llguidance": bench_llguidance, "xgrammar": bench_xgrammar}
    out: dict[str, Any] = {"schema": SCHEMA, "import_s": {}, "models": {}}
    for name in libs:
        s = _import_seconds(name)
        out["import_s"][name] = None if s is None else round(s, 3)
    for path in args.models or _default_models():
        tok = _our_tokenizer(path)
        text = json.dumps(DOC, separators=(",", ":"))
        ids = tok.encode(text, add_special=False)
        # token bytes are ours to make (and cached in the tokenizer): timed apart, so the
        # libraries' tokenizer figures are their own work only
        t0 = time.perf_counter()
        for i in range(tok.vocab_size):
            tok.token_to_piece(i, special=True)
            tok.token_to_piece(i)
        pieces_s = round(time.perf_counter() - t0, 3)
        row: dict[str, Any] = {
            "vocab": tok.vocab_size,
            "doc_tokens": len(ids),
            "pieces_s": pieces_s,
        }
        for name, fn in libs.items():
            if out["import_s"][name] is None:
                row[name] = "not installed"
                continue
            row[name] = fn(tok, ids, args.steps)
        out["models"][path.name] = row
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
