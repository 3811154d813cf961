"""The CUDA-graph decode cache (positions in a tensor, writes by scatter, attention over the
whole buffer under a mask) gives the same logits as the ordinary cache; checked on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from corral.engine.cuda_graph import StaticCache
from corral.gguf import open_gguf
from corral.models.registry import load_model
from tiny_gguf import write_tiny


@pytest.mark.parametrize(
    ("arch", "kw"), [("llama", {}), ("gemma3", {"n_head_kv": 1, "n_layers": 6})]
)
def test_static_cache_matches_kv_cache(tmp_path: Path, arch: str, kw: dict) -> None:
    m = load_model(open_gguf(write_tiny(tmp_path / "m.gguf", arch=arch, **kw)))
    ids = torch.randint(3, 250, (2, 7), generator=torch.Generator().manual_seed(0))
    ref_cache = m.make_cache(16, batch=2)
    m.forward(ids[:, :5], ref_cache)
    ref = [m.forward(ids[:, i : i + 1], ref_cache)[:, -1] for i in (5, 6)]

    kv = m.make_cache(16, batch=2)
    m.forward(ids[:, :5], kv)
    static = StaticCache(kv)
    static.pos.fill_(5)
    got = []
    for i in (5, 6):
        got.append(m.forward(ids[:, i : i + 1], static, last_only=True)[:, -1])
        static.pos += 1
    for r, g in zip(ref, got, strict=True):
        torch.testing.assert_close(g, r, atol=2e-3, rtol=1e-3)


def test_graph_generation_loop_matches_generate(tmp_path: Path) -> None:
    """graph_generate_tokens drives a decoder exactly as generate does; on the CPU the
    decoder steps eagerly (no capture), which exercises the same StaticCache path."""
    import corral
    from corral.engine.cuda_graph import GraphedDecoder, graph_generate_tokens
    from corral.engine.generate import GenerationRequest, Timings
    from corral.engine.sampling import SamplingParams

    model = corral.load(write_tiny(tmp_path / "g.gguf", context=64))
    ids = model.tokenize("hello world")
    want = model.generate(ids, max_tokens=8, temperature=0, ignore_eos=True).token_ids
    req = GenerationRequest(ids, 8, SamplingParams(temperature=0), ignore_eos=True)
    got = [
        e.token_id
        for e in graph_generate_tokens(
            GraphedDecoder(model.net, 1, 64, capture=False), req, Timings()
        )
    ]
    assert got == want
