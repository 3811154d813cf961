"""What every causal language model module offers the engine."""

from __future__ import annotations

from typing import Protocol

import torch

from corral.engine.device import Device
from corral.engine.kv_cache import KVCache
from corral.gguf.reader import GGUFFile


class CausalLM(Protocol):
    """A decoder that maps token ids to next-token logits, filling a KV cache as it goes."""

    vocab_size: int
    context_length: int  # the context it was trained for

    def make_cache(self, max_len: int, batch: int = 1) -> KVCache:
        """A fresh cache able to hold max_len positions for `batch` sequences."""
        ...

    def forward(
        self, tokens: torch.Tensor, cache: KVCache, last_only: bool = False
    ) -> torch.Tensor:
        """tokens [B, T] at positions cache.offset.. -> logits [B, T, V] float32
        ([B, 1, V] when last_only); advances the cache by T."""
        ...


class ModelFactory(Protocol):
    """An architecture module's `Model` class: built from an open GGUF file."""

    @classmethod
    def from_gguf(cls, gguf: GGUFFile, device: Device = ...) -> CausalLM: ...
