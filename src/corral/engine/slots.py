"""Where the scheduler's sequences keep their caches, and the forward passes over them.

The Scheduler (engine/scheduler.py) owns the request lifecycle: queue, admission, sampling,
stop strings, cancellation, stats. Everything that depends on how a model caches goes
through a `Slots` object, one per Scheduler, chosen by `make_slots`:

- `SharedSlots`, decoder-only models: one KV cache of `n` rows. A prompt goes to the free
  row sharing its longest prefix (or copies that prefix from a busy row) and only computes
  the rest; each decode step runs every generating row in one forward pass (`SlotBatch`).
- `RecurrentSlots`, RWKV: a recurrent state per slot. Decode steps batch the states of all
  generating slots (stacked into one batch state, then written back: the rows of an RWKV
  forward pass are independent).
- `EncoderSlots`, encoder-decoder (t5): a decoder cache per slot holding its own encoding;
  the prompt is encoded in one pass, then each slot decodes on its own (encodings of
  different lengths do not share a forward pass).

Prompt-prefix caching does not apply to the last two: a recurrent state cannot be rewound
to a shared prefix (nor copied out of the middle of another sequence), and a t5 decoder's
cache holds its own tokens, not the prompt's, so every request computes its whole prompt.

Every method runs on the scheduler's worker thread. Shapes: B generating rows, V vocab.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING, Protocol

import torch

from corral.engine.cuda_graph import SlotGraphs
from corral.engine.generate import PREFILL_CHUNK, common_prefix
from corral.engine.kv_cache import KVCache, SlotBatch, generated_tokens
from corral.engine.seq2seq import EncoderDecoderLM
from corral.models.base import CausalLM
from corral.models.rwkv_common import RecurrentLM, RecurrentState

if TYPE_CHECKING:
    from corral.model import Model


class Slots(Protocol):
    """The model-specific half of the scheduler: `n` slots, one sequence in each at most."""

    n: int
    chunk: int  # prompt tokens per prefill call
    held: list[list[int]]  # per slot: the tokens its cache holds, for prefix reuse

    def place(self, prompt: list[int], free: list[int], busy: list[int]) -> tuple[int, int]:
        """Choose one of the `free` slots for `prompt` and ready it; returns (slot, number
        of prompt tokens already in it, which are not computed again)."""
        ...

    def history(self, prompt: list[int]) -> list[int]:
        """The tokens repetition penalties start from."""
        ...

    def prefill(self, slot: int, offset: int, chunk: list[int]) -> tuple[torch.Tensor, int]:
        """Run prompt tokens `chunk` into `slot`, which holds `offset` positions; returns
        the last position's logits [V] (on the host) and the positions now held."""
        ...

    def decode(self, slots: list[int], offsets: list[int], tokens: list[int]) -> torch.Tensor:
        """Feed token b to slot b (holding offsets[b] positions): logits [B, V] on the host."""
        ...

    def release(self, slot: int) -> None:
        """The sequence in `slot` has ended."""
        ...


def make_slots(model: Model, n: int, n_ctx: int) -> Slots:
    """The Slots for `model`'s kind of cache: `n` slots of `n_ctx` positions."""
    if isinstance(model.net, EncoderDecoderLM):
        return EncoderSlots(model.net, n, n_ctx)
    if isinstance(model.net, RecurrentLM):
        return RecurrentSlots(model.net, n, n_ctx)
    return SharedSlots(model.net, n, n_ctx)


def _lowest(free: list[int]) -> int:
    """Slots with their own caches: fill the lowest first, so caches made earlier are reused
    and no more are allocated than requests ever ran at once."""
    return min(free)


def graphs_wanted(net: CausalLM) -> bool:
    """Decode steps from CUDA graphs: on a GPU, unless CORRAL_CUDA_GRAPHS=0 (debugging)."""
    device = getattr(net, "device", None)
    on_gpu = device is not None and device.torch_device.type == "cuda"
    return on_gpu and os.environ.get("CORRAL_CUDA_GRAPHS", "1") != "0"


def batch_exact_wanted() -> bool:
    """Batched CPU decode steps give each row its sequence's one-token bits, unless
    CORRAL_BATCH_EXACT=0: then they take llama.cpp's batch kernels (repacked Q4_K gemm,
    tiled K-quants), ~1.4x the aggregate throughput on Q4_K-heavy 7B models (BENCHMARKS.md),
    and a request's tokens may depend on what shares its steps, as in llama.cpp's server."""
    return os.environ.get("CORRAL_BATCH_EXACT", "1") != "0"


