"""Decode steps replayed as CUDA graphs: one launch per token instead of hundreds.

At batch 1 a GPU decode step is a few milliseconds of launches around microseconds of work;
capturing the step once and replaying it removes the launch cost. Capture needs fixed shapes
and addresses, so `StaticCache` keeps positions in a device tensor (updated between replays),
writes K/V by scatter at those positions, and attends over the whole buffer under a mask.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch

from corral.engine.generate import GenerationRequest, Timings, TokenEvent, decode_loop, fit_prompt
from corral.engine.kv_cache import KVCache
from corral.models.base import CausalLM


class StaticCache:
    """An AttentionCache for one new token per row at positions held in `pos` [B, 1]."""

    def __init__(self, kv: KVCache) -> None:
        self.kv = kv
        self.pos = torch.zeros(kv.batch, 1, dtype=torch.long, device=kv.device)
        self.k_pos = torch.arange(kv.max_len, device=kv.device)

    def positions(self, t: int) -> torch.Tensor:
        return self.pos

    def mask(self, t: int, window: int | None) -> torch.Tensor:
        q = self.pos[:, None, :, None]  # [B, 1, 1, 1]
        m = self.k_pos <= q  # [B, 1, 1, S]
        if window is not None:
            m &= (q - self.k_pos) < window
        return m

    def update_and_fetch(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        kb, vb = self.kv.k[layer], self.kv.v[layer]
        b, h, _, d = k.shape
        idx = self.pos.view(b, 1, 1, 1).expand(b, h, 1, d)
        kb.scatter_(2, idx, k.to(kb.dtype))
        vb.scatter_(2, idx, v.to(vb.dtype))
        return kb.to(k.dtype), vb.to(v.dtype)

    def advance(self, t: int) -> None:
        """Positions move on the host side between replays (see GraphedDecoder.step)."""


class GraphedDecoder:
    """Prefill eagerly, then decode one token per row per `step` by graph replay."""

    def __init__(self, model: CausalLM, batch: int, max_len: int) -> None:
        self.model = model
        self.kv = model.make_cache(max_len, batch)
        self.static = StaticCache(self.kv)
        device = self.kv.device
        self.tokens = torch.zeros(batch, 1, dtype=torch.long, device=device)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm up kernels and allocator outside the capture
            for _ in range(2):
                model.forward(self.tokens, self.static, last_only=True)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = model.forward(self.tokens, self.static, last_only=True)

    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, T] (same length per row) -> last logits [B, V]; positions set to T."""
        self.kv.offset = 0
        logits = self.model.forward(ids, self.kv, last_only=True)[:, -1]
        self.static.pos.fill_(ids.shape[1])
        return logits

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B] -> logits [B, V] (a view overwritten by the next step)."""
        self.tokens.copy_(tokens.view(-1, 1))
        self.graph.replay()
        self.static.pos += 1
        return self.logits[:, -1]


def graph_generate_tokens(
    decoder: GraphedDecoder, req: GenerationRequest, timings: Timings
) -> Iterator[TokenEvent]:
    """`generate_tokens` for one sequence on a GPU: eager prefill, graph-replayed steps."""
    n_ctx = decoder.kv.max_len
    prompt = fit_prompt(req.prompt_ids, n_ctx, req.truncate)
    t0 = time.perf_counter()
    ids = torch.tensor([prompt], dtype=torch.long, device=decoder.kv.device)
    logits = decoder.prefill(ids)[0].float().cpu()
    timings.prompt_tokens, timings.prompt_s = len(prompt), time.perf_counter() - t0
    device = decoder.kv.device

    def step(token: int) -> torch.Tensor:
        return decoder.step(torch.tensor([token], device=device))[0].float().cpu()

    yield from decode_loop(
        req, prompt, logits, step, lambda: int(decoder.static.pos[0, 0]), n_ctx, timings
    )
