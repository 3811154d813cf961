"""Decode steps replayed as CUDA graphs: one launch per token instead of hundreds.

At batch 1 a GPU decode step is a few milliseconds of launches around microseconds of work;
capturing the step once and replaying it removes the launch cost. Capture needs fixed shapes
and addresses, so `StaticCache` keeps positions in a device tensor (updated between replays),
writes K/V by scatter at those positions, and attends over a fixed span of the buffer under
a mask.

Two users: `GraphedDecoder` (one sequence, `Model.generate`) and `SlotGraphs` (the server
scheduler's batched steps over rows of one shared cache, a graph per bucket of rows and
attended length). Without a GPU the same objects step eagerly (`capture=False`), which is
how the CPU test suite checks them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence

import torch

from corral.engine.generate import GenerationRequest, Timings, TokenEvent, decode_loop, fit_prompt
from corral.engine.kv_cache import KVCache
from corral.models.base import CausalLM

log = logging.getLogger(__name__)

# Attended spans of the scheduler's graphs grow in powers of two from here: a step over
# short sequences does not read (or mask) a whole long context's cache.
MIN_SPAN = 256


class StaticCache:
    """An AttentionCache for one new token per row at positions held in `pos` [B, 1].

    Covers rows [0, rows) of `kv` and attends over positions [0, span) (default: all rows,
    the whole buffer). A row whose position is at or past `span` (a scratch position) still
    writes its K/V there and attends over the span: its output is simply not used.
    """

    def __init__(self, kv: KVCache, rows: int | None = None, span: int | None = None) -> None:
        self.kv = kv
        self.rows = rows or kv.batch
        self.span = span or kv.max_len
        self.pos = torch.zeros(self.rows, 1, dtype=torch.long, device=kv.device)
        self.k_pos = torch.arange(self.span, device=kv.device)

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
        # views of the first `rows` rows: the scatter lands in the shared buffers
        kb, vb = self.kv.k[layer][: self.rows], self.kv.v[layer][: self.rows]
        b, h, _, d = k.shape
        idx = self.pos.view(b, 1, 1, 1).expand(b, h, 1, d)
        kb.scatter_(2, idx, k.to(kb.dtype))
        vb.scatter_(2, idx, v.to(vb.dtype))
        return kb[:, :, : self.span].to(k.dtype), vb[:, :, : self.span].to(v.dtype)

    def advance(self, t: int) -> None:
        """Positions move on the host side between replays (see GraphedDecoder.step)."""


class DecodeGraph:
    """One decode step of rows [0, rows) of `kv` over its first `span` positions, captured
    as a CUDA graph (`capture`) or run eagerly on each `replay` (CPU, debugging).

    Set `tokens` [rows, 1] and `static.pos` [rows, 1] in place, `replay()`, then read
    `logits` [rows, 1, V] (overwritten by the next replay). Warm-up passes before the capture
    write their K/V at position `scratch`, which must hold nothing a sequence needs.
    """

    def __init__(
        self, model: CausalLM, kv: KVCache, rows: int, span: int, scratch: int, capture: bool
    ) -> None:
        self.model = model
        self.static = StaticCache(kv, rows, span)
        self.tokens = torch.zeros(rows, 1, dtype=torch.long, device=kv.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits = torch.empty(0)
        if not capture:
            return
        self.static.pos.fill_(scratch)
        device = kv.device
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm up kernels and allocator outside the capture
            for _ in range(2):
                model.forward(self.tokens, self.static, last_only=True)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = model.forward(self.tokens, self.static, last_only=True)

    def replay(self) -> torch.Tensor:
        """Run the step; logits [rows, 1, V]."""
        if self.graph is None:
            self.logits = self.model.forward(self.tokens, self.static, last_only=True)
        else:
            self.graph.replay()
        return self.logits


class GraphedDecoder:
    """Prefill eagerly, then decode one token per row per `step` by graph replay."""

    def __init__(self, model: CausalLM, batch: int, max_len: int, capture: bool = True) -> None:
        self.model = model
        self.kv = model.make_cache(max_len, batch)
        # warm-up writes at position 0 are overwritten by the first prefill
        self.decode = DecodeGraph(model, self.kv, batch, max_len, 0, capture)
        self.static = self.decode.static

    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, T] (same length per row) -> last logits [B, V]; positions set to T."""
        self.kv.offset = 0
        logits = self.model.forward(ids, self.kv, last_only=True)[:, -1]
        self.static.pos.fill_(ids.shape[1])
        return logits

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B] -> logits [B, V] (a view overwritten by the next step)."""
        self.decode.tokens.copy_(tokens.view(-1, 1))
        logits = self.decode.replay()
        self.static.pos += 1
        return logits[:, -1]


def _bucket(n: int, floor: int, cap: int) -> int:
    """The smallest power of two >= n (at least `floor`), at most `cap`."""
    b = floor
    while b < n:
        b *= 2
    return min(b, cap)


class SlotGraphs:
    """The scheduler's batched decode steps over rows of one shared KV cache, from graphs.

    A step feeds token b to slot `slots[b]` at position `offsets[b]`. It replays the graph
    for the smallest (rows, span) bucket that holds every slot and position: rows [0, R) of
    the cache, R a power of two, attending over the first S positions, S a power of two from
    MIN_SPAN. Rows in the bucket that are not decoding (free, or prefilling between steps)
    ride along at the scratch position, the cache's last, which no sequence reaches (the
    scheduler stops a sequence at its context size, one short of the buffer). Graphs are
    captured on first use of a bucket; a model whose step cannot be captured falls back to
    eager steps for good (logged once).
    """

    def __init__(self, model: CausalLM, kv: KVCache, capture: bool = True) -> None:
        self.model = model
        self.kv = kv
        self.capture = capture
        self.scratch = kv.max_len - 1
        self._graphs: dict[tuple[int, int], DecodeGraph] = {}
        self.failed = False
        # host-side staging, copied to the graph's inputs in one transfer each
        self._tok = torch.zeros(kv.batch, 1, dtype=torch.long)
        self._pos = torch.zeros(kv.batch, 1, dtype=torch.long)

    def usable(self) -> bool:
        """False once a capture failed (the caller then steps eagerly)."""
        return not self.failed

    def _graph(self, rows: int, span: int) -> DecodeGraph:
        key = (rows, span)
        g = self._graphs.get(key)
        if g is None:
            g = DecodeGraph(self.model, self.kv, rows, span, self.scratch, self.capture)
            self._graphs[key] = g
        return g

    def decode(
        self, slots: Sequence[int], offsets: Sequence[int], tokens: Sequence[int]
    ) -> torch.Tensor | None:
        """Logits [B, V] (float32, on the host) for the step, or None where no graph could
        be captured (then this object stays unusable and the caller steps eagerly)."""
        rows = _bucket(max(slots) + 1, 1, self.kv.batch)
        span = _bucket(max(offsets) + 1, MIN_SPAN, self.scratch)
        try:
            g = self._graph(rows, span)
        except Exception as e:  # noqa: BLE001 - any capture failure means: run eagerly
            log.warning("decode step not captured as a CUDA graph, stepping eagerly: %s", e)
            self.failed = True
            return None
        self._tok[:rows] = 0
        self._pos[:rows] = self.scratch
        index = torch.tensor(list(slots), dtype=torch.long)
        self._tok[index, 0] = torch.tensor(list(tokens), dtype=torch.long)
        self._pos[index, 0] = torch.tensor(list(offsets), dtype=torch.long)
        g.tokens.copy_(self._tok[:rows])
        g.static.pos.copy_(self._pos[:rows])
        logits = g.replay()  # [rows, 1, V]
        return logits[index.to(logits.device), -1].float().cpu()


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
