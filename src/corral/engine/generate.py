"""Token ids in, `TokenEvent`s out: prefill, then one token per step until a stop.

The engine never sees text; stop strings and detokenization live a layer up (corral.model).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum

import torch

from corral.engine.constraints import LogitsConstraint
from corral.engine.kv_cache import KVCache
from corral.engine.sampling import Sampler, SamplingParams, make_sampler
from corral.errors import ContextOverflowError
from corral.models.base import CausalLM

# Prompt tokens run through the model per forward call: bounds activation memory on long
# prompts while keeping the matmuls large enough to be efficient.
PREFILL_CHUNK = 512


class FinishReason(Enum):
    STOP = "stop"  # an end-of-generation token or a stop string
    LENGTH = "length"  # max_tokens or the context filled up
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class TokenEvent:
    """One generated token; `finish_reason` is set on the last event only."""

    token_id: int
    logprob: float
    finish_reason: FinishReason | None = None
    eog: bool = False  # the token ended generation and is not part of the answer
    top_logprobs: tuple[tuple[int, float], ...] | None = None  # (id, logprob), best first


@dataclass
class Timings:
    prompt_tokens: int = 0
    prompt_s: float = 0.0
    decode_tokens: int = 0
    decode_s: float = 0.0
    cached_tokens: int = 0

    @property
    def prompt_tps(self) -> float:
        return self.prompt_tokens / self.prompt_s if self.prompt_s > 0 else 0.0

    @property
    def decode_tps(self) -> float:
        return self.decode_tokens / self.decode_s if self.decode_s > 0 else 0.0


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    max_tokens: int = 256
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop_ids: frozenset[int] = frozenset()
    ignore_eos: bool = False
    truncate: bool = False  # drop the oldest prompt tokens instead of failing on overflow
    top_logprobs: int = 0  # also report this many most likely tokens at each step
    constraint: LogitsConstraint | None = None  # grammar mask, owned by this request
    # prompt-lookup drafts verified in one forward (same tokens; see engine.speculative):
    # None = wherever that is exact, False = never
    speculative: bool | None = None


def draw(
    req: GenerationRequest, sampler: Sampler, logits: torch.Tensor, history: list[int]
) -> tuple[int, float]:
    """Choose the next token (within the request's constraint) and add it to `history`."""
    if req.constraint is not None:
        token, logprob = sampler(req.constraint.mask(logits), history)
        req.constraint.accept(token)
    else:
        token, logprob = sampler(logits, history)
    history.append(token)
    return token, logprob


def finish_reason(
    req: GenerationRequest, token: int, step: int, filled: int, n_ctx: int
) -> FinishReason | None:
    """Why generation ends after `token`, the step-th (0-based) new token, with `filled`
    positions in the cache; None to go on."""
    if token in req.stop_ids and not req.ignore_eos:
        return FinishReason.STOP
    if req.constraint is not None and req.constraint.is_done():
        return FinishReason.STOP
    if step >= req.max_tokens - 1 or filled + 1 >= n_ctx:
        return FinishReason.LENGTH
    return None


def token_event(
    req: GenerationRequest, logits: torch.Tensor, token: int, logprob: float,
    finish: FinishReason | None,
) -> TokenEvent:  # fmt: skip
    """The event for a chosen token, with alternatives when the request asks for them."""
    top = None
    if req.top_logprobs > 0:
        lp = logits.log_softmax(-1)
        vals, ids = torch.topk(lp, min(req.top_logprobs, lp.shape[-1]))
        top = tuple(zip(ids.tolist(), vals.tolist(), strict=True))
    eog = token in req.stop_ids and finish is FinishReason.STOP
    return TokenEvent(token, logprob, finish, eog=eog, top_logprobs=top)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens a and b share (what a cache holding a can reuse for b)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def fit_prompt(ids: Sequence[int], n_ctx: int, truncate: bool, keep: int = 0) -> list[int]:
    """The prompt, checked against the context; with truncate, keep the first `keep` tokens
    and the most recent ones so that at least one token can still be generated."""
    ids = list(ids)
    if len(ids) < n_ctx:
        return ids
    if not truncate:
        raise ContextOverflowError(
            f"prompt has {len(ids)} tokens but the context holds {n_ctx}; "
            "shorten it, raise the context size, or ask for truncation"
        )
    room = n_ctx - 1 - keep
    return ids[:keep] + ids[len(ids) - room :]


def prefill(model: CausalLM, cache: KVCache, ids: Sequence[int]) -> torch.Tensor:
    """Run prompt ids through the model in chunks; returns the last position's logits [V]."""
    logits = None
    for i in range(0, len(ids), PREFILL_CHUNK):
        chunk = torch.tensor([ids[i : i + PREFILL_CHUNK]], dtype=torch.long)
        logits = model.forward(chunk, cache, last_only=True)
    assert logits is not None
    return logits[0, -1].cpu()  # sampling runs on the host


def generate_tokens(
    model: CausalLM,
    req: GenerationRequest,
    cache: KVCache,
    timings: Timings | None = None,
    cached_prefix: int = 0,
) -> Iterator[TokenEvent]:
    """Yield generated tokens for `req`. `cache` holds `cached_prefix` tokens of the prompt
    already (prefix reuse); the rest is prefilled here."""
    t = timings if timings is not None else Timings()
    n_ctx = cache.max_len
    prompt = fit_prompt(req.prompt_ids, n_ctx, req.truncate)
    if not prompt:
        raise ValueError("empty prompt: give at least one token")
    cached_prefix = min(cached_prefix, len(prompt) - 1)
    cache.truncate(cached_prefix)
    cached_prefix = min(cached_prefix, cache.offset)  # a recurrent state keeps all or nothing
    t0 = time.perf_counter()
    logits = prefill(model, cache, prompt[cached_prefix:])
    t.prompt_tokens, t.cached_tokens = len(prompt) - cached_prefix, cached_prefix
    t.prompt_s = time.perf_counter() - t0

    # imported here: engine.speculative builds on this module
    from corral.engine.speculative import speculation_applies, speculative_decode

    if speculation_applies(model, req, cache):
        yield from speculative_decode(model, req, cache, prompt, logits, t)
        return

    def step(token: int) -> torch.Tensor:
        ids = torch.tensor([[token]], dtype=torch.long)
        return model.forward(ids, cache, last_only=True)[0, -1].cpu()

    yield from decode_loop(req, prompt, logits, step, lambda: cache.offset, n_ctx, t)


def decode_loop(
    req: GenerationRequest,
    prompt: list[int],
    logits: torch.Tensor,
    step: Callable[[int], torch.Tensor],
    filled: Callable[[], int],
    n_ctx: int,
    t: Timings,
) -> Iterator[TokenEvent]:
    """Draw tokens from `logits` [V], feeding each back through `step` (token -> next
    logits), until a finish reason; `filled` says how many positions the cache holds."""
    sampler = make_sampler(req.sampling)
    history = list(prompt)
    t1 = time.perf_counter()
    for n in range(req.max_tokens):
        token, logprob = draw(req, sampler, logits, history)
        t.decode_tokens = n + 1
        finish = finish_reason(req, token, n, filled(), n_ctx)
        if finish is not None:
            t.decode_s = time.perf_counter() - t1
        yield token_event(req, logits, token, logprob, finish)
        if finish is not None:
            return
        logits = step(token)
        t.decode_s = time.perf_counter() - t1
