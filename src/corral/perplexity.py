"""Perplexity of a model on a text, computed as llama.cpp's `llama-perplexity` does.

The text is tokenized once (with BOS when the model adds one) and cut into
len(tokens) // n_ctx chunks of n_ctx tokens; each chunk is evaluated from an empty cache,
its first token replaced by BOS, and only the second half is scored (positions n_ctx/2 ..
n_ctx-2 predicting the next token), so every scored token sees at least n_ctx/2 tokens of
context. PPL = exp(mean NLL); its error is the standard error of the mean NLL carried
through exp (ppl * sqrt(var(nll) / (count - 1))), as llama.cpp prints it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from corral.errors import CorralError


class LogitsModel(Protocol):
    """What perplexity needs of a model (corral.Model has it)."""

    def logits(self, ids: Sequence[int]) -> np.ndarray: ...


@dataclass
class PerplexityResult:
    ppl: float
    error: float  # one standard error of the ppl estimate
    n_ctx: int
    n_chunks: int
    n_tokens: int  # tokens in the whole text
    n_scored: int
    running: list[float] = field(default_factory=list)  # ppl after each chunk
    seconds: float = 0.0


def token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log-likelihood (float64) of targets [n] under logits [n, vocab]."""
    z = logits.astype(np.float64)
    top = z.max(axis=1)
    lse = top + np.log(np.exp(z - top[:, None]).sum(axis=1))
    return lse - z[np.arange(len(targets)), targets]


def perplexity_of_ids(
    model: LogitsModel,
    tokens: Sequence[int],
    n_ctx: int,
    bos_id: int | None = None,
    max_chunks: int | None = None,
    on_chunk: Callable[[int, int, float], None] | None = None,
) -> PerplexityResult:
    """Perplexity over `tokens` in chunks of n_ctx (see the module docstring).

    bos_id: put at the start of every chunk (None: chunks start with the text's own token).
    on_chunk(i, n_chunks, running_ppl) is called after each chunk.
    """
    t0 = time.perf_counter()
    if n_ctx < 4:
        raise CorralError(f"context {n_ctx} is too small for perplexity (at least 4)")
    if len(tokens) < 2 * n_ctx:
        raise CorralError(
            f"the text has {len(tokens)} tokens; perplexity with a context of {n_ctx} needs "
            f"at least {2 * n_ctx} (use a longer text or a smaller --ctx)"
        )
    n_chunks = len(tokens) // n_ctx
    if max_chunks is not None:
        n_chunks = max(1, min(n_chunks, max_chunks))
    first = n_ctx // 2
    nll_sum = nll2_sum = 0.0
    count = 0
    running: list[float] = []
    for i in range(n_chunks):
        chunk = [int(t) for t in tokens[i * n_ctx : (i + 1) * n_ctx]]
        if bos_id is not None:
            chunk[0] = bos_id
        logits = model.logits(chunk)  # [n_ctx, vocab]
        targets = np.asarray(chunk[first + 1 :], dtype=np.int64)
        nll = token_nll(logits[first : n_ctx - 1], targets)
        nll_sum += float(nll.sum())
        nll2_sum += float((nll * nll).sum())
        count += len(nll)
        running.append(math.exp(nll_sum / count))
        if on_chunk is not None:
            on_chunk(i, n_chunks, running[-1])
    mean = nll_sum / count
    var = nll2_sum / count - mean * mean
    ppl = math.exp(mean)
    err = ppl * math.sqrt(var / (count - 1)) if var > 0 and count > 1 else 0.0
    return PerplexityResult(
        ppl, err, n_ctx, n_chunks, len(tokens), count, running, time.perf_counter() - t0
    )


def perplexity(
    model: LogitsModel,
    text: str,
    n_ctx: int,
    max_chunks: int | None = None,
    on_chunk: Callable[[int, int, float], None] | None = None,
) -> PerplexityResult:
    """Perplexity of a corral.Model on `text` with chunks of n_ctx tokens."""
    tok = model.tokenizer  # type: ignore[attr-defined]
    tokens = tok.encode(text, add_special=True)
    bos = tok.bos_id if tok.add_bos else None
    return perplexity_of_ids(model, tokens, n_ctx, bos, max_chunks, on_chunk)
