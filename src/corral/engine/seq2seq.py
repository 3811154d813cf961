"""Generation for encoder-decoder models (t5): the prompt goes through the encoder once, then
the decoder generates from its start token, one token per step, against that encoding.

Prompt ids are the encoder's input; the generated ids are the decoder's. The decoder's cache
holds its own tokens (`offset`) plus the fixed cross-attention keys/values of the encoding, so
there is no prompt-prefix reuse: each request encodes its prompt afresh (one pass, cheap next
to decoding).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import torch

from corral.engine.generate import GenerationRequest, Timings, TokenEvent, decode_loop, fit_prompt
from corral.engine.kv_cache import KVCache


@runtime_checkable
class EncoderDecoderLM(Protocol):
    """What the engine needs from an encoder-decoder network."""

    vocab_size: int
    context_length: int
    decoder_start_id: int  # the decoder's first input token

    def make_cache(self, max_len: int, batch: int = 1) -> KVCache:
        """A decoder cache for max_len generated positions (holds the encoding too)."""
        ...

    def encode(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Encoder input [B, L] -> encoder output [B, L, E]; readies `cache` for decoding
        against it (cross-attention keys/values, no decoded positions)."""
        ...

    def forward(
        self, tokens: torch.Tensor, cache: KVCache, last_only: bool = False
    ) -> torch.Tensor:
        """Decoder tokens [B, T] at positions cache.offset.. -> logits [B, T, V] float32."""
        ...


def seq2seq_logits(
    model: EncoderDecoderLM, ids: Sequence[int], decoder_ids: Sequence[int] = ()
) -> torch.Tensor:
    """Decoder logits [1 + len(decoder_ids), V] for encoder input `ids`: row i is the
    distribution of the decoder's token i + 1 given its start token and decoder_ids[:i]."""
    dec = [model.decoder_start_id, *decoder_ids]
    cache = model.make_cache(len(dec))
    model.encode(torch.tensor([list(ids)], dtype=torch.long), cache)
    return model.forward(torch.tensor([dec], dtype=torch.long), cache)[0]


def generate_seq2seq_tokens(
    model: EncoderDecoderLM,
    req: GenerationRequest,
    cache: KVCache,
    timings: Timings | None = None,
) -> Iterator[TokenEvent]:
    """Yield the decoder's tokens for `req` (its prompt is the encoder input). The prompt
    and the generated tokens each have `cache.max_len` positions at most."""
    t = timings if timings is not None else Timings()
    prompt = fit_prompt(req.prompt_ids, cache.max_len, req.truncate)
    if not prompt:
        raise ValueError("empty prompt: give at least one token")
    t0 = time.perf_counter()
    model.encode(torch.tensor([prompt], dtype=torch.long), cache)
    start = torch.tensor([[model.decoder_start_id]], dtype=torch.long)
    logits = model.forward(start, cache, last_only=True)[0, -1].cpu()
    t.prompt_tokens, t.cached_tokens = len(prompt), 0
    t.prompt_s = time.perf_counter() - t0

    def step(token: int) -> torch.Tensor:
        ids = torch.tensor([[token]], dtype=torch.long)
        return model.forward(ids, cache, last_only=True)[0, -1].cpu()

    # penalties look at the decoder's own tokens, not the encoder input
    history = [model.decoder_start_id]
    yield from decode_loop(req, history, logits, step, lambda: cache.offset, cache.max_len, t)
