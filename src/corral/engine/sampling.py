"""Sampling: `SamplingParams` plus pure logit processors composed by `make_sampler`.

The chain follows llama.cpp's default order: penalties -> top_k -> typical_p -> top_p ->
min_p -> temperature -> draw. Temperature <= 0 means greedy (argmax of the raw logits).
Each processor maps logits [V] to logits [V], masking with -inf rather than shrinking the
vocabulary, so composition stays simple.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

Processor = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SamplingParams:
    """How to choose each next token (defaults as llama.cpp's)."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def with_(self, **changes: object) -> SamplingParams:
        return replace(self, **changes)  # type: ignore[arg-type]


def apply_penalties(
    logits: torch.Tensor, history: Sequence[int], p: SamplingParams
) -> torch.Tensor:
    """Repeat (llama.cpp: divide positive logits, multiply negative ones), presence and
    frequency penalties over the last `repeat_last_n` tokens."""
    if not history or p.repeat_last_n == 0:
        return logits
    if p.repeat_penalty == 1.0 and p.presence_penalty == 0.0 and p.frequency_penalty == 0.0:
        return logits
    window = history[-p.repeat_last_n :] if p.repeat_last_n > 0 else history
    ids, counts = torch.tensor(window, dtype=torch.long).unique(return_counts=True)
    ids_ok = ids < logits.shape[-1]
    ids, counts = ids[ids_ok], counts[ids_ok]
    out = logits.clone()
    sel = out[ids]
    if p.repeat_penalty != 1.0:
        sel = torch.where(sel > 0, sel / p.repeat_penalty, sel * p.repeat_penalty)
    sel = sel - counts.to(sel.dtype) * p.frequency_penalty - p.presence_penalty
    out[ids] = sel
    return out


def top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k).values[-1]
    return logits.masked_fill(logits < kth, -math.inf)


def top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches p."""
    if p >= 1.0:
        return logits
    sorted_logits, idx = torch.sort(logits, descending=True)
    cum = sorted_logits.softmax(-1).cumsum(-1)
    # drop a token when the mass before it already reaches p (the first token always stays)
    drop_sorted = (cum - sorted_logits.softmax(-1)) >= p
    drop = torch.zeros_like(drop_sorted).scatter(0, idx, drop_sorted)
    return logits.masked_fill(drop, -math.inf)


def min_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Drop tokens less likely than p times the most likely one."""
    if p <= 0.0:
        return logits
    threshold = logits.max() + math.log(p)
    return logits.masked_fill(logits < threshold, -math.inf)


def typical_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Locally typical sampling: keep tokens whose surprise is closest to the entropy."""
    if p >= 1.0:
        return logits
    logp = logits.log_softmax(-1)
    probs = logp.exp()
    ent = -(torch.where(probs > 0, probs * logp, torch.zeros_like(probs))).sum()
    shifted = (-logp - ent).abs()
    order = torch.argsort(shifted)
    cum = probs[order].cumsum(-1)
    keep_n = int((cum < p).sum().item()) + 1
    drop = torch.ones_like(logits, dtype=torch.bool)
    drop[order[:keep_n]] = False
    return logits.masked_fill(drop, -math.inf)


class Sampler:
    """Chooses tokens for one sequence; owns its random generator (same seed, same tokens)."""

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self.generator = torch.Generator()
        if params.seed is not None:
            self.generator.manual_seed(params.seed)
        else:
            self.generator.seed()
        self.filters: list[Processor] = []
        if not params.greedy:
            self.filters = [
                lambda x: top_k(x, params.top_k),
                lambda x: typical_p(x, params.typical_p),
                lambda x: top_p(x, params.top_p),
                lambda x: min_p(x, params.min_p),
            ]

    def __call__(self, logits: torch.Tensor, history: Sequence[int]) -> tuple[int, float]:
        """logits [V] float32 -> (token id, its log-probability under the model)."""
        logits = apply_penalties(logits, history, self.params)
        if self.params.greedy:
            token = int(torch.argmax(logits))
        else:
            x = logits
            for f in self.filters:
                x = f(x)
            probs = (x / self.params.temperature).softmax(-1)
            token = int(torch.multinomial(probs, 1, generator=self.generator))
        logprob = float(logits.log_softmax(-1)[token])
        return token, logprob


def make_sampler(params: SamplingParams) -> Sampler:
    """The sampler for one sequence under `params`."""
    return Sampler(params)
