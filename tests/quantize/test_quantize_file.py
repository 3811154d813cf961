"""`corral quantize`: type mixes as llama.cpp assigns them, metadata kept, models that load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import LlamaFileType

import corral
from corral.cli.main import main
from corral.errors import CorralError
from corral.gguf.reader import open_gguf
from corral.quant import dequantize
from corral.quantize import file as qfile
from corral.quantize.file import plan, quantize_file
from corral.quantize.mix import Scheme, TypePlanner, use_more_bits
from tiny_gguf import write_tiny

PROMPT = "hello world, hello world again and again"


@pytest.fixture(scope="module")
def f32_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 256-wide rows so that the K types apply without falling back
    path = tmp_path_factory.mktemp("q") / "tiny-f32.gguf"
    return write_tiny(path, n_embd=256, n_ff=512, n_head=4, n_head_kv=2, n_layers=4)


@pytest.fixture(scope="module")
def f32_logits(f32_model: Path) -> np.ndarray:
    m = corral.load(f32_model)
    return m.logits(m.tokenize(PROMPT))


# The tiny random model is chaotic (each layer multiplies errors), so its logits are compared
# by correlation with the F32 model's, and each weight by its relative error, per bit width.
BOUNDS = {  # scheme: (min logit correlation, max relative weight RMSE)
    "F16": (0.9999, 0.001), "Q8_0": (0.99, 0.01), "Q6_K": (0.95, 0.025),
    "Q5_K_M": (0.9, 0.05), "Q5_1": (0.9, 0.05), "Q5_0": (0.9, 0.05),
    "Q4_K_M": (0.7, 0.1), "Q4_1": (0.7, 0.1), "Q4_0": (0.6, 0.11),
}  # fmt: skip


@pytest.mark.parametrize("scheme", list(BOUNDS))
def test_quantized_model_loads_and_stays_close(
    scheme: str, f32_model: Path, f32_logits: np.ndarray, tmp_path: Path
) -> None:
    out = tmp_path / f"{scheme}.gguf"
    report = quantize_file(f32_model, out, Scheme[scheme])
    assert out.stat().st_size == report.file_bytes_out
    assert report.bytes_out < report.bytes_in
    m = corral.load(out)
    logits = m.logits(m.tokenize(PROMPT))
    min_corr, max_rel = BOUNDS[scheme]
    assert np.corrcoef(logits.ravel(), f32_logits.ravel())[0, 1] > min_corr
    with open_gguf(f32_model) as a, open_gguf(out) as b:
        for name, t in b.tensors.items():
            w = dequantize(t.data, t.ggml_type, t.shape).numpy()
            w0 = a.tensors[name].data
            assert np.sqrt(np.mean((w - w0) ** 2) / np.mean(w0**2)) < max_rel, name
        assert b.metadata["general.file_type"] == Scheme[scheme].value
        assert b.metadata["general.quantization_version"] == 2
        for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.chat_template"):
            assert (
                list(b.metadata[key]) == list(a.metadata[key]) or b.metadata[key] == a.metadata[key]
            )
        assert b.metadata["llama.block_count"] == a.metadata["llama.block_count"]
        assert list(b.tensors) == list(a.tensors)
        for t in b.tensors.values():
            if len(t.shape) == 1:
                assert t.ggml_type == Q.F32  # norms are never quantized


def test_more_bits_layers_follow_llama_cpp() -> None:
    # Llama-2-7B Q4_K_M: attn_v / ffn_down in Q6_K on these 16 of 32 layers
    more = [i for i in range(32) if use_more_bits(i, 32)]
    assert more == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]


def _names(n_layers: int, tied: bool = False) -> list[str]:
    names = ["token_embd.weight"] + ([] if tied else ["output.weight"]) + ["output_norm.weight"]
    for i in range(n_layers):
        names += [f"blk.{i}.{t}.weight" for t in
                  ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm",
                   "ffn_gate", "ffn_up", "ffn_down")]  # fmt: skip
    return names


def _mix(scheme: Scheme, n_layers: int, cols: int, tied: bool = False) -> dict[str, Q]:
    names = _names(n_layers, tied)
    meta = {"general.architecture": "llama", "llama.block_count": n_layers,
            "llama.attention.head_count": 32, "llama.attention.head_count_kv": 32}  # fmt: skip
    planner = TypePlanner(scheme, meta, names)
    return {n: planner.choose(n, (cols,) if "norm" in n else (cols, cols), Q.F16) for n in names}


def test_q4_k_m_mix_on_a_32_layer_model() -> None:
    mix = _mix(Scheme.Q4_K_M, 32, 4096)
    assert mix["output.weight"] == Q.Q6_K
    assert mix["token_embd.weight"] == Q.Q4_K
    assert mix["blk.0.attn_v.weight"] == Q.Q6_K and mix["blk.4.attn_v.weight"] == Q.Q4_K
    assert mix["blk.6.ffn_down.weight"] == Q.Q6_K and mix["blk.7.ffn_down.weight"] == Q.Q4_K
    assert mix["blk.5.attn_q.weight"] == Q.Q4_K and mix["blk.5.ffn_up.weight"] == Q.Q4_K
    assert mix["blk.5.attn_norm.weight"] == Q.F16  # 1-D: left as it is
    assert sum(t == Q.Q6_K for t in mix.values()) == 1 + 16 + 16


def test_q5_k_m_and_q6_k_and_q8_0_mixes() -> None:
    q5 = _mix(Scheme.Q5_K_M, 32, 4096)
    assert q5["blk.31.attn_v.weight"] == Q.Q6_K and q5["blk.4.attn_v.weight"] == Q.Q5_K
    assert all(t == Q.Q6_K for n, t in _mix(Scheme.Q6_K, 8, 4096).items() if "norm" not in n)
    q8 = _mix(Scheme.Q8_0, 8, 4096)
    assert q8["output.weight"] == Q.Q8_0 and q8["blk.0.attn_v.weight"] == Q.Q8_0
    q40 = _mix(Scheme.Q4_0, 8, 4096)
    assert q40["output.weight"] == Q.Q6_K and q40["blk.0.ffn_down.weight"] == Q.Q4_0


def test_rows_not_a_multiple_of_256_fall_back_like_llama_cpp() -> None:
    mix = _mix(Scheme.Q4_K_M, 8, 576, tied=True)  # SmolLM2-135M's width
    assert mix["token_embd.weight"] == Q.Q8_0  # tied output head: Q6_K would not fit
    assert mix["blk.1.attn_q.weight"] == Q.Q5_0  # Q4_K -> Q5_0
    assert mix["blk.0.attn_v.weight"] == Q.Q8_0  # Q6_K -> Q8_0
    assert _mix(Scheme.Q5_K_M, 8, 576)["blk.1.attn_q.weight"] == Q.Q5_1


def test_requantizing_needs_the_flag(f32_model: Path, tmp_path: Path) -> None:
    q8 = tmp_path / "q8.gguf"
    quantize_file(f32_model, q8, Scheme.Q8_0)
    out = tmp_path / "q4.gguf"
    with pytest.raises(CorralError, match="already Q8_0.*--allow-requantize"):
        quantize_file(q8, out, Scheme.Q4_0)
    assert not out.exists()
    quantize_file(q8, out, Scheme.Q4_0, allow_requantize=True)
    corral.load(out)


def test_failure_midway_leaves_no_file(
    f32_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def boom(t, qtype):  # type: ignore[no-untyped-def]
        calls.append(t.name)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(t, qtype)

    real = qfile.convert_tensor
    monkeypatch.setattr(qfile, "convert_tensor", boom)
    out = tmp_path / "half.gguf"
    with pytest.raises(KeyboardInterrupt):
        quantize_file(f32_model, out, Scheme.Q8_0)
    assert list(tmp_path.iterdir()) == []


def test_plan_is_a_dry_run(f32_model: Path) -> None:
    changes = plan(f32_model, Scheme.Q4_K_M)
    assert {c.dst for c in changes} == {Q.F32, Q.Q4_K, Q.Q6_K}


def test_cli_quantize_reports_sizes(
    f32_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "q.gguf"
    assert main(["quantize", str(f32_model), str(out), "q4_k_m", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "quant size" in text and "BPW" in text and "Q6_K: 5" in text
    with open_gguf(out) as g:
        assert g.metadata["general.file_type"] == LlamaFileType.MOSTLY_Q4_K_M


def test_cli_unknown_type_is_one_line(
    f32_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["quantize", str(f32_model), str(tmp_path / "x.gguf"), "Q3_XL"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: unknown quantization type 'Q3_XL' (known: Q4_0")
    assert "\n" not in err
    assert not (tmp_path / "x.gguf").exists()


def test_cli_bad_input_files_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 20)
    assert main(["quantize", str(junk), str(tmp_path / "o.gguf"), "Q8_0"]) == 1
    assert main(["quantize", str(tmp_path / "missing.gguf"), str(tmp_path / "o.gguf"), "Q8_0"]) == 1
    errs = capsys.readouterr().err.strip().splitlines()
    assert len(errs) == 2 and all(e.startswith("Error: ") for e in errs)
    assert "no such file" in errs[1]
    assert not (tmp_path / "o.gguf").exists()


@pytest.mark.realmodel
def test_requantizing_smollm2_q4_1_reproduces_llama_cpp_blocks(smollm2_path: Path) -> None:
    # SmolLM2's Q4_1 blocks were made by llama.cpp's quantizer: dequantized and quantized
    # again they come back byte for byte (the same reference arithmetic, same rounding)
    with open_gguf(smollm2_path) as g:
        q41 = [t for t in g.tensors.values() if t.ggml_type == Q.Q4_1][:12]
        assert q41
        for t in q41:
            f32 = dequantize(t.data, t.ggml_type, t.shape).numpy()
            again = qfile.quantize_rows(f32.reshape(-1, t.shape[-1]), Q.Q4_1)
            np.testing.assert_array_equal(again.reshape(t.data.shape), t.data, err_msg=t.name)


def test_custom_alignment_and_adapters_as_input(tmp_path: Path) -> None:
    import gguf

    src = tmp_path / "aligned.gguf"
    w = gguf.GGUFWriter(str(src), "llama")
    w.add_custom_alignment(64)
    w.add_tensor("blk.0.ffn_up.weight", np.ones((4, 64), dtype=np.float32))
    w.add_tensor("blk.0.ffn_norm.weight", np.ones(64, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    out = tmp_path / "q.gguf"
    quantize_file(src, out, Scheme.Q8_0)
    with open_gguf(out) as g:
        assert g.metadata["general.alignment"] == 64
        t = g.tensors["blk.0.ffn_up.weight"]
        np.testing.assert_allclose(dequantize(t.data, t.ggml_type, t.shape).numpy(), 1.0, atol=1e-3)
    adapter = tmp_path / "lora.gguf"
    w = gguf.GGUFWriter(str(adapter), "llama")
    w.add_type("adapter")
    w.add_tensor("blk.0.ffn_up.weight.lora_a", np.ones((2, 64), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(CorralError, match="is a LoRA adapter, not a model"):
        quantize_file(adapter, tmp_path / "x.gguf", Scheme.Q8_0)
