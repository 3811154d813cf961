"""Dequantization kernels against gguf-py's reference numpy implementation (gguf.quants)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quants

import corral.quant as cq
from corral.errors import UnsupportedError
from corral.gguf import TensorInfo, open_gguf
from corral.quant import SUPPORTED_TYPES, dequantize, dequantize_rows, is_supported

T = GGMLQuantizationType
# Byte offsets of each block's f16 fields (scales, mins): set to finite values in the tests.
F16_FIELDS: dict[GGMLQuantizationType, tuple[int, ...]] = {
    T.F16: (0,),
    T.Q4_0: (0,),
    T.Q4_1: (0, 2),
    T.Q5_0: (0,),
    T.Q5_1: (0, 2),
    T.Q8_0: (0,),
    T.Q2_K: (80, 82),
    T.Q3_K: (108,),
    T.Q4_K: (0, 2),
    T.Q5_K: (0, 2),
    T.Q6_K: (208,),
}
# A byte holding (part of) a per-block or per-sub-block scale, for the corruption test.
SCALE_BYTE: dict[GGMLQuantizationType, int] = {
    T.Q4_0: 1,  # high byte of d
    T.Q4_1: 1,
    T.Q5_0: 1,
    T.Q5_1: 1,
    T.Q8_0: 1,
    T.Q2_K: 0,  # sub-block 0's 4-bit scale
    T.Q3_K: 96,  # low nibble of sub-block 0's 6-bit scale
    T.Q4_K: 4,  # sub-block 0's 6-bit scale
    T.Q5_K: 8,  # sub-block 0's 6-bit min
    T.Q6_K: 192,  # sub-block 0's int8 scale
}
QUANTIZED = [t for t in SUPPORTED_TYPES if t in SCALE_BYTE]


def random_tensor(
    qtype: GGMLQuantizationType, rows: int, blocks_per_row: int, seed: int = 0
) -> tuple[np.ndarray, tuple[int, int]]:
    """Raw bytes uint8 [rows, row_bytes] of random blocks with finite f16 fields; and shape."""
    rng = np.random.default_rng(seed)
    block, type_size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (rows, blocks_per_row * type_size), dtype=np.uint8)
    blocks = raw.reshape(-1, type_size)
    if qtype == T.F32:
        blocks[:] = rng.standard_normal((len(blocks), 1)).astype(np.float32).view(np.uint8)
    for off in F16_FIELDS.get(qtype, ()):
        values = rng.uniform(-2.0, 2.0, (len(blocks), 1)).astype(np.float16)
        blocks[:, off : off + 2] = values.view(np.uint8)
    # BF16: any bit pattern with a finite exponent is sane; clear one exponent bit
    if qtype == T.BF16:
        blocks[:, 1] &= 0xBF
    return raw, (rows, blocks_per_row * block)


def reference(raw: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    """gguf-py's dequantization of raw bytes [rows, row_bytes] -> float32 [rows, row]."""
    if qtype == T.F32:
        return raw.view(np.float32).copy()
    if qtype == T.F16:
        return raw.view(np.float16).astype(np.float32)
    return np.asarray(quants.dequantize(raw, qtype), dtype=np.float32)


def assert_close(ours: torch.Tensor, ref: np.ndarray) -> None:
    assert ours.dtype == torch.float32
    assert tuple(ours.shape) == ref.shape
    assert np.isfinite(ref).all()
    diff = np.abs(ours.numpy() - ref).max(initial=0.0)
    assert diff <= 1e-6 * np.abs(ref).max(initial=0.0)


@pytest.mark.parametrize("qtype", SUPPORTED_TYPES, ids=lambda t: t.name)
def test_matches_reference(qtype: GGMLQuantizationType) -> None:
    raw, shape = random_tensor(qtype, rows=5, blocks_per_row=3)
    assert_close(dequantize(raw, qtype, shape), reference(raw, qtype))