class SharedSlots:
    """Decoder-only models: rows of one KV cache, with prompt-prefix reuse.

    With `graphs` (default: on a GPU) decode steps replay captured CUDA graphs
    (engine.cuda_graph.SlotGraphs; on the CPU the same static-shape steps run eagerly, for
    tests); the cache then has one position more than `n_ctx`, the graphs' scratch position.
    `batch_exact` (default: batch_exact_wanted()) runs eager batched steps row by row.
    """

    def __init__(
        self,
        net: CausalLM,
        n: int,
        n_ctx: int,
        graphs: bool | None = None,
        batch_exact: bool | None = None,
    ) -> None:
        self.net = net
        self.n = n
        self.n_ctx = n_ctx
        self.batch_exact = batch_exact_wanted() if batch_exact is None else batch_exact
        self.chunk = PREFILL_CHUNK
        self.held: list[list[int]] = [[] for _ in range(n)]
        self._used = [0.0] * n  # when each slot last ended a sequence (least recently used)
        self._kv: KVCache | None = None  # made on first use: pages cost nothing until written
        self._use_graphs = graphs_wanted(net) if graphs is None else graphs
        self._graphs: SlotGraphs | None = None

    def _cache(self) -> KVCache:
        if self._kv is None:
            extra = 1 if self._use_graphs else 0
            self._kv = self.net.make_cache(self.n_ctx + extra, batch=self.n)
            if self._use_graphs:
                capture = self._kv.device.type == "cuda"
                self._graphs = SlotGraphs(self.net, self._kv, capture=capture)
        return self._kv

    def place(self, prompt: list[int], free: list[int], busy: list[int]) -> tuple[int, int]:
        slot, reuse, source = self._choose(prompt, free, busy)
        if source is not None and reuse:
            self._cache().copy_slot(source, slot, reuse)
        self.held[slot] = list(prompt[:reuse])
        return slot, reuse

    def _choose(
        self, prompt: list[int], free: list[int], busy: list[int]
    ) -> tuple[int, int, int | None]:
        """(slot, tokens reusable, slot to copy them from or None)."""
        # keep one token to compute: its logits start the generation
        limit = len(prompt) - 1
        best_free = max(
            free,
            key=lambda i: (min(common_prefix(self.held[i], prompt), limit), -self._used[i]),
        )
        reuse_free = min(common_prefix(self.held[best_free], prompt), limit)
        if busy:
            best_busy = max(busy, key=lambda i: common_prefix(self.held[i], prompt))
            reuse_busy = min(common_prefix(self.held[best_busy], prompt), limit)
            if reuse_busy > reuse_free:
                target = min(free, key=lambda i: self._used[i])  # least recently used
                return target, reuse_busy, best_busy
        return best_free, reuse_free, None

    def history(self, prompt: list[int]) -> list[int]:
        return list(prompt)

    def prefill(self, slot: int, offset: int, chunk: list[int]) -> tuple[torch.Tensor, int]:
        view = self._cache().slot(slot, offset)
        logits = self.net.forward(torch.tensor([chunk]), view, last_only=True)
        self.held[slot].extend(chunk)
        return logits[0, -1].cpu(), offset + len(chunk)

    def decode(self, slots: list[int], offsets: list[int], tokens: list[int]) -> torch.Tensor:
        cache = self._cache()
        out = None
        if self._graphs is not None and self._graphs.usable():
            out = self._graphs.decode(slots, offsets, tokens)
        if out is None:
            view = SlotBatch(cache, slots, offsets)
            ids = torch.tensor([[t] for t in tokens])  # [B, 1]
            # each row as its sequence's own one-token step (not llama.cpp's batch kernels)
            exact = generated_tokens(view) if self.batch_exact else contextlib.nullcontext()
            with exact:
                out = self.net.forward(ids, view, last_only=True)[:, -1].cpu()  # [B, V]
        for slot, token in zip(slots, tokens, strict=True):
            self.held[slot].append(token)
        return out

    def release(self, slot: int) -> None:
        self._used[slot] = time.perf_counter()


