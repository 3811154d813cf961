"""Each architecture on tiny random weights: the KV cache gives the same logits as a full
pass, batch rows are independent, sliding windows hide what they should."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from gguf import GGMLQuantizationType

from corral.gguf import open_gguf
from corral.models.registry import load_model
from tiny_gguf import write_tiny

ARCHS = [
    ("llama", {}),
    ("llama", {"qtype": GGMLQuantizationType.Q8_0, "tied": True}),
    ("gemma3", {"n_layers": 7, "n_head_kv": 1, "sliding_window": 4}),
]


def _model(tmp_path: Path, arch: str, **kw: object):  # type: ignore[no-untyped-def]
    p = write_tiny(tmp_path / f"{arch}.gguf", arch=arch, **kw)  # type: ignore[arg-type]
    return load_model(open_gguf(p))


@pytest.mark.parametrize(("arch", "kw"), ARCHS)
def test_cache_matches_full_pass(tmp_path: Path, arch: str, kw: dict) -> None:
    m = _model(tmp_path, arch, **kw)
    ids = torch.randint(3, 250, (1, 12), generator=torch.Generator().manual_seed(1))
    full = m.forward(ids, m.make_cache(32))
    cache = m.make_cache(32)
    steps = [m.forward(ids[:, :5], cache)]  # a prompt, then one token at a time
    steps += [m.forward(ids[:, i : i + 1], cache) for i in range(5, 12)]
    inc = torch.cat(steps, dim=1)
    assert cache.offset == 12
    torch.testing.assert_close(inc, full, atol=2e-3, rtol=1e-3)


@pytest.mark.parametrize(("arch", "kw"), ARCHS)
def test_batch_rows_are_independent(tmp_path: Path, arch: str, kw: dict) -> None:
    m = _model(tmp_path, arch, **kw)
    ids = torch.randint(3, 250, (2, 9), generator=torch.Generator().manual_seed(2))
    both = m.forward(ids, m.make_cache(16, batch=2))
    for r in range(2):
        one = m.forward(ids[r : r + 1], m.make_cache(16))
        torch.testing.assert_close(both[r : r + 1], one, atol=2e-3, rtol=1e-3)


def test_last_only_is_the_last_row(tmp_path: Path) -> None:
    m = _model(tmp_path, "llama")
    ids = torch.tensor([[5, 6, 7, 8]])
    full = m.forward(ids, m.make_cache(8))
    last = m.forward(ids, m.make_cache(8), last_only=True)
    assert last.shape == (1, 1, m.vocab_size)
    torch.testing.assert_close(last[0, 0], full[0, -1])


def _first_token_matters(m, pos: int) -> bool:  # type: ignore[no-untyped-def]
    a = torch.arange(10, 10 + pos + 1)[None]
    b = a.clone()
    b[0, 0] = 200
    la = m.forward(a, m.make_cache(32))[0, -1]
    lb = m.forward(b, m.make_cache(32))[0, -1]
    return not torch.allclose(la, lb, atol=1e-6)


def test_llama_sliding_window_hides_old_tokens(tmp_path: Path) -> None:
    windowed = _model(tmp_path, "llama", sliding_window=4, n_layers=1)
    plain = write_tiny(tmp_path / "plain.gguf", n_layers=1)
    full = load_model(open_gguf(plain))
    # one layer: with a window of 4, position 8 cannot see position 0 at all
    assert not _first_token_matters(windowed, 8)
    assert _first_token_matters(windowed, 3)
    assert _first_token_matters(full, 8)


def test_gemma3_layer_pattern_and_window(tmp_path: Path) -> None:
    m = _model(tmp_path, "gemma3", n_layers=6, n_head_kv=1, sliding_window=4)
    assert m.args.is_local == (True, True, True, True, True, False)
    # the global sixth layer still lets position 0 reach position 12
    assert _first_token_matters(m, 12)
    m1 = _model(tmp_path, "gemma3", n_layers=1, n_head_kv=1, sliding_window=4)
    assert m1.args.is_local == (True,)
    assert not _first_token_matters(m1, 8)


@pytest.mark.parametrize(("arch", "kw"), ARCHS)
def test_slot_batch_decodes_rows_of_different_lengths(tmp_path: Path, arch: str, kw: dict) -> None:
    """Continuous batching: rows at different positions in one decode step give the same
    logits as decoding each sequence alone."""
    from corral.engine.kv_cache import SlotBatch

    m = _model(tmp_path, arch, **kw)
    g = torch.Generator().manual_seed(3)
    seqs = [torch.randint(3, 250, (1, n), generator=g) for n in (3, 9, 6)]
    nxt = torch.randint(3, 250, (3, 1), generator=g)
    alone = []
    for s, x in zip(seqs, nxt, strict=True):
        c = m.make_cache(16)
        m.forward(s, c)
        alone.append(m.forward(x[None], c)[0, -1])
    shared = m.make_cache(16, batch=4)
    for slot, s in zip((2, 0, 3), seqs, strict=True):  # slots out of order: gathered rows
        m.forward(s, shared.slot(slot, 0))
    batch = SlotBatch(shared, [2, 0, 3], [s.shape[1] for s in seqs])
    out = m.forward(nxt, batch)
    for r in range(3):
        torch.testing.assert_close(out[r, -1], alone[r], atol=2e-3, rtol=1e-3)
    assert batch.offsets.tolist() == [4, 10, 7]
