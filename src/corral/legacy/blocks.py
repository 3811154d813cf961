"""Old ggml block layouts -> today's GGUF tensor types.

What changed, by block era (see `format.Container.block_era`):

    era 1 (GGML, GGMF, GGJT v1)  Q4_0 {f32 d; qs[16]}, Q4_1 {f32 d; f32 m; qs[16]},
                                 Q5_0 {f16 d; u32 qh; qs[16]}, Q5_1 {f16 d; f16 m; qh; qs},
                                 Q8_0 {f32 d; i8 qs[32]}, Q4_2 {f16 d; qs[8]} (16 values),
                                 Q4_3 {f16 d; f16 m; qs[8]} (16 values).
                                 Nibbles interleaved: byte j holds values 2j (low) and 2j+1.
    era 2 (GGJT v2, PR #1405)    same structs; byte j holds values j (low) and j+16 (high),
                                 today's order. Q4_2 and Q4_3 gone.
    era 3 (GGJT v3, PR #1508)    Q4_0, Q4_1 and Q8_0 scales in f16: today's layouts, K-quants.

The 5th bits of Q5 (bit i of qh for value i) never moved. Conversion keeps the codes and
rounds f32 scales to f16 (what llama.cpp's own v3 format did; at most 2^-11 relative), so
Q4_0/Q4_1/Q5_x/Q8_0 stay in their type. Q4_2 becomes F16 (its values are exact in f16),
Q4_3 becomes F32. With `dequantize_all` every tensor is written as float instead.
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as Q

from corral.legacy.format import LegacyTensor, LegacyType

# old type -> today's type when the codes carry over
_SAME = {
    LegacyType.F32: Q.F32,
    LegacyType.F16: Q.F16,
    LegacyType.Q4_0: Q.Q4_0,
    LegacyType.Q4_1: Q.Q4_1,
    LegacyType.Q5_0: Q.Q5_0,
    LegacyType.Q5_1: Q.Q5_1,
    LegacyType.Q8_0: Q.Q8_0,
    LegacyType.Q2_K: Q.Q2_K,
    LegacyType.Q3_K: Q.Q3_K,
    LegacyType.Q4_K: Q.Q4_K,
    LegacyType.Q5_K: Q.Q5_K,
    LegacyType.Q6_K: Q.Q6_K,
}


def _f16_of_f32(raw: np.ndarray) -> np.ndarray:
    """uint8 [n, 4] little-endian f32 -> uint8 [n, 2] f16 (round to nearest even)."""
    return raw.copy().view(np.float32).astype(np.float16).view(np.uint8).reshape(-1, 2)


def _codes_interleaved(qs: np.ndarray) -> np.ndarray:
    """Era-1 nibbles uint8 [n, k] -> codes [n, 2k]: value 2j low nibble, 2j+1 high."""
    return np.stack((qs & 0x0F, qs >> 4), axis=-1).reshape(qs.shape[0], -1)


def _codes_split(qs: np.ndarray) -> np.ndarray:
    """Era-2/3 nibbles uint8 [n, k] -> codes [n, 2k]: value j low nibble, j+k high."""
    return np.concatenate((qs & 0x0F, qs >> 4), axis=1)


def _pack_split(codes: np.ndarray) -> np.ndarray:
    """codes [n, 2k] (4 bits used) -> today's nibbles [n, k]."""
    k = codes.shape[1] // 2
    return (codes[:, :k] & 0x0F) | ((codes[:, k:] & 0x0F) << 4)


def target_type(t: LegacyTensor) -> Q:
    """The GGUF type a tensor is migrated to (without dequantize_all)."""
    if t.type == LegacyType.Q4_2:
        return Q.F16
    if t.type == LegacyType.Q4_3:
        return Q.F32
    return _SAME[t.type]


def dequantize_16(t: LegacyTensor) -> np.ndarray:
    """Q4_2 / Q4_3 (era 1, 16-value blocks) -> float32 values [n_elements]."""
    size = 10 if t.type == LegacyType.Q4_2 else 12
    b = t.data.reshape(-1, size)
    d = b[:, 0:2].copy().view(np.float16).astype(np.float32)  # [n, 1]
    codes = _codes_interleaved(b[:, size - 8 :]).astype(np.float32)  # [n, 16]
    if t.type == LegacyType.Q4_2:
        return ((codes - 8) * d).reshape(-1)
    m = b[:, 2:4].copy().view(np.float16).astype(np.float32)
    return (codes * d + m).reshape(-1)


def convert(t: LegacyTensor, era: int) -> np.ndarray:
    """A tensor's data in `target_type(t)`: uint8 blocks [rows, row_bytes] for quantized
    types, float arrays of the tensor's shape otherwise."""
    ty, raw, shape = t.type, t.data, t.shape
    if ty == LegacyType.F32:
        return raw.view(np.float32).reshape(shape)
    if ty == LegacyType.F16:
        return raw.view(np.float16).reshape(shape)
    if ty in (LegacyType.Q4_2, LegacyType.Q4_3):
        values = dequantize_16(t).reshape(shape)
        return values.astype(np.float16) if ty == LegacyType.Q4_2 else values
    rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    q5 = ty in (LegacyType.Q5_0, LegacyType.Q5_1)
    if era == 3 or (q5 and era == 2) or ty.name.endswith("_K"):
        return np.ascontiguousarray(raw).reshape(rows, -1)  # already today's layout
    unpack = _codes_interleaved if era == 1 else _codes_split
    if ty == LegacyType.Q4_0:
        b = raw.reshape(-1, 20)
        out = np.concatenate([_f16_of_f32(b[:, 0:4]), _pack_split(unpack(b[:, 4:20]))], axis=1)
    elif ty == LegacyType.Q4_1:
        b = raw.reshape(-1, 24)
        scales = [_f16_of_f32(b[:, 0:4]), _f16_of_f32(b[:, 4:8])]
        out = np.concatenate([*scales, _pack_split(unpack(b[:, 8:24]))], axis=1)
    elif ty == LegacyType.Q8_0:
        b = raw.reshape(-1, 36)
        out = np.concatenate([_f16_of_f32(b[:, 0:4]), b[:, 4:36]], axis=1)
    elif ty in (LegacyType.Q5_0, LegacyType.Q5_1):  # era 1: only the nibble order differs
        head = 6 if ty == LegacyType.Q5_0 else 8
        b = raw.reshape(-1, head + 16)
        out = np.concatenate([b[:, :head], _pack_split(unpack(b[:, head:]))], axis=1)
    else:  # pragma: no cover - every LegacyType is handled above
        raise AssertionError(ty)
    return np.ascontiguousarray(out).reshape(rows, -1)


def to_float32(t: LegacyTensor, era: int) -> np.ndarray:
    """Any tensor -> float32 of its shape (for --outtype f32/f16)."""
    from corral.quant import dequantize

    data = convert(t, era)
    qtype = target_type(t)
    if qtype in (Q.F32, Q.F16):
        return data.astype(np.float32)
    return dequantize(data, qtype, t.shape).numpy()
