"""The scheduler's graph-replayed decode steps (engine.cuda_graph.SlotGraphs), checked on the
CPU where the same static-shape steps run eagerly: same logits as the ordinary batched step,
rows outside the step untouched, buckets of rows and attended span chosen as documented."""

from __future__ import annotations

import pytest
import torch

import corral
from corral.engine import slots as slots_mod
from corral.engine.cuda_graph import MIN_SPAN, SlotGraphs, _bucket
from corral.engine.kv_cache import SlotBatch
from corral.engine.sampling import SamplingParams
from corral.engine.scheduler import Request, Scheduler
from corral.engine.slots import SharedSlots
from tiny_gguf import write_tiny


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> corral.Model:
    return corral.load(
        write_tiny(tmp_path_factory.mktemp("g") / "tiny.gguf", context=600), device="cpu"
    )


def test_buckets() -> None:
    assert [_bucket(n, 1, 8) for n in (1, 2, 3, 5, 8)] == [1, 2, 4, 8, 8]
    assert _bucket(5, 1, 6) == 6  # capped at the cache's rows
    assert _bucket(10, MIN_SPAN, 600) == MIN_SPAN
    assert _bucket(MIN_SPAN + 1, MIN_SPAN, 600) == 2 * MIN_SPAN
    assert _bucket(599, MIN_SPAN, 600) == 600


def test_slot_graph_step_matches_batched_step(model: corral.Model) -> None:
    """Slots 1 and 2 decode at different lengths (bucket: 4 rows); slot 0 holds a sequence
    that does not step and slot 3 is free: neither may change except at the scratch
    position."""
    net = model.net
    kv = net.make_cache(301, batch=4)  # 300 positions + the scratch one
    ref = net.make_cache(301, batch=4)
    gen = torch.Generator().manual_seed(1)
    lengths = {0: 20, 1: 9, 2: 270}  # 270 > MIN_SPAN: the span bucket doubles to 300
    for cache in (kv, ref):
        for slot, n in lengths.items():
            ids = torch.randint(3, 250, (1, n), generator=torch.Generator().manual_seed(slot))
            net.forward(ids, cache.slot(slot, 0))
    before = [b.clone() for b in kv.k]
    graphs = SlotGraphs(net, kv, capture=False)
    toks = torch.randint(3, 250, (2,), generator=gen).tolist()
    got = graphs.decode([1, 2], [9, 270], toks)
    want = net.forward(torch.tensor([[t] for t in toks]), SlotBatch(ref, [1, 2], [9, 270]))
    torch.testing.assert_close(got, want[:, -1], atol=2e-3, rtol=1e-3)
    assert set(graphs._graphs) == {(4, 300)}
    for layer, b in enumerate(kv.k):
        assert torch.equal(b[[0, 3], :, :300], before[layer][[0, 3], :, :300])
        # the new tokens landed where the ordinary step puts them
        torch.testing.assert_close(b[1, :, 9], ref.k[layer][1, :, 9])
        torch.testing.assert_close(b[2, :, 270], ref.k[layer][2, :, 270])


def test_shared_slots_cache_has_the_scratch_position(model: corral.Model) -> None:
    s = SharedSlots(model.net, 2, 64, graphs=True)
    assert s._cache().max_len == 65 and s._graphs is not None
    assert SharedSlots(model.net, 2, 64)._cache().max_len == 64  # CPU: no graphs by default


def test_scheduler_with_slot_graphs_gives_direct_results(
    model: corral.Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Concurrent greedy requests through graph steps (eager on the CPU) give the tokens
    of one-at-a-time generation."""
    monkeypatch.setattr(slots_mod, "graphs_wanted", lambda net: True)
    prompts = [model.tokenize(t) for t in ("hello world", "hi", "hello hello hello world")]
    direct = [
        model.generate(p, max_tokens=8, temperature=0, ignore_eos=True).token_ids for p in prompts
    ]
    s = Scheduler(model, slots=4)
    try:
        assert s._slots._use_graphs  # type: ignore[attr-defined]
        greedy = SamplingParams(temperature=0)
        handles = [s.submit(Request(p, 8, greedy, ignore_eos=True)) for p in prompts]
        assert [[e.token_id for e in h] for h in handles] == direct
        assert s._slots._graphs._graphs  # type: ignore[attr-defined]
    finally:
        s.close()
