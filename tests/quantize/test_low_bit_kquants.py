"""Q2_K and Q3_K: the codes of ggml's C reference, gguf-py's dequantization of our blocks,
ggml's error limits, llama.cpp's Q2_K / Q3_K_S/M/L mixes, and quantized tiny models."""

from __future__ import annotations

from pathlib import Path

import kquant_reference as ref
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize as gguf_dequantize
from test_kquants import _blocks, _ggml_test_error

import corral
from corral.cli.main import main
from corral.gguf.reader import open_gguf
from corral.perplexity import perplexity
from corral.quant import dequantize
from corral.quantize.file import quantize_file
from corral.quantize.kquants import K_QUANTIZERS, quantize_q2_k, quantize_q3_k
from corral.quantize.mix import Scheme, TypePlanner
from tiny_gguf import write_tiny

f32 = np.float32


def test_q2_k_matches_the_scalar_reference() -> None:
    x = _blocks()
    got = dequantize(quantize_q2_k(x), Q.Q2_K, x.shape).numpy()
    for i, block in enumerate(x):
        d, dmin, sc, codes = ref.quantize_q2_k_block(block)
        want = np.array(
            [f32(f32(d) * (sc[j // 16] & 0xF)) * f32(codes[j]) - f32(f32(dmin) * (sc[j // 16] >> 4))
             for j in range(256)], dtype=np.float32,
        )  # fmt: skip
        np.testing.assert_array_equal(got[i], want, err_msg=f"block {i}")


def test_q3_k_matches_the_scalar_reference() -> None:
    x = _blocks()
    got = dequantize(quantize_q3_k(x), Q.Q3_K, x.shape).numpy()
    for i, block in enumerate(x):
        d, sc, codes = ref.quantize_q3_k_block(block)
        want = np.array(
            [f32(f32(d) * sc[j // 16]) * f32(codes[j] - 4) for j in range(256)], dtype=np.float32
        )
        np.testing.assert_array_equal(got[i], want, err_msg=f"block {i}")


@pytest.mark.parametrize(("qtype", "limit"), [(Q.Q2_K, 0.0075), (Q.Q3_K, 0.004)])
def test_gguf_py_reads_our_blocks_within_ggml_limits(qtype: Q, limit: float) -> None:
    # test-quantize-fns: 0.1 + 2 cos(i); its limits for 2-bit and 3-bit types
    x = (0.1 + 2 * np.cos(np.arange(4096, dtype=np.float32))).astype(np.float32)
    blocks = K_QUANTIZERS[qtype](x.reshape(-1, 256))
    ours = dequantize(blocks.reshape(1, -1), qtype, (1, x.size)).numpy().ravel()
    theirs = gguf_dequantize(blocks.reshape(1, -1), qtype).ravel()
    np.testing.assert_array_equal(ours, theirs)
    assert _ggml_test_error(qtype, blocks, x) < limit


def test_more_bits_give_less_error() -> None:
    g = np.random.default_rng(0).standard_normal((64, 1024)).astype(np.float32)

    def rmse(qtype: Q) -> float:
        blocks = K_QUANTIZERS[qtype](g.reshape(-1, 256)).reshape(64, -1)
        return float(np.sqrt(np.mean((g - gguf_dequantize(blocks, qtype)) ** 2)))

    e = {q: rmse(q) for q in (Q.Q2_K, Q.Q3_K, Q.Q4_K)}
    assert e[Q.Q4_K] < e[Q.Q3_K] < e[Q.Q2_K] < 0.5
    assert e[Q.Q3_K] < 0.25  # unit-variance weights
    assert K_QUANTIZERS[Q.Q2_K](g[:1, :256]).shape == (1, 84)
    assert K_QUANTIZERS[Q.Q3_K](g[:1, :256]).shape == (1, 110)


def _mix(scheme: Scheme, n_layers: int = 32, n_head_kv: int = 32) -> dict[str, Q]:
    names = ["token_embd.weight", "output.weight", "output_norm.weight"]
    for i in range(n_layers):
        names += [f"blk.{i}.{t}.weight" for t in ("attn_q", "attn_k", "attn_v", "attn_output",
                                                   "ffn_gate", "ffn_up", "ffn_down")]  # fmt: skip
    meta = {"general.architecture": "llama", "llama.block_count": n_layers,
            "llama.attention.head_count": 32, "llama.attention.head_count_kv": n_head_kv}  # fmt: skip
    planner = TypePlanner(scheme, meta, names)
    return {n: planner.choose(n, (4096,) if "norm" in n else (4096, 4096), Q.F16) for n in names}


def test_low_bit_mixes_follow_llama_cpp() -> None:
    q2 = _mix(Scheme.Q2_K)
    assert q2["blk.0.attn_q.weight"] == Q.Q2_K and q2["output.weight"] == Q.Q6_K
    assert q2["blk.3.attn_v.weight"] == Q.Q3_K and q2["blk.3.ffn_down.weight"] == Q.Q3_K
    assert q2["blk.3.attn_output.weight"] == Q.Q3_K
    assert _mix(Scheme.Q2_K, n_head_kv=8)["blk.3.attn_v.weight"] == Q.Q4_K  # GQA 4
    s = _mix(Scheme.Q3_K_S)
    assert {s[f"blk.{i}.{t}.weight"] for i in (0, 9) for t in ("attn_v", "ffn_down")} == {Q.Q3_K}
    m = _mix(Scheme.Q3_K_M)
    assert [m[f"blk.{i}.attn_v.weight"] for i in (0, 1, 2)] == [Q.Q5_K, Q.Q5_K, Q.Q4_K]
    assert [m[f"blk.{i}.ffn_down.weight"] for i in (0, 1, 2, 30)] == [Q.Q5_K, Q.Q5_K] + [Q.Q4_K] * 2
    assert m["blk.5.attn_output.weight"] == Q.Q4_K and m["blk.5.ffn_up.weight"] == Q.Q3_K
    big = _mix(Scheme.Q3_K_L)
    assert big["blk.5.attn_v.weight"] == big["blk.5.ffn_down.weight"] == Q.Q5_K
    assert big["blk.5.attn_output.weight"] == Q.Q5_K and big["blk.5.attn_k.weight"] == Q.Q3_K
    assert Scheme.parse("q3_k") is Scheme.Q3_K_M


def test_rows_not_a_multiple_of_256_fall_back_to_q4_0() -> None:
    meta = {"general.architecture": "llama", "llama.block_count": 1,
            "llama.attention.head_count": 4}  # fmt: skip
    planner = TypePlanner(Scheme.Q3_K_S, meta, ["blk.0.attn_q.weight"])
    assert planner.choose("blk.0.attn_q.weight", (576, 576), Q.F32) == Q.Q4_0


@pytest.fixture(scope="module")
def f32_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("q23") / "tiny-f32.gguf"
    return write_tiny(path, n_embd=256, n_ff=512, n_head=4, n_head_kv=2, n_layers=4)


TEXT = " ".join(["hello world, the quick fox jumps over the lazy dog again"] * 12)


def test_quantized_tiny_models_load_and_keep_their_perplexity(
    f32_model: Path, tmp_path: Path
) -> None:
    base = corral.load(f32_model)
    ppl = {"F32": perplexity(base, TEXT, 32).ppl}
    logits = base.logits(base.tokenize(TEXT)[:32])
    sizes, corr = {}, {}
    for scheme in (Scheme.Q3_K_M, Scheme.Q2_K):
        out = tmp_path / f"{scheme.name}.gguf"
        sizes[scheme] = quantize_file(f32_model, out, scheme).bytes_out
        with open_gguf(out) as g:
            types = {t.ggml_type for t in g.tensors.values()}
            assert Q[scheme.name[:4]] in types
        m = corral.load(out)
        ppl[scheme.name] = perplexity(m, TEXT, 32).ppl
        got = m.logits(m.tokenize(TEXT)[:32])
        corr[scheme] = np.corrcoef(got.ravel(), logits.ravel())[0, 1]
    assert sizes[Scheme.Q2_K] < sizes[Scheme.Q3_K_M]
    # the tiny random model is chaotic (see test_quantize_file): bounds per bit width, and
    # fewer bits must cost more (Q4_K_M scores about 0.76 here, Q3_K_M 0.54, Q2_K 0.27)
    assert corr[Scheme.Q3_K_M] > 0.45 and corr[Scheme.Q2_K] > 0.15, corr
    assert corr[Scheme.Q3_K_M] > corr[Scheme.Q2_K]
    # a random model's perplexity is near its vocabulary size; quantization may move it,
    # but not by more than a factor of about 2 (a broken block layout gives far more)
    for name in ("Q3_K_M", "Q2_K"):
        assert np.isfinite(ppl[name]) and abs(np.log(ppl[name] / ppl["F32"])) < 0.75, ppl


def test_cli_quantize_q3_k_m(f32_model: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "q3.gguf"
    assert main(["quantize", str(f32_model), str(out), "Q3_K_M", "--quiet"]) == 0
    assert "Q3_K" in capsys.readouterr().out
    corral.load(out)
