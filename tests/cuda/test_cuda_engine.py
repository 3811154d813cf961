"""The engine on a GPU (bfloat16, weights dequantized into GPU memory, graph-replayed decode):
greedy generation agrees with the CPU engine on tiny models, and the scheduler's batched steps
replay captured graphs and give one-at-a-time results. Deselected where torch sees no GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import corral
from corral.engine.sampling import SamplingParams
from corral.engine.scheduler import Request, Scheduler
from tiny_gguf import write_tiny

pytestmark = pytest.mark.cuda

GREEDY = SamplingParams(temperature=0)


@pytest.mark.parametrize(("arch", "kw"), [("llama", {}), ("gemma3", {"n_layers": 6})])
def test_cuda_greedy_matches_cpu(tmp_path: Path, arch: str, kw: dict) -> None:
    from gguf import GGMLQuantizationType as QT

    path = write_tiny(tmp_path / "m.gguf", arch=arch, qtype=QT.Q8_0, context=256, **kw)
    cpu, gpu = corral.load(path), corral.load(path, device="cuda")
    ids = cpu.tokenize("hello world hello")
    want = cpu.generate(ids, max_tokens=12, temperature=0, ignore_eos=True).token_ids
    got = gpu.generate(ids, max_tokens=12, temperature=0, ignore_eos=True).token_ids
    assert got == want


def test_cuda_scheduler_replays_graphs(tmp_path: Path) -> None:
    model = corral.load(write_tiny(tmp_path / "s.gguf", context=512), device="cuda")
    prompts = [model.tokenize(t) for t in ("hello world", "hi", "hello hello hello world")]
    direct = [
        model.generate(p, max_tokens=10, temperature=0, ignore_eos=True).token_ids for p in prompts
    ]
    s = Scheduler(model, slots=4, n_ctx=300)
    try:
        handles = [s.submit(Request(p, 10, GREEDY, ignore_eos=True)) for p in prompts]
        got = [[e.token_id for e in h] for h in handles]
        graphs = s._slots._graphs  # type: ignore[attr-defined]
        assert graphs is not None and not graphs.failed and graphs._graphs
        assert all(g.graph is not None for g in graphs._graphs.values())
        assert got == direct
    finally:
        s.close()
    torch.cuda.synchronize()
