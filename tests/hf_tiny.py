"""Tiny Hugging Face checkpoints for converter tests, and the comparison against transformers.

`save_tiny(folder, config)` builds a random transformers model from `config` and saves it
with a tiny byte-level BPE tokenizer (trained here, ~300 tokens). `compare(folder, gguf)`
checks corral's logits on the converted file against transformers' (float32, exact mode) and
greedy decoding over 16 steps, with and without the KV cache.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

VOCAB = 300
_CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "def main():\n    return 42\n",
    "Hello, world! 1234 5678",
    "a tiny model for tests speaks in tokens",
] * 20


def save_tokenizer(folder: Path, vocab_size: int = VOCAB) -> None:
    """A byte-level BPE tokenizer.json (GPT-2's pre-tokenizer) with one special token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 4,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"})
    )


def save_tiny(
    folder: Path, config: Any, seed: int = 0, dtype: torch.dtype = torch.float32, safe: bool = True
) -> Any:
    """Save a random model for `config` (a transformers config object) plus a tokenizer."""
    from transformers import AutoModelForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    with torch.no_grad():  # random norms and biases too, so that their conversion matters
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.randn_like(p) * 0.1 + (1.0 if "norm" in name else 0.0))
    model = model.to(dtype).eval()
    model.save_pretrained(folder, safe_serialization=safe)
    save_tokenizer(folder)
    return model


def _f32_cache(m: Any, n: int) -> Any:
    """A float32 KV cache (the default float16 one rounds as llama.cpp does)."""
    cache = m.make_cache(n)
    cache.k = [b.float() for b in cache.k]
    cache.v = [b.float() for b in cache.v]
    return cache


def compare(hf_model: Any, gguf_path: Path, atol: float = 1e-4, steps: int = 16) -> float:
    """Assert corral matches transformers on `gguf_path`; returns the max logit difference."""
    from corral.gguf import open_gguf
    from corral.models.registry import load_model

    m = load_model(open_gguf(gguf_path))
    ids = torch.randint(3, VOCAB - 10, (1, 10), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = hf_model(ids, use_cache=False).logits.float()
    full = m.forward(ids, _f32_cache(m, 64))
    diff = float((full - ref).abs().max())
    assert diff <= atol, f"full pass: max |corral - transformers| = {diff:.3g}"

    cache = _f32_cache(m, 64)
    steps_out = [m.forward(ids[:, :4], cache)]
    steps_out += [m.forward(ids[:, i : i + 1], cache) for i in range(4, ids.shape[1])]
    inc = torch.cat(steps_out, dim=1)
    diff_inc = float((inc - ref).abs().max())
    assert diff_inc <= atol, f"cached pass: max |corral - transformers| = {diff_inc:.3g}"

    # greedy: transformers with its cache, corral with and without its cache
    with torch.no_grad():
        want = hf_model.generate(
            ids, max_new_tokens=steps, do_sample=False, min_new_tokens=steps,
            pad_token_id=0,
        )[0, ids.shape[1] :].tolist()  # fmt: skip
    cache = _f32_cache(m, 64)
    logits = m.forward(ids, cache, last_only=True)
    got_cached = []
    for _ in range(steps):
        nxt = int(logits[0, -1].argmax())
        got_cached.append(nxt)
        logits = m.forward(torch.tensor([[nxt]]), cache)
    seq = ids
    got_full = []
    for _ in range(steps):
        nxt = int(m.forward(seq, _f32_cache(m, 64), last_only=True)[0, -1].argmax())
        got_full.append(nxt)
        seq = torch.cat([seq, torch.tensor([[nxt]])], dim=1)
    assert got_cached == want, f"greedy with cache: {got_cached} != transformers {want}"
    assert got_full == want, f"greedy without cache: {got_full} != transformers {want}"
    return max(diff, diff_inc)
