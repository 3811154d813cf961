"""The fused decode step (corral._decode, corral.models.fused) against the eager block loop: the
logits of every step must be the same bits, for the routes a one-token step can take (one
sequence, a batch of equal rows, slots at their own lengths, a sliding window, q/k/v biases),
and the eager loop must still serve whatever the fused step does not take."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from gguf import GGMLQuantizationType as Q

import corral
from corral.engine.kv_cache import KVCache, SlotBatch
from corral.kernels import decode
from corral.models import fused as fused_mod
from corral.models import layers, weights

# the fused step needs the C kernels on (not CORRAL_KERNELS=0, CORRAL_EXACT=1 or
# CORRAL_FUSED_DECODE=0) and a torch whose silu it reproduces
pytestmark = pytest.mark.skipif(
    not decode.available() or not weights._USE_KERNELS or layers._EXACT or not fused_mod.ENABLED,
    reason="the fused decode step is off or not usable here",
)

PROMPT = [5, 9, 11, 3, 7]
STEPS = [12, 4, 8, 10, 6, 13, 14, 15, 16, 17]


def tiny(tmp_path: Path, qtype: Q = Q.Q4_1, **kw: Any) -> Any:
    from tiny_gguf import write_tiny

    path = write_tiny(tmp_path / f"m-{qtype.name}.gguf", qtype=qtype, **kw)
    return corral.load(path).net


def decode_logits(net: Any, fused: bool, batch: int = 1) -> list[torch.Tensor]:
    """Logits [B, 1, V] of a prompt then one-token steps, on the fused step or the eager loop."""
    saved = net.fused
    net.fused = saved if fused else None
    try:
        cache = net.make_cache(64, batch=batch)
        rows = [PROMPT[i:] + PROMPT[:i] for i in range(batch)]
        outs = [net.forward(torch.tensor(rows), cache, last_only=True)]
        for j in range(len(STEPS)):
            ids = torch.tensor([[STEPS[(j + i) % len(STEPS)]] for i in range(batch)])  # [B, 1]
            outs.append(net.forward(ids, cache))
        return outs
    finally:
        net.fused = saved


def slot_logits(net: Any, fused: bool, short: int, steps: int) -> list[torch.Tensor]:
    """Slots 2 and 0 filled with PROMPT and its first `short` tokens, then `steps` steps of
    both decoded together (SlotBatch): logits [2, 1, V] per step."""
    saved = net.fused
    net.fused = saved if fused else None
    try:
        kv = KVCache(net.args.n_layers, net.args.n_head_kv, net.args.head_dim, 64, batch=3)
        net.forward(torch.tensor([PROMPT]), kv.slot(2, 0))
        net.forward(torch.tensor([PROMPT[:short]]), kv.slot(0, 0))
        offsets, outs = [len(PROMPT), short], []
        for tok in STEPS[:steps]:
            outs.append(
                net.forward(torch.tensor([[tok], [tok + 1]]), SlotBatch(kv, [2, 0], offsets))
            )
            offsets = [o + 1 for o in offsets]
        return outs
    finally:
        net.fused = saved


def few_token_logits(net: Any, fused: bool, batch: int) -> list[torch.Tensor]:
    """A 2-token prompt then steps of 3 new tokens (speculative drafts being verified)."""
    saved = net.fused
    net.fused = saved if fused else None
    try:
        cache = net.make_cache(64, batch=batch)
        outs = [net.forward(torch.tensor([PROMPT[:2]] * batch), cache)]
        for j in range(0, 9, 3):
            outs.append(net.forward(torch.tensor([STEPS[j : j + 3]] * batch), cache))
        return outs
    finally:
        net.fused = saved


def assert_same(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert torch.equal(x, y), f"step {i}: largest difference {(x - y).abs().max().item()}"


@pytest.mark.parametrize("qtype", [Q.Q4_1, Q.Q8_0, Q.Q4_0, Q.Q5_1])
def test_fused_steps_equal_the_eager_loop(tmp_path: Path, qtype: Q) -> None:
    net = tiny(tmp_path, qtype)
    assert net.fused is not None
    assert_same(decode_logits(net, True), decode_logits(net, False))


@pytest.mark.parametrize("qtype", [Q.Q4_1, Q.Q8_0])
def test_fused_qwen2_steps_equal_the_eager_loop(tmp_path: Path, qtype: Q) -> None:
    # NEOX rope and q/k/v biases
    net = tiny(tmp_path, qtype, arch="qwen2", qkv_bias=True)
    assert net.fused is not None
    assert_same(decode_logits(net, True), decode_logits(net, False))
    assert_same(decode_logits(net, True, batch=2), decode_logits(net, False, batch=2))


def test_fused_steps_with_window_biases_and_odd_shapes(tmp_path: Path) -> None:
    # a sliding window shorter than the steps, an odd head count, one kv head, a wider FFN
    net = tiny(tmp_path, Q.Q8_0, n_embd=96, n_head=3, n_head_kv=1, n_ff=224, sliding_window=4)
    gen = torch.Generator().manual_seed(1)
    for blk in net.blocks:
        blk.bq = torch.randn(96, generator=gen) * 0.1
        blk.bk = torch.randn(32, generator=gen) * 0.1
        blk.bv = torch.randn(32, generator=gen) * 0.1
    net.fused = fused_mod.FusedDecode.build(
        net.blocks, "cpu", torch.float32, 3, 1, 32, 32, False, 1e-5, 4,
    )  # fmt: skip
    assert net.fused is not None
    assert_same(decode_logits(net, True), decode_logits(net, False))


def test_fused_batch_rows_equal_the_eager_loop(tmp_path: Path) -> None:
    net = tiny(tmp_path)
    assert_same(decode_logits(net, True, batch=3), decode_logits(net, False, batch=3))


def test_fused_slot_batch_equals_the_eager_loop(tmp_path: Path) -> None:
    net = tiny(tmp_path)
    # slots 2 and 0 filled to different lengths, then decoded together
    assert_same(slot_logits(net, True, 3, 6), slot_logits(net, False, 3, 6))


def test_fused_step_is_taken_and_the_eager_loop_serves_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = tiny(tmp_path)
    calls = []
    eager = net._blocks
    monkeypatch.setattr(net, "_blocks", lambda *a: calls.append(a[0].shape) or eager(*a))
    cache = net.make_cache(64)
    rows = net.fused.max_rows
    net.forward(torch.tensor([PROMPT]), cache)
    net.forward(torch.tensor([[4]]), cache)
    net.forward(torch.tensor([[4] * rows]), cache)
    assert calls == []
    net.forward(torch.tensor([[4] * (rows + 1)]), cache)
    assert calls == [torch.Size([1, rows + 1, 64])]
    # more rows than the plan takes over a batch: eager
    wide = net.make_cache(8, batch=rows + 1)
    net.forward(torch.tensor([[4]] * (rows + 1)), wide)
    assert calls[-1] == torch.Size([rows + 1, 1, 64])


def test_fused_few_token_steps_equal_the_eager_loop(tmp_path: Path) -> None:
    # several new tokens per step (speculative drafts being verified), one and two sequences
    net = tiny(tmp_path, Q.Q8_0, sliding_window=6)
    for batch in (1, 2):
        assert_same(few_token_logits(net, True, batch), few_token_logits(net, False, batch))


def test_eager_when_disabled_or_not_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fused_mod, "ENABLED", False)  # what CORRAL_FUSED_DECODE=0 sets
    assert tiny(tmp_path).fused is None
    monkeypatch.setattr(fused_mod, "ENABLED", True)
    monkeypatch.setattr(decode, "_ext", None)  # as on a machine without the extension
    assert not decode.available()
    net = tiny(tmp_path, Q.Q8_0)
    assert net.fused is None
    cache = net.make_cache(16)
    out = net.forward(torch.tensor([[4]]), cache)
    assert out.shape == (1, 1, net.vocab_size) and torch.isfinite(out).all()


def test_float_weights_keep_the_eager_loop(tmp_path: Path) -> None:
    assert tiny(tmp_path, Q.F32).fused is None


def test_plan_rejects_wrong_inputs(tmp_path: Path) -> None:
    net = tiny(tmp_path)
    plan = net.fused.plan
    kv = net.make_cache(8)
    with pytest.raises(ValueError):
        plan.kv_table(kv.k[:1], kv.v[:1])
    with pytest.raises(ValueError):
        plan.kv_table([b.float() for b in kv.k], [b.float() for b in kv.v])
    table = plan.kv_table(kv.k, kv.v)
    x = torch.zeros(1, 64)
    cs = torch.zeros(1, 8)
    one = torch.zeros(1, dtype=torch.int64)
    with pytest.raises(ValueError):
        plan.step(torch.zeros(1, 63), cs, cs, table, one, one + 1)
    with pytest.raises(ValueError):
        plan.step(x, cs, cs, table, one.int(), one + 1)
    with pytest.raises(ValueError):  # a row with no positions
        plan.step(x, cs, cs, table, one, one)


@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0])
def test_one_row_matmul_pairs_equal_single_rows(qtype: Q) -> None:
    # a one-row call takes weight rows two at a time (the decode kernel); a one-weight-row
    # call takes the single-row kernel: the bits must agree
    import numpy as np
    from gguf import quants

    from corral import kernels

    rng = np.random.default_rng(int(qtype))
    n, k = 37, 256
    w = torch.from_numpy(
        np.ascontiguousarray(quants.quantize(rng.standard_normal((n, k)).astype(np.float32), qtype))
    )
    x = torch.randn(1, k, generator=torch.Generator().manual_seed(1)) * 3
    for nth in (1, 2):
        whole = kernels.qmatmul(x, w, qtype, n, k, n_threads=nth)
        rows = torch.cat([kernels.qmatmul(x, w[i : i + 1], qtype, 1, k) for i in range(n)], -1)
        assert torch.equal(whole, rows)


# ---- Gemma 3: per-head q/k norms, post norms, table GELU, local/global layers -----------------

# seven blocks: five local (sliding window), one global, one local again (is_local's pattern
# of 6); a window of 4 is passed within the prompt and the steps below
GEMMA = {"arch": "gemma3", "n_layers": 7, "sliding_window": 4}
GEMMA_MATS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def gemma(net: Any) -> Any:
    """A tiny Gemma 3 whose global layers rotate with another base than the local ones (the
    tiny files give both 10000): a layer taking the wrong rope set changes the logits."""
    net.inv_freq_global = layers.rope_inv_freq(net.args.head_dim, 1e6)
    return net


# where each K-quant block keeps its float16 scale(s) (byte offset, value): random bytes
# elsewhere are valid quants; the scales are set small so activations stay finite
K_SCALES = {Q.Q4_K: ((0, 1e-3), (2, 1e-3)), Q.Q5_K: ((0, 1e-3), (2, 1e-3)), Q.Q6_K: ((208, 2e-4),)}


def tiny_kquant(tmp_path: Path, qtype: Q, n_ff: int = 512) -> Any:
    """A tiny Gemma 3 whose block matrices are random `qtype` (a K-quant, which gguf-py cannot
    quantize) blocks: written as zero bytes, then filled in place."""
    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGUFReader

    from tiny_gguf import write_tiny

    names = {f"blk.{i}.{n}.weight" for i in range(GEMMA["n_layers"]) for n in GEMMA_MATS}
    path = write_tiny(
        tmp_path / f"g-{qtype.name}.gguf", qtype=Q.Q8_0, n_embd=256, n_head=4, n_head_kv=2,
        n_ff=n_ff, raw_types=dict.fromkeys(names, qtype), **GEMMA,
    )  # fmt: skip
    rng = np.random.default_rng(int(qtype))
    size = GGML_QUANT_SIZES[qtype][1]
    reader = GGUFReader(path, "r+")
    for t in reader.tensors:
        if t.name in names:
            blocks = t.data.reshape(-1, size)
            blocks[:] = rng.integers(0, 256, blocks.shape, dtype=np.uint8)
            for off, value in K_SCALES[qtype]:
                blocks[:, off : off + 2] = np.array([value], np.float16).view(np.uint8)
    reader.data.flush()
    del reader
    return gemma(corral.load(path).net)


@pytest.mark.parametrize("qtype", [Q.Q4_1, Q.Q8_0, Q.Q4_0, Q.Q5_0])
def test_fused_gemma3_steps_equal_the_eager_loop(tmp_path: Path, qtype: Q) -> None:
    net = gemma(tiny(tmp_path, qtype, **GEMMA))
    assert net.fused is not None and net.fused.plan.n_rope == 2
    assert_same(decode_logits(net, True), decode_logits(net, False))
    assert_same(decode_logits(net, True, batch=3), decode_logits(net, False, batch=3))


def test_fused_gemma3_with_local_layers_only(tmp_path: Path) -> None:
    # two blocks, both local: the plan uses one rope set of the two the model passes
    net = gemma(tiny(tmp_path, Q.Q8_0, arch="gemma3", sliding_window=4))
    assert net.fused is not None and net.fused.plan.n_rope == 1
    assert_same(decode_logits(net, True, batch=2), decode_logits(net, False, batch=2))


@pytest.mark.parametrize("qtype", [Q.Q4_K, Q.Q6_K])
def test_fused_gemma3_kquants_equal_the_eager_loop(tmp_path: Path, qtype: Q) -> None:
    # the real Gemma 3 270M's blocks are Q4_K/Q6_K (and Q5_0/Q8_0)
    net = tiny_kquant(tmp_path, qtype)
    assert net.fused is not None
    fused, eager = decode_logits(net, True), decode_logits(net, False)
    assert all(torch.isfinite(x).all() for x in eager)
    assert_same(fused, eager)
    assert_same(decode_logits(net, True, batch=2), decode_logits(net, False, batch=2))


def test_fused_gemma3_slots_and_few_token_steps_equal_the_eager_loop(tmp_path: Path) -> None:
    net = gemma(tiny(tmp_path, Q.Q8_0, **GEMMA))
    # slot 0 passes the window of 4 during the 7 steps
    assert_same(slot_logits(net, True, 2, 7), slot_logits(net, False, 2, 7))
    assert_same(few_token_logits(net, True, 2), few_token_logits(net, False, 2))


def test_fused_gemma3_is_taken_and_the_eager_loop_serves_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = gemma(tiny(tmp_path, Q.Q8_0, **GEMMA))
    calls = []
    eager = net._blocks
    monkeypatch.setattr(net, "_blocks", lambda *a: calls.append(a[0].shape) or eager(*a))
    cache = net.make_cache(64)
    rows = net.fused.max_rows
    net.forward(torch.tensor([PROMPT]), cache)
    net.forward(torch.tensor([[4]]), cache)
    assert calls == []
    net.forward(torch.tensor([[4] * (rows + 1)]), cache)
    assert calls == [torch.Size([1, rows + 1, 64])]


def test_gemma3_keeps_the_eager_loop_when_disabled_or_off_the_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = gemma(tiny(tmp_path, Q.Q8_0, **GEMMA))
    a = net.args
    # what gemma3.Model passes, on a GPU or with other activations: no plan
    args = (a.n_head, a.n_head_kv, a.head_dim, a.head_dim, True, a.rms_eps, None)
    for device, dtype in (("cuda", torch.float32), ("cpu", torch.float16)):
        built = fused_mod.FusedDecode.build(
            net.blocks, device, dtype, *args, scale=a.attn_scale, activation="gelu_tanh"
        )
        assert built is None
    monkeypatch.setattr(fused_mod, "ENABLED", False)  # what CORRAL_FUSED_DECODE=0 sets
    off = tiny(tmp_path, Q.Q8_0, **GEMMA)
    assert off.fused is None
    out = off.forward(torch.tensor([PROMPT]), off.make_cache(16))
    assert out.shape == (1, len(PROMPT), off.vocab_size) and torch.isfinite(out).all()


def test_plan_rejects_a_bad_activation_or_rope_set(tmp_path: Path) -> None:
    net = gemma(tiny(tmp_path, Q.Q8_0, **GEMMA))
    specs = net.fused.plan.blocks
    a = net.args
    args = (specs, a.n_head, a.n_head_kv, a.head_dim, a.head_dim, True, a.rms_eps, 0.1, None)
    with pytest.raises(ValueError):
        decode.DecodePlan(*args, activation="relu")
    with pytest.raises(ValueError):  # one rope set per block
        decode.DecodePlan(*args, rope_sets=[0])
    plan = decode.DecodePlan(*args, rope_sets=[0, 1] * 3 + [0], activation="gelu_tanh")
    kv = net.make_cache(8)
    x, one = torch.zeros(1, 64), torch.zeros(1, dtype=torch.int64)
    with pytest.raises(ValueError):  # two rope sets needed
        plan.step(x, torch.zeros(1, 8), torch.zeros(1, 8), plan.kv_table(kv.k, kv.v), one, one + 1)


def test_last_only_prunes_the_last_block_as_llama_cpp(tmp_path: Path) -> None:
    # Q6_K blocks: llama.cpp multiplies 8 rows or more with its tiled kernel (another float
    # order than one row's vec_dot), so a 12-token prompt's last logits depend on whether
    # the last block's feed-forward half saw all 12 rows or, as in llama.cpp's last-logits
    # graphs, the last one only; the fused step and the eager loop must both prune
    net = tiny_kquant(tmp_path, Q.Q6_K, n_ff=2048)
    net.output = lambda h: h  # the final hidden states: the head's 8-bit inputs would blur them
    ids = torch.tensor([[(7 * i) % 50 + 3 for i in range(12)]])

    def last(fused: bool, last_only: bool) -> torch.Tensor:
        saved = net.fused
        net.fused = saved if fused else None
        try:
            return net.forward(ids, net.make_cache(32), last_only=last_only)[:, -1]
        finally:
            net.fused = saved

    pruned = last(True, True)
    assert torch.equal(pruned, last(False, True))
    assert torch.equal(last(True, False), last(False, False))
    assert not torch.equal(pruned, last(True, False))