@pytest.mark.parametrize("qtype", [T.Q4_1, T.Q5_0, T.Q3_K, T.Q6_K], ids=lambda t: t.name)
def test_chunked_matches_whole(
    qtype: GGMLQuantizationType, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw, shape = random_tensor(qtype, rows=7, blocks_per_row=4, seed=1)
    whole = dequantize(raw, qtype, shape)
    # chunks of 3 blocks: boundaries fall mid-row and the last chunk is short
    monkeypatch.setattr(cq, "CHUNK_ELEMENTS", 3 * GGML_QUANT_SIZES[qtype][0])
    assert torch.equal(dequantize(raw, qtype, shape), whole)


def test_typed_float_arrays() -> None:
    x = np.random.default_rng(2).standard_normal((4, 6)).astype(np.float32)
    out = dequantize(x, T.F32, x.shape)
    assert torch.equal(out, torch.from_numpy(x))
    out[0, 0] = 123.0  # a copy, not a view of the caller's array
    assert x[0, 0] != 123.0
    half = x.astype(np.float16)
    assert torch.equal(dequantize(half, T.F16, (4, 6)), torch.from_numpy(half.astype(np.float32)))
    assert tuple(dequantize(half[0], T.F16, (6,)).shape) == (6,)


def test_shapes_and_read_only_input() -> None:
    raw, (rows, row) = random_tensor(T.Q4_K, rows=6, blocks_per_row=2)
    raw.flags.writeable = False  # like a memory map opened read-only
    before = raw.copy()
    flat = dequantize(raw.reshape(-1), T.Q4_K, (rows, row))
    assert_close(flat, reference(raw, T.Q4_K))
    assert tuple(dequantize(raw, T.Q4_K, (2, 3, row)).shape) == (2, 3, row)
    assert np.array_equal(raw, before)


@pytest.mark.parametrize("qtype", [T.F32, T.Q8_0, T.Q5_1, T.Q2_K], ids=lambda t: t.name)
def test_dequantize_rows(qtype: GGMLQuantizationType) -> None:
    raw, shape = random_tensor(qtype, rows=9, blocks_per_row=2, seed=3)
    full = dequantize(raw, qtype, shape)
    picked = torch.tensor([7, 0, 7, 3])
    assert torch.equal(dequantize_rows(raw, qtype, shape, picked), full[picked])
    grid = torch.tensor([[1, 2, 3], [8, 8, 0]])  # [batch, seq] of token ids
    out = dequantize_rows(raw, qtype, shape, grid)
    assert tuple(out.shape) == (2, 3, shape[1])
    assert torch.equal(out, full[grid])
    assert dequantize_rows(raw, qtype, shape, torch.tensor([], dtype=torch.long)).shape[0] == 0
    with pytest.raises(IndexError):
        dequantize_rows(raw, qtype, shape, torch.tensor([9]))


def test_unsupported_type() -> None:
    raw = np.zeros(66, dtype=np.uint8)
    with pytest.raises(UnsupportedError) as err:
        dequantize(raw, T.IQ2_XXS, (256,))
    msg = str(err.value)
    assert "IQ2_XXS" in msg and "Q4_K" in msg and "\n" not in msg
    assert not is_supported(T.IQ2_XXS) and not is_supported(9999)
    assert all(is_supported(t) for t in SUPPORTED_TYPES)
    assert is_supported(int(T.Q8_0))
    with pytest.raises(UnsupportedError, match="9999"):
        dequantize(raw, 9999, (256,))


def test_wrong_sizes_are_rejected() -> None:
    raw, shape = random_tensor(T.Q4_0, rows=2, blocks_per_row=2)
    with pytest.raises(ValueError, match="needs 72 bytes"):
        dequantize(raw[:, :-1], T.Q4_0, shape)
    with pytest.raises(ValueError, match="whole number"):
        dequantize(raw, T.Q4_0, (2, 48))


@pytest.mark.parametrize("qtype", QUANTIZED, ids=lambda t: t.name)
def test_corrupt_scale_changes_output(qtype: GGMLQuantizationType) -> None:
    raw, shape = random_tensor(qtype, rows=2, blocks_per_row=2, seed=4)
    good = dequantize(raw, qtype, shape)
    bad = raw.copy()
    bad[1, SCALE_BYTE[qtype]] ^= 0x01  # first block of row 1
    changed = dequantize(bad, qtype, shape) != good  # [rows, row]
    block = GGML_QUANT_SIZES[qtype][0]
    assert changed[1, :block].any()  # the corrupted block moved...
    assert not changed[0].any() and not changed[1, block:].any()  # ...and nothing else did


@pytest.mark.realmodel
@pytest.mark.parametrize("model", ["smollm2", "gemma3"])
def test_real_tensors(model: str, request: pytest.FixtureRequest) -> None:
    """One tensor of each type in the real files, against gguf-py; plus an embedding lookup."""
    path = request.getfixturevalue(f"{model}_path")
    g = open_gguf(path)
    smallest: dict[GGMLQuantizationType, TensorInfo] = {}
    for t in g.tensors.values():
        if t.ggml_type not in smallest or t.n_elements < smallest[t.ggml_type].n_elements:
            smallest[t.ggml_type] = t
    want = {"smollm2": {T.F32, T.Q4_1, T.Q8_0}, "gemma3": {T.F32, T.Q8_0, T.Q5_0, T.Q4_K, T.Q6_K}}
    assert want[model] <= set(smallest)
    for t in smallest.values():
        assert_close(dequantize(t.data, t.ggml_type, t.shape), reference(t.data, t.ggml_type))
    emb = g.tensors["token_embd.weight"]
    ids = torch.tensor([0, 1, 2, emb.shape[0] - 1, 1000])
    ref = reference(np.ascontiguousarray(emb.data[ids.numpy()]), emb.ggml_type)
    assert_close(dequantize_rows(emb.data, emb.ggml_type, emb.shape, ids), ref)
