"""Prompt-lookup (n-gram) speculative decoding: the same tokens, fewer forward passes.

When a model quotes its input (a corrected paragraph, an edited file, a summary that reuses
phrases), the next tokens are often already in the prompt or the answer so far. The drafter
finds the most recent earlier occurrence of the last few tokens and proposes what followed
them; one forward pass over the last accepted token plus the draft then scores every
position at once, and each row is drawn from exactly as the plain loop would draw from it.
The longest prefix of the draft that agrees is kept, plus the model's own next token, and
the cache is rewound past the rest.

Why the output cannot change: on the CPU a step of up to `DECODE_MAX_T` new tokens gives each
row the very bits a one-token step at that position gives (the C attention and the quantized
matmul kernels treat each row alone: drafts are verified under
`kv_cache.generated_tokens`, which sums their attention in the one-token order and keeps the
matmuls from following llama.cpp's batch-dependent kernels for repacked Q4_K weights and
K-quants from 8 rows), and rows are drawn in order with
the same history and the same sampler, so even a seeded random sampler consumes its
generator identically. A
rejected draft token is never drawn from, so grammar constraints see only real tokens.

On by default where those conditions hold (see `speculation_applies`); turn it off per
request with `GenerationRequest(speculative=False)` or for the process with
`CORRAL_SPECULATIVE=0`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from corral.engine.generate import (
    GenerationRequest,
    Timings,
    TokenEvent,
    draw,
    finish_reason,
    token_event,
)
from corral.engine.kv_cache import DECODE_MAX_T, KVCache, generated_tokens
from corral.engine.sampling import make_sampler
from corral.models.base import CausalLM

# Longest and shortest n-gram looked up; longer matches are tried first because they
# predict the continuation better, a 1-gram re-synchronizes right after an edit.
MAX_NGRAM = 3
MIN_NGRAM = 1
# Draft length bound: one forward verifies at most DECODE_MAX_T rows (the exact-row limit).
MAX_DRAFT = min(12, DECODE_MAX_T - 1)
# What one more row costs a verify step, as a fraction of a one-token step: the quantized
# kernels do real work per row (about 0.3-0.35 for SmolLM2 and gemma3-270m, one thread, on
# the development machine), so a draft is only worth scoring where it is likely to hold.
ROW_COST = 0.3
# Acceptance estimates: a prior worth PRIOR_TRIES draft tokens at PRIOR_ACCEPT, old evidence
# fading by DECAY per draft (copying and free writing alternate within one answer), and
# drifting back to the prior by RELAX per step without a draft, so a match length that was
# written off gets tried again later.
PRIOR_ACCEPT, PRIOR_TRIES, DECAY, RELAX = 0.67, 3.0, 0.8, 0.95


@dataclass
class DraftStats:
    """How the drafts fared: for benchmarks and tests (the tokens never depend on it)."""

    forwards: int = 0  # decode forward passes (each verifies one draft, or none)
    drafted: int = 0  # draft tokens proposed and scored
    accepted: int = 0  # draft tokens that were the model's own choice (and were used)

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


class DraftLength:
    """How many of a draft's tokens to verify: the k that maximizes expected tokens per unit
    of forward cost, (1 + a + a^2 + ... + a^k) / (1 + row_cost * k), where a is the running
    acceptance rate of drafts from matches of that n-gram length; 0 when no k beats a plain
    one-token step. Only the speed depends on it, never the tokens."""

    def __init__(self, row_cost: float = ROW_COST) -> None:
        self.row_cost = row_cost
        self._hits: dict[int, float] = {}
        self._tries: dict[int, float] = {}

    def rate(self, n: int) -> float:
        """Estimated chance that a draft token from an n-gram match is accepted, given that
        the ones before it were."""
        tries = self._tries.get(n, PRIOR_TRIES)
        return self._hits.get(n, PRIOR_ACCEPT * PRIOR_TRIES) / tries

    def choose(self, n: int, available: int) -> int:
        a, gain, best, best_k, p = self.rate(n), 1.0, 1.0, 0, 1.0
        for k in range(1, available + 1):
            p *= a
            gain += p
            value = gain / (1.0 + self.row_cost * k)
            if value > best:
                best, best_k = value, k
        if best_k == 0:  # no draft: let the estimate drift back towards the prior
            prior_hits = PRIOR_ACCEPT * PRIOR_TRIES
            self._hits[n] = RELAX * self._hits.get(n, prior_hits) + (1 - RELAX) * prior_hits
            self._tries[n] = RELAX * self._tries.get(n, PRIOR_TRIES) + (1 - RELAX) * PRIOR_TRIES
        return best_k

    def update(self, n: int, drafted: int, accepted: int) -> None:
        """A draft of `drafted` tokens from an n-gram match had its first `accepted` kept:
        accepted successes, and one failure unless all held."""
        hits = self._hits.get(n, PRIOR_ACCEPT * PRIOR_TRIES)
        tries = self._tries.get(n, PRIOR_TRIES)
        self._hits[n] = DECAY * hits + accepted
        self._tries[n] = DECAY * tries + accepted + (accepted < drafted)


class NgramDrafter:
    """Proposes continuations of a token sequence from its own earlier text.

    Keeps, for each n-gram length, where each n-gram last ended (with at least one token
    after it), so a lookup is a dict access rather than a scan of the whole history.
    """

    def __init__(
        self, tokens: Sequence[int] = (), max_ngram: int = MAX_NGRAM, min_ngram: int = MIN_NGRAM
    ) -> None:
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError("need 1 <= min_ngram <= max_ngram")
        self.tokens: list[int] = []
        self.match_len = 0  # n-gram length behind the last proposal (0: none)
        self.min_ngram, self.max_ngram = min_ngram, max_ngram
        self._last_end: dict[int, dict[tuple[int, ...], int]] = {
            n: {} for n in range(min_ngram, max_ngram + 1)
        }
        self.extend(tokens)

    def extend(self, tokens: Sequence[int]) -> None:
        """Append tokens to the text that drafts are drawn from."""
        start = len(self.tokens)
        self.tokens.extend(tokens)
        # index n-grams ending at p once token p + 1 exists: the suffix itself (ending at the
        # last token) must not match itself, and a match always has a continuation
        for p in range(max(start - 1, 0), len(self.tokens) - 1):
            for n, index in self._last_end.items():
                if p + 1 >= n:
                    index[tuple(self.tokens[p + 1 - n : p + 1])] = p

    def propose(self, k: int) -> list[int]:
        """Up to k tokens that followed the most recent earlier occurrence of the longest
        matching suffix (MAX_NGRAM tokens down to MIN_NGRAM); [] when nothing matches."""
        self.match_len = 0
        if k <= 0:
            return []
        toks = self.tokens
        for n in range(self.max_ngram, self.min_ngram - 1, -1):
            if len(toks) < n + 1:
                continue
            p = self._last_end[n].get(tuple(toks[len(toks) - n :]))
            if p is not None:
                self.match_len = n
                return toks[p + 1 : p + 1 + k]
        return []


# Architectures whose rows of a few-token step are proven equal to one-token steps (with
# kernel-backed weights) by tests/engine/test_few_token_steps.py: llama (SmolLM2, mistral
# and the other llama aliases) and gemma3. Add one here together with its test.
EXACT_ROW_MODULES = frozenset({"corral.models.llama", "corral.models.gemma3"})


def speculation_applies(model: CausalLM, req: GenerationRequest, cache: object) -> bool:
    """Whether `req` may decode speculatively on `cache` without changing a single token:
    a one-row float16 KVCache on the CPU, the C attention, an architecture in
    EXACT_ROW_MODULES whose every matrix goes through the quantized kernels (the routes
    whose rows are exact), and not turned off by the request or $CORRAL_SPECULATIVE=0."""
    if req.speculative is False or os.environ.get("CORRAL_SPECULATIVE", "1") == "0":
        return False
    if not isinstance(cache, KVCache) or cache.batch != 1 or cache.device.type != "cpu":
        return False
    if cache.k[0].dtype != torch.float16 or type(model).__module__ not in EXACT_ROW_MODULES:
        return False
    from corral.kernels import attention

    return attention.available() and _kernel_weights_only(model)


def _kernel_weights_only(model: CausalLM) -> bool:
    """Every matrix the forward pass multiplies by is a BlockWeight with a C kernel. The
    float GEMM fallbacks (F32/F16 weights, LoRA deltas, CORRAL_KERNELS=0) make no promise
    that row t of a T-row product equals a one-row product (and on this machine it does
    not). The token embedding only serves row lookups unless the output shares it."""
    from corral.models.weights import BlockWeight

    found: dict[int, object] = {}

    def walk(obj: object, depth: int) -> None:
        if depth > 4:
            return
        items = obj if isinstance(obj, (list, tuple)) else getattr(obj, "__dict__", {}).values()
        for x in items:
            if isinstance(x, torch.Tensor):
                continue  # norms and biases: elementwise, row-local
            if callable(x) and hasattr(x, "rows") and hasattr(x, "shape"):
                found[id(x)] = x  # a Linear
            elif isinstance(x, (list, tuple)) or hasattr(x, "__dataclass_fields__"):
                walk(x, depth + 1)

    walk([v for k, v in vars(model).items() if k != "tok_embd"], 0)
    weights = list(found.values())
    return bool(weights) and all(type(w) is BlockWeight and w.kernel is not None for w in weights)


def speculative_decode(
    model: CausalLM,
    req: GenerationRequest,
    cache: KVCache,
    prompt: list[int],
    logits: torch.Tensor,
    t: Timings,
    stats: DraftStats | None = None,
    drafter: NgramDrafter | None = None,
    row_cost: float = ROW_COST,
) -> Iterator[TokenEvent]:
    """`decode_loop` with drafts verified in one forward each: the same events, in order.

    `cache` holds exactly `prompt`; `logits` [V] are the prompt's last position's. Whatever
    way the loop ends (a finish, an error, the consumer closing it), the cache is left
    holding the prompt and the tokens fed back, as the plain loop leaves it. `stats`, when
    given, counts forwards and draft tokens; `drafter` (default: an NgramDrafter) is
    extended with the prompt here, then with each token drawn; `row_cost` tunes how long
    a draft is worth verifying (see DraftLength; 0 verifies every proposal in full).
    """
    st = stats if stats is not None else DraftStats()
    if req.max_tokens <= 0:
        return  # as decode_loop: nothing drawn, nothing fed
    n_ctx = cache.max_len
    sampler = make_sampler(req.sampling)
    history = list(prompt)
    drafter = drafter if drafter is not None else NgramDrafter()
    drafter.extend(prompt)
    lengths = DraftLength(row_cost)
    emitted = 0  # tokens yielded; the cache then holds len(prompt) + emitted - 1 positions
    t1 = time.perf_counter()
    rows: torch.Tensor = logits[None]  # logits to draw the next tokens from, one row each
    draft: list[int] = []
    try:
        while True:
            for i in range(len(rows)):
                token, logprob = draw(req, sampler, rows[i], history)
                drafter.extend((token,))
                finish = finish_reason(req, token, emitted, len(prompt) + emitted, n_ctx)
                emitted += 1
                t.decode_tokens = emitted
                if finish is not None:
                    t.decode_s = time.perf_counter() - t1
                yield token_event(req, rows[i], token, logprob, finish)
                if finish is not None:
                    return
                if i < len(draft) and token == draft[i]:
                    st.accepted += 1
                    continue  # the draft token at this position is the model's own choice
                break
            # drafts whose bits are kept are in the cache; drop the rejected rest
            cache.truncate(len(prompt) + emitted - 1)
            if draft:  # row i drew the first token not drafted, or the one after a miss
                lengths.update(drafter.match_len, len(draft), i)
            # no use drafting past max_tokens or the context: one row per token still to come
            room = min(MAX_DRAFT, req.max_tokens - emitted - 1, n_ctx - cache.offset - 2)
            draft = drafter.propose(room)
            draft = draft[: lengths.choose(drafter.match_len, len(draft))] if draft else draft
            st.drafted += len(draft)
            step = torch.tensor([[token, *draft]], dtype=torch.long)
            # every row as its one-token step (attention order, and llama.cpp's kernels for
            # repacked weights and for K-quants from 8 rows, would give a T-row step other bits)
            with generated_tokens(cache):
                rows = model.forward(step, cache, last_only=not draft)[0].cpu()
            st.forwards += 1
            t.decode_s = time.perf_counter() - t1
    finally:
        cache.truncate(len(prompt) + max(emitted - 1, 0))
