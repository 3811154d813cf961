"""Preallocated key/value caches that the attention layers call.

One buffer per layer, [slots, Hkv, max_len, D], allocated once so a long generation never
reallocates (and zero-filled pages cost no memory until written). Entries are stored in
float16 by default, as llama.cpp does: half the memory, and the same rounding.

Layers see the `AttentionCache` protocol: the positions of the new tokens, the attention mask,
and `update_and_fetch`. `KVCache` is itself one: all its rows advance together (one sequence,
or a batch of equal-length prompts). `SlotBatch` views some slots of a KVCache, each at its own
length: the decode step of continuous batching.
"""

from __future__ import annotations

import contextlib
import math
import mmap
from collections.abc import Iterator, Sequence
from typing import Protocol

import torch

# Up to this many new tokens (every step when kernels.DENSE is off) attend in C on the CPU
# (decode steps, speculative drafts being verified, prompts), each as its own query row
# summed in llama.cpp's order (one_token_sums): row t of a T-token step gets the very bits a
# step at that position would in the same order (as the integer matmul kernels do in their
# "rows" order, kernels.rows_alone). Longer prompts attend in torch's blocked GEMMs, ~10%
# faster at 512 tokens (their matmuls have left llama.cpp's bits by then anyway).
DECODE_MAX_T = 64


def _decode_route(buf: torch.Tensor, q: torch.Tensor) -> bool:
    """Whether the C attention serves this step: CPU, float16 cache, and few new tokens
    or kernels.DENSE off."""
    from corral import kernels
    from corral.kernels import attention

    return (
        (q.shape[2] <= DECODE_MAX_T or not kernels.DENSE)
        and buf.device.type == "cpu"
        and buf.dtype == torch.float16
        and attention.available()
    )


def _attn_decode(
    q: torch.Tensor, kb: torch.Tensor, vb: torch.Tensor, slots: torch.Tensor,
    lengths: torch.Tensor, longest: int, scale: float, window: int | None, exact: bool,
    one_token: bool,
) -> torch.Tensor:  # fmt: skip
    """q [B, H, T, D]; slots/lengths [B*T] (row-major over B, T), longest = max(lengths)
    already checked against the buffers; one_token: the summation order (see
    KVCache.one_token_sums) -> [B, T, H*D]."""
    from corral.kernels.attention import decode_attention

    b, h, t, d = q.shape
    rows = q if t == 1 else q.transpose(1, 2).reshape(b * t, h, 1, d)
    out = decode_attention(
        rows, kb, vb, slots, lengths, scale, window, exact=exact, checked_max=longest,
        one_token=one_token,
    )  # fmt: skip
    return out.view(b, t, h * d).to(q.dtype)


