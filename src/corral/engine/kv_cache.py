"""A preallocated key/value cache that the attention layers call.

One buffer per layer, [B, Hkv, max_len, D], allocated once so a long generation never
reallocates; `offset` is how many positions are filled (shared by the batch rows). Entries are
stored in float16 by default, as llama.cpp does: half the memory, and the same rounding.
"""

from __future__ import annotations

import torch


class KVCache:
    """Static per-layer K/V buffers; layers call `update_and_fetch`, the model `advance`s."""

    def __init__(
        self,
        n_layers: int,
        n_kv_heads: int | tuple[int, ...],
        head_dim: int | tuple[int, ...],
        max_len: int,
        batch: int = 1,
        dtype: torch.dtype = torch.float16,
        v_head_dim: int | tuple[int, ...] | None = None,
    ) -> None:
        heads = n_kv_heads if isinstance(n_kv_heads, tuple) else (n_kv_heads,) * n_layers
        dims = head_dim if isinstance(head_dim, tuple) else (head_dim,) * n_layers
        vd = v_head_dim if v_head_dim is not None else dims
        vdims = vd if isinstance(vd, tuple) else (vd,) * n_layers
        self.max_len = max_len
        self.batch = batch
        self.k = [
            torch.zeros(batch, h, max_len, d, dtype=dtype) for h, d in zip(heads, dims, strict=True)
        ]
        self.v = [
            torch.zeros(batch, h, max_len, d, dtype=dtype)
            for h, d in zip(heads, vdims, strict=True)
        ]
        self.offset = 0

    def update_and_fetch(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k/v [B, Hkv, T, D] at offset..offset+T; return views of all S = offset+T."""
        t = k.shape[2]
        end = self.offset + t
        self.k[layer][:, :, self.offset : end] = k
        self.v[layer][:, :, self.offset : end] = v
        return self.k[layer][:, :, :end].to(k.dtype), self.v[layer][:, :, :end].to(v.dtype)

    def advance(self, n: int) -> None:
        self.offset += n

    def truncate(self, n: int) -> None:
        """Forget everything after the first n positions (prompt-prefix reuse, rewinds)."""
        self.offset = min(self.offset, n)

    def nbytes(self) -> int:
        return sum(x.numel() * x.element_size() for x in self.k + self.v)
