"""`corral migrate`: legacy GGML/GGMF/GGJT llama files -> GGUF with the same weights."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from legacy_files import TinyLlama, era_of, vocab, write_gguf, write_legacy

import corral
from corral.cli.main import main
from corral.errors import CorralError, GGUFError, UnsupportedError
from corral.gguf.reader import open_gguf
from corral.legacy import Container, OutType, migrate, read_legacy

PROMPT = "hello world the quick fox"

# (magic, version, weight kind): every container with the quant types of its era
CASES = [
    ("ggml", 0, "F32"),
    ("ggml", 0, "Q4_0"),
    ("ggmf", 1, "F16"),
    ("ggmf", 1, "Q4_1"),
    ("ggjt", 1, "Q4_0"),
    ("ggjt", 1, "Q4_1"),
    ("ggjt", 1, "Q4_2"),
    ("ggjt", 1, "Q4_3"),
    ("ggjt", 1, "Q5_0"),
    ("ggjt", 1, "Q5_1"),
    ("ggjt", 1, "Q8_0"),
    ("ggjt", 2, "Q4_0"),
    ("ggjt", 2, "Q4_1"),
    ("ggjt", 2, "Q5_1"),
    ("ggjt", 2, "Q8_0"),
    ("ggjt", 3, "Q4_0"),
    ("ggjt", 3, "Q4_1"),
    ("ggjt", 3, "Q8_0"),
    ("ggjt", 3, "Q4_K"),
    ("ggjt", 3, "Q6_K"),
]


def _model(kind: str) -> TinyLlama:
    if kind.endswith("_K"):  # K-quant rows are whole 256-value super-blocks
        return TinyLlama(n_embd=256, n_ff=512, kind=kind)
    return TinyLlama(kind=kind)


@pytest.mark.parametrize(("magic", "version", "kind"), CASES)
def test_migrated_file_matches_the_same_weights_written_as_gguf(
    magic: str, version: int, kind: str, tmp_path: Path
) -> None:
    model = _model(kind)
    old = write_legacy(tmp_path / "old.bin", model, magic, version)
    ref = write_gguf(tmp_path / "ref.gguf", model, era_of(magic, version), ranked=magic == "ggml")
    new = tmp_path / "new.gguf"
    report = migrate(old, new)
    assert report.n_tensors == 3 + 9 * model.n_layer
    with open_gguf(ref) as a, open_gguf(new) as b:
        assert list(sorted(a.tensors)) == list(sorted(b.tensors))
        for name, t in a.tensors.items():
            u = b.tensors[name]
            assert (u.ggml_type, u.shape) == (t.ggml_type, t.shape), name
            np.testing.assert_array_equal(np.asarray(u.data), np.asarray(t.data), err_msg=name)
        for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type"):
            assert list(b.metadata[key]) == list(a.metadata[key])
        np.testing.assert_array_equal(
            b.metadata["tokenizer.ggml.scores"], a.metadata["tokenizer.ggml.scores"]
        )
    m_ref, m_new = corral.load(ref), corral.load(new)
    ids = m_new.tokenize(PROMPT)
    assert ids == m_ref.tokenize(PROMPT) and ids[0] == 1  # BOS, as llama adds it
    np.testing.assert_array_equal(m_new.logits(ids), m_ref.logits(ids))


def test_reader_sees_the_header_vocab_and_tensors(tmp_path: Path) -> None:
    model = TinyLlama(kind="Q4_0")
    old = write_legacy(tmp_path / "m.bin", model, "ggjt", 1)
    lm = read_legacy(old)
    assert lm.container is Container.GGJT_V1
    assert (lm.hparams.n_vocab, lm.hparams.n_embd, lm.hparams.n_layer) == (len(vocab()), 64, 2)
    assert lm.vocab[260] == (b" world", -2.0) and lm.vocab[65] == (b"\x3e", 0.0)
    t = lm.tensors["layers.1.feed_forward.w2.weight"]
    assert t.ne == (128, 64) and t.shape == (64, 128) and t.type.name == "Q4_0"


def test_gqa_heads_come_from_the_tensor_shapes(tmp_path: Path) -> None:
    model = TinyLlama(n_head=4, n_head_kv=2, kind="F16")
    old = write_legacy(tmp_path / "gqa.bin", model, "ggjt", 3)
    ref = write_gguf(tmp_path / "ref.gguf", model, 3)
    migrate(old, tmp_path / "gqa.gguf")
    with open_gguf(tmp_path / "gqa.gguf") as g:
        assert g.metadata["llama.attention.head_count_kv"] == 2
        assert g.metadata["llama.feed_forward_length"] == 128
    a, b = corral.load(ref), corral.load(tmp_path / "gqa.gguf")
    ids = a.tokenize(PROMPT)
    np.testing.assert_array_equal(a.logits(ids), b.logits(ids))


def test_f32_scales_that_f16_cannot_hold_are_rounded(tmp_path: Path) -> None:
    model = TinyLlama(kind="Q8_0")
    old = write_legacy(tmp_path / "m.bin", model, "ggjt", 2)
    raw = bytearray(old.read_bytes())
    # nudge the f32 scales of the first blocks off the f16 grid: 1 + 2^-20 relative
    first = raw.find(b"tok_embeddings.weight") + len(b"tok_embeddings.weight")
    first += -first & 31
    for off in range(first, first + 36 * 8, 36):
        (d,) = struct.unpack_from("<f", raw, off)
        struct.pack_into("<f", raw, off, d * (1 + 2**-20))
    old.write_bytes(bytes(raw))
    migrate(old, tmp_path / "m.gguf")
    ref = write_gguf(tmp_path / "ref.gguf", model, 2)
    a, b = corral.load(ref), corral.load(tmp_path / "m.gguf")
    ids = a.tokenize(PROMPT)
    np.testing.assert_allclose(b.logits(ids), a.logits(ids), rtol=1e-3, atol=1e-3)


def test_outtype_f16_dequantizes(tmp_path: Path) -> None:
    model = TinyLlama(kind="Q4_1")
    old = write_legacy(tmp_path / "m.bin", model, "ggjt", 1)
    migrate(old, tmp_path / "f16.gguf", OutType.F16)
    with open_gguf(tmp_path / "f16.gguf") as g:
        types = {t.ggml_type.name for t in g.tensors.values()}
    assert types == {"F16", "F32"}  # norms stay F32
    ref = write_gguf(tmp_path / "ref.gguf", model, 1)
    a, b = corral.load(ref), corral.load(tmp_path / "f16.gguf")
    ids = a.tokenize(PROMPT)
    np.testing.assert_allclose(b.logits(ids), a.logits(ids), rtol=2e-2, atol=2e-2)


def test_load_points_at_migrate(tmp_path: Path) -> None:
    old = write_legacy(tmp_path / "m.bin", TinyLlama(), "ggjt", 3)
    with pytest.raises(CorralError, match="corral migrate"):
        corral.load(old)


def test_cli_migrate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = write_legacy(tmp_path / "alpaca.bin", TinyLlama(kind="Q4_0"), "ggmf", 1)
    assert main(["migrate", str(old)]) == 0
    out = capsys.readouterr().out
    assert "GGMFv1" in out and "F32: 5, Q4_0: 16" in out
    assert (tmp_path / "alpaca.gguf").exists()
    corral.load(tmp_path / "alpaca.gguf")


# -- bad input ----------------------------------------------------------------------------


def _error(tmp_path: Path, data: bytes, capsys: pytest.CaptureFixture[str]) -> str:
    bad = tmp_path / "bad.bin"
    bad.write_bytes(data)
    out = tmp_path / "bad.gguf"
    assert main(["migrate", str(bad), "-o", str(out)]) == 1
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["bad.bin"]
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: ") and "\n" not in err
    return err


def test_truncated_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write_legacy(tmp_path / "good.bin", TinyLlama(kind="Q4_0"), "ggjt", 1).read_bytes()
    (tmp_path / "good.bin").unlink()
    err = _error(tmp_path, good[: len(good) - 100], capsys)
    assert "truncated or corrupt" in err and "runs past the end" in err
    err = _error(tmp_path, good[:40], capsys)
    assert "truncated or corrupt" in err


def test_unknown_magic_and_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "GGJT version 7" in _error(tmp_path, b"tjgg" + struct.pack("<I", 7) + b"\0" * 64, capsys)
    assert "not a legacy GGML" in _error(tmp_path, b"abcd" + b"\0" * 64, capsys)
    assert "too short" in _error(tmp_path, b"tjgg", capsys)


def test_garbage_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = b"tjgg" + struct.pack("<I", 3) + struct.pack("<7I", 0xFFFFFFF, 3, 7, 0, 1, 1, 2)
    assert "implausible hyper-parameters" in _error(tmp_path, data + b"\0" * 64, capsys)


def test_unknown_tensor_type(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = bytearray(write_legacy(tmp_path / "g.bin", TinyLlama(), "ggjt", 3).read_bytes())
    (tmp_path / "g.bin").unlink()
    at = good.find(b"tok_embeddings.weight") - 4 * 2 - 4  # ne[2] then the type field
    struct.pack_into("<I", good, at, 23)
    assert "unknown ggml type id 23" in _error(tmp_path, bytes(good), capsys)


def test_k_quant_in_an_old_container(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = bytearray(write_legacy(tmp_path / "g.bin", TinyLlama(), "ggjt", 1).read_bytes())
    (tmp_path / "g.bin").unlink()
    at = good.find(b"tok_embeddings.weight") - 4 * 2 - 4
    struct.pack_into("<I", good, at, 12)  # Q4_K did not exist before GGJT v3
    assert "Q4_K, which GGJTv1 files cannot hold" in _error(tmp_path, bytes(good), capsys)


def test_not_a_llama_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write_legacy(tmp_path / "g.bin", TinyLlama(), "ggjt", 3).read_bytes()
    (tmp_path / "g.bin").unlink()
    # same length, another name: a GPT-J style embedding
    data = good.replace(b"tok_embeddings.weight", b"transformer.wte.wght!")
    err = _error(tmp_path, data, capsys)
    assert "'transformer.wte.wght!' is not part of a llama model" in err


def test_extra_and_missing_tensors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write_legacy(tmp_path / "g.bin", TinyLlama(), "ggjt", 3).read_bytes()
    (tmp_path / "g.bin").unlink()
    data = good.replace(b"layers.1.ffn_norm.weight", b"layers.7.ffn_norm.weight")
    assert "'layers.7.ffn_norm.weight' is not part of a llama model" in _error(
        tmp_path, data, capsys
    )
    skip = {"layers.1.ffn_norm.weight", "output.weight"}
    data = write_legacy(tmp_path / "g.bin", TinyLlama(), "ggjt", 3, skip=skip).read_bytes()
    (tmp_path / "g.bin").unlink()
    err = _error(tmp_path, data, capsys)
    assert "missing tensors output.weight, blk.1.ffn_norm.weight" in err


def test_unsupported_error_types_are_corral_errors() -> None:
    assert issubclass(UnsupportedError, CorralError) and issubclass(GGUFError, CorralError)