class AttentionCache(Protocol):
    """What a model's forward pass needs from the cache it writes to."""

    def positions(self, t: int) -> torch.Tensor:
        """Absolute positions [B, T] of the T new tokens of each row."""
        ...

    def mask(self, t: int, window: int | None) -> torch.Tensor | None:
        """Boolean mask (True = may attend), broadcastable to [B, H, T, S]; None if all may."""
        ...

    def update_and_fetch(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k/v [B, Hkv, T, D]; return all keys/values [B, Hkv, S, D] in k's dtype."""
        ...

    def advance(self, t: int) -> None:
        """The T new tokens are now part of every row's history."""
        ...


_LAZY_MIN_BYTES = 1 << 20


def lazy_zeros(
    shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str
) -> torch.Tensor:
    """torch.zeros(shape) whose CPU memory is committed only where it is written.

    A KV cache is sized for the whole context but a request fills it from the front:
    torch.zeros writes every page (a 7B model's 1,024-token cache: 128 MB resident before
    the first token). Anonymous mmap pages read as zero until written, so unwritten positions
    cost no memory and still read as zeros (masked-out attention weights of 0 times garbage
    could be NaN; times zero they are 0). The tensor keeps the mapping alive.
    """
    n_bytes = math.prod(shape) * dtype.itemsize
    if torch.device(device).type != "cpu" or n_bytes < _LAZY_MIN_BYTES:
        return torch.zeros(shape, dtype=dtype, device=device)
    return torch.frombuffer(mmap.mmap(-1, n_bytes), dtype=dtype).view(shape)


def causal_mask(q_pos: torch.Tensor, k_len: int, window: int | None) -> torch.Tensor:
    """q_pos [B, T] -> [B, 1, T, S]: key k is visible from query position p when k <= p and,
    under a sliding window, p - k < window."""
    k_pos = torch.arange(k_len, device=q_pos.device)
    q = q_pos[:, None, :, None]
    mask = k_pos <= q
    if window is not None:
        mask &= (q - k_pos) < window
    return mask


class KVCache:
    """Static per-layer K/V buffers for `batch` rows that advance together (`offset`)."""

    def __init__(
        self,
        n_layers: int,
        n_kv_heads: int | tuple[int, ...],
        head_dim: int | tuple[int, ...],
        max_len: int,
        batch: int = 1,
        dtype: torch.dtype = torch.float16,
        v_head_dim: int | tuple[int, ...] | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        heads = n_kv_heads if isinstance(n_kv_heads, tuple) else (n_kv_heads,) * n_layers
        dims = head_dim if isinstance(head_dim, tuple) else (head_dim,) * n_layers
        vd = v_head_dim if v_head_dim is not None else dims
        vdims = vd if isinstance(vd, tuple) else (vd,) * n_layers
        self.max_len = max_len
        self.batch = batch
        self.k = [
            lazy_zeros((batch, h, max_len, d), dtype, device)
            for h, d in zip(heads, dims, strict=True)
        ]
        self.v = [
            lazy_zeros((batch, h, max_len, d), dtype, device)
            for h, d in zip(heads, vdims, strict=True)
        ]
        self.device = torch.device(device)
        self.offset = 0
        self._rows: tuple[tuple[int, int], torch.Tensor, torch.Tensor] | None = None
        # the new tokens are generated ones (speculative verification sets it for its drafts):
        # their attention sums as llama.cpp's one-token steps, whatever their count
        self.decoding = False

    def one_token_sums(self, t: int) -> bool:
        """Whether t new tokens' attention sums as llama.cpp's one-token batches do (see
        corral.kernels.attention): single tokens, and generated tokens in any number."""
        return t == 1 or self.decoding

    def positions(self, t: int) -> torch.Tensor:
        return torch.arange(self.offset, self.offset + t, device=self.device).expand(self.batch, t)

    def mask(self, t: int, window: int | None) -> torch.Tensor | None:
        end = self.offset + t
        if t == 1 and (window is None or end <= window):
            return None  # one new token that may see everything before it
        return causal_mask(torch.arange(self.offset, end, device=self.device)[None], end, window)

    def update_and_fetch(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        t = k.shape[2]
        end = self.offset + t
        self.k[layer][:, :, self.offset : end] = k
        self.v[layer][:, :, self.offset : end] = v
        return self.k[layer][:, :, :end].to(k.dtype), self.v[layer][:, :, :end].to(v.dtype)

    def decode_attention(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
        window: int | None, exact: bool,
    ) -> torch.Tensor | None:  # fmt: skip
        """Store the new tokens' k/v [B, Hkv, T, D] and return their attention [B, T, H*D],
        computed in C on the float16 buffers in place (each new token a query row that sees
        the positions up to its own); None where that route does not apply (then use
        update_and_fetch)."""
        if not _decode_route(self.k[layer], q):
            return None
        t = q.shape[2]
        slots, lengths, end = self.step_rows(t)
        self.k[layer][:, :, self.offset : end] = k
        self.v[layer][:, :, self.offset : end] = v
        return _attn_decode(
            q, self.k[layer], self.v[layer], slots, lengths, end, scale, window, exact,
            self.one_token_sums(t),
        )  # fmt: skip

    def step_rows(self, t: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """For the C decode routes: the slot and length of each new token's query row, int64
        [B*T] (row-major over B, T; the token sits at position length - 1 of its slot), and
        the longest length. IndexError when the buffers cannot hold T more tokens."""
        end = self.offset + t
        if end > self.max_len:
            raise IndexError("KV cache is full")
        if self._rows is None or self._rows[0] != (end, t):
            ends = torch.arange(self.offset + 1, end + 1)
            self._rows = (
                (end, t),
                torch.arange(self.batch).repeat_interleave(t),
                ends.repeat(self.batch),
            )
        _, slots, lengths = self._rows
        return slots, lengths, end

    def advance(self, n: int) -> None:
        self.offset += n

    def truncate(self, n: int) -> None:
        """Forget everything after the first n positions (prompt-prefix reuse, rewinds)."""
        self.offset = min(self.offset, n)

    def nbytes(self) -> int:
        return sum(x.numel() * x.element_size() for x in self.k + self.v)

    def slot(self, index: int, offset: int) -> SlotBatch:
        """A one-row view of slot `index`, whose first `offset` positions are filled."""
        return SlotBatch(self, [index], [offset])

    def copy_slot(self, src: int, dst: int, length: int) -> None:
        """Copy the first `length` positions of slot src into slot dst (prefix sharing)."""
        for buf in self.k + self.v:
            buf[dst, :, :length] = buf[src, :, :length]


class SlotBatch:
    """Rows `slots` of a KVCache, row b holding `offsets[b]` positions: lets sequences of
    different lengths decode in one forward pass. Keys past a row's own length are masked."""

    def __init__(self, cache: KVCache, slots: Sequence[int], offsets: Sequence[int]) -> None:
        self.cache = cache
        self.slots = list(slots)
        self.offsets = torch.tensor(list(offsets), dtype=torch.long, device=cache.device)
        lo = self.slots[0]
        # rows lying next to each other in the buffer are read as a view, not gathered
        self._contiguous = self.slots == list(range(lo, lo + len(self.slots)))
        self._slot_t = torch.tensor(self.slots, dtype=torch.long, device=cache.device)
        # decode_attention's (T, positions [B, T], slot and length per query row [B*T])
        self._rows: tuple[int, torch.Tensor, torch.Tensor, torch.Tensor, int] | None = None

    def positions(self, t: int) -> torch.Tensor:
        return self.offsets[:, None] + torch.arange(t, device=self.offsets.device)

    def _length(self, t: int) -> int:
        return int(self.offsets.max()) + t

    def mask(self, t: int, window: int | None) -> torch.Tensor | None:
        if len(self.slots) == 1 and t == 1:
            end = int(self.offsets[0]) + 1
            if window is None or end <= window:
                return None
        return causal_mask(self.positions(t), self._length(t), window)

    def update_and_fetch(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, t, _ = k.shape
        pos = self.positions(t)  # [B, T]
        rows = self._slot_t[:, None].expand(b, t)
        kb, vb = self.cache.k[layer], self.cache.v[layer]
        if pos.max() >= self.cache.max_len:
            raise IndexError("KV cache slot is full")
        # advanced indices around a slice put [B, T] first: assign [B, T, Hkv, D]
        kb[rows, :, pos] = k.transpose(1, 2).to(kb.dtype)
        vb[rows, :, pos] = v.transpose(1, 2).to(vb.dtype)
        s = self._length(t)
        if self._contiguous:
            lo = self.slots[0]
            ks, vs = kb[lo : lo + b, :, :s], vb[lo : lo + b, :, :s]
        else:
            ks, vs = kb[self._slot_t, :, :s], vb[self._slot_t, :, :s]
        return ks.to(k.dtype), vs.to(v.dtype)

    def decode_attention(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
        window: int | None, exact: bool,
    ) -> torch.Tensor | None:  # fmt: skip
        """As KVCache.decode_attention, each row at its own length (no mask needed)."""
        kb, vb = self.cache.k[layer], self.cache.v[layer]
        if not _decode_route(kb, q):
            return None
        b, _, t, _ = k.shape
        slots, lengths, longest = self.step_rows(t)
        pos = self._rows[1]  # type: ignore[index]
        # advanced indices (slot, :, position) around a slice put [B, T] first
        rows = self._slot_t[:, None].expand(b, t)
        kb[rows, :, pos] = k.transpose(1, 2).to(kb.dtype)
        vb[rows, :, pos] = v.transpose(1, 2).to(vb.dtype)
        return _attn_decode(
            q, kb, vb, slots, lengths, longest, scale, window, exact, self.one_token_sums(t)
        )

    def one_token_sums(self, t: int) -> bool:
        """As KVCache.one_token_sums."""
        return self.cache.one_token_sums(t)

    def step_rows(self, t: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """As KVCache.step_rows, each row at its own length."""
        if self._rows is None or self._rows[0] != t:
            pos = self.positions(t)  # [B, T]
            longest = int(pos.max()) + 1
            if longest > self.cache.max_len:
                raise IndexError("KV cache slot is full")
            rows_t = self._slot_t.repeat_interleave(t)
            self._rows = (t, pos, rows_t, (pos + 1).reshape(-1), longest)
        _, _, slots, lengths, longest = self._rows
        return slots, lengths, longest

    def advance(self, t: int) -> None:
        self.offsets += t
        self._rows = None


@contextlib.contextmanager
def generated_tokens(cache: object) -> Iterator[None]:
    """Within the block, tokens fed to `cache` (a KVCache or a SlotBatch of one) are generated
    ones, each computed as llama.cpp computes a one-token step whatever their number: attention
    summed in its one-token order (KVCache.decoding) and matmuls row by row
    (kernels.rows_alone). Batched decode steps and speculative checks then give every row the
    bits of that sequence's own single steps."""
    from corral import kernels

    target = getattr(cache, "cache", cache)
    was = getattr(target, "decoding", None)
    if was is not None:
        target.decoding = True
    try:
        with kernels.rows_alone():
            yield
    finally:
        if was is not None:
            target.decoding = was