class RecurrentSlots:
    """RWKV: a RecurrentState of one row per slot, stacked into one batch to decode."""

    def __init__(self, net: RecurrentLM, n: int, n_ctx: int) -> None:
        self.net = net
        self.n = n
        self.n_ctx = n_ctx
        self.chunk = PREFILL_CHUNK
        self.held: list[list[int]] = [[] for _ in range(n)]  # never reused (see module doc)
        self._states: dict[int, RecurrentState] = {}  # made when a slot is first used
        self._batch: RecurrentState | None = None  # scratch for batched decode steps

    def _new_state(self, batch: int) -> RecurrentState:
        state = self.net.make_cache(self.n_ctx, batch=batch)
        assert isinstance(state, RecurrentState)
        return state

    def _state(self, slot: int) -> RecurrentState:
        if slot not in self._states:
            self._states[slot] = self._new_state(1)
        return self._states[slot]

    def place(self, prompt: list[int], free: list[int], busy: list[int]) -> tuple[int, int]:
        slot = _lowest(free)
        self._state(slot).reset()  # the next sequence starts from the initial state
        return slot, 0

    def history(self, prompt: list[int]) -> list[int]:
        return list(prompt)

    def prefill(self, slot: int, offset: int, chunk: list[int]) -> tuple[torch.Tensor, int]:
        state = self._state(slot)
        logits = self.net.forward(torch.tensor([chunk]), state, last_only=True)
        return logits[0, -1].cpu(), offset + len(chunk)

    def decode(self, slots: list[int], offsets: list[int], tokens: list[int]) -> torch.Tensor:
        ids = torch.tensor([[t] for t in tokens])  # [B, 1]
        states = [self._state(s) for s in slots]
        if len(states) == 1:
            return self.net.forward(ids, states[0], last_only=True)[:, -1].cpu()
        batch = self._gather(states)
        logits = self.net.forward(ids, batch, last_only=True)[:, -1].cpu()  # [B, V]
        for b, st in enumerate(states):  # write each row's new state back to its slot
            st.shift.copy_(batch.shift[:, :, b : b + 1])  # [L, 2, 1, E]
            st.wkv.copy_(batch.wkv[:, b : b + 1])  # [L, 1, ...]
            st.advance(1)
        return logits

    def _gather(self, states: list[RecurrentState]) -> RecurrentState:
        """One RecurrentState whose row b is states[b] (each mid-sequence, batch 1)."""
        b = len(states)
        if self._batch is None or self._batch.batch != b:
            self._batch = self._new_state(b)
        batch = self._batch
        torch.stack([st.shift[:, :, 0] for st in states], dim=2, out=batch.shift)  # [L, 2, B, E]
        torch.stack([st.wkv[:, 0] for st in states], dim=1, out=batch.wkv)  # [L, B, ...]
        batch.offset = 1  # mid-sequence: a forward pass at offset 0 would zero the rows
        return batch

    def release(self, slot: int) -> None:
        pass


class EncoderSlots:
    """Encoder-decoder (t5): a decoder cache per slot, each holding its own encoding."""

    def __init__(self, net: EncoderDecoderLM, n: int, n_ctx: int) -> None:
        self.net = net
        self.n = n
        self.n_ctx = n_ctx
        self.chunk = n_ctx  # the encoder takes the whole prompt at once (it is < n_ctx)
        self.held: list[list[int]] = [[] for _ in range(n)]  # never reused (see module doc)
        self._caches: dict[int, KVCache] = {}  # made when a slot is first used

    def _cache(self, slot: int) -> KVCache:
        if slot not in self._caches:
            self._caches[slot] = self.net.make_cache(self.n_ctx)
        return self._caches[slot]

    def place(self, prompt: list[int], free: list[int], busy: list[int]) -> tuple[int, int]:
        return _lowest(free), 0

    def history(self, prompt: list[int]) -> list[int]:
        # penalties look at the decoder's own tokens, not the encoder input (as seq2seq.py)
        return [self.net.decoder_start_id]

    def prefill(self, slot: int, offset: int, chunk: list[int]) -> tuple[torch.Tensor, int]:
        """Encode the prompt `chunk` [L] and run the decoder's start token: the positions
        held are then the decoder's (1), not the prompt's."""
        cache = self._cache(slot)
        self.net.encode(torch.tensor([chunk]), cache)
        start = torch.tensor([[self.net.decoder_start_id]])
        logits = self.net.forward(start, cache, last_only=True)[0, -1].cpu()  # [V]
        return logits, cache.offset

    def decode(self, slots: list[int], offsets: list[int], tokens: list[int]) -> torch.Tensor:
        rows = []
        for slot, token in zip(slots, tokens, strict=True):
            cache = self._cache(slot)
            rows.append(self.net.forward(torch.tensor([[token]]), cache, last_only=True)[0, -1])
        return torch.stack(rows).cpu()  # [B, V]

    def release(self, slot: int) -> None:
        pass
