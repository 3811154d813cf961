"""KV cache buffers: zeros that take memory only where they are written."""

from __future__ import annotations

import sys

import pytest
import torch

from corral.engine.kv_cache import KVCache, lazy_zeros


def _rss_anon_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no RssAnon line")


def test_lazy_zeros_are_zeros_and_writable() -> None:
    t = lazy_zeros((2, 3, 512, 256), torch.float16, "cpu")  # 1.5 MiB: the mmap route
    assert t.shape == (2, 3, 512, 256) and t.dtype == torch.float16 and t.is_contiguous()
    assert not t.any()
    t[1, 2, 7] = 3.0
    assert float(t.sum()) == 3.0 * 256
    small = lazy_zeros((4, 4), torch.float32, "cpu")  # below the threshold: plain zeros
    assert not small.any() and small.dtype == torch.float32


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_unwritten_cache_positions_take_no_memory() -> None:
    before = _rss_anon_mb()
    cache = KVCache(n_layers=8, n_kv_heads=8, head_dim=128, max_len=4096)  # 128 MiB of K/V
    cache.k[0][:, :, :16] = 1.0  # a short request writes the front of each buffer
    cache.v[0][:, :, :16] = 1.0
    grown = _rss_anon_mb() - before
    assert grown < 16, f"{grown:.1f} MiB resident for a 128 MiB cache holding 16 positions"
    assert float(cache.k[0][:, :, 16:].abs().sum()) == 0.0  # the rest still reads as zeros
