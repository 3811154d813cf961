"""The k-quant super-block formats: Q2_K, Q3_K, Q4_K, Q5_K and Q6_K (256 elements a block).

A super-block is split into sub-blocks (16 of 16 elements for Q2/Q3/Q6, 8 of 32 for Q4/Q5),
each with its own small integer scale (and, for Q2/Q4/Q5, minimum) that multiplies the
block's f16 `d` (and `dmin`). Element values are `d * sc * q - dmin * m`, computed as
ggml does: (d * sc) * q - (dmin * m), each product rounded to float32.

The codes are laid out in 32-byte strips: one strip of bytes feeds 2 (4-bit), 4 (2-bit)
or 8 (1-bit) consecutive 32-element runs, one bit-field each, lowest bits first.
"""

from __future__ import annotations

import torch

from corral.gguf.consts import GGMLQuantizationType
from corral.quant.base import QuantFormat, bit_planes, f16_field, nibbles


def _scale_min_6bit(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 12-byte scale field of Q4_K/Q5_K -> (scales, mins), uint8 [n, 8] each, 6 bits.

    Bytes 0-3 hold scales 0-3 in their low 6 bits, bytes 4-7 mins 0-3; scales and mins
    4-7 take their low 4 bits from bytes 8-11 (low / high nibble) and their top 2 bits
    from the spare top bits of bytes 0-3 (scales) and 4-7 (mins).
    """
    lo_sc, lo_m, extra = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]  # [n, 4] each
    hi_sc = (extra & 0x0F) | ((lo_sc >> 6) << 4)
    hi_m = (extra >> 4) | ((lo_m >> 6) << 4)
    return torch.cat((lo_sc & 0x3F, hi_sc), dim=1), torch.cat((lo_m & 0x3F, hi_m), dim=1)


def _scale_6bit_q3(packed: torch.Tensor) -> torch.Tensor:
    """The 12-byte scale field of Q3_K -> uint8 [n, 16] 6-bit scales (still offset by 32).

    Scale i takes its low 4 bits from byte i % 8 (low nibble for i < 8, high for i >= 8)
    and its top 2 bits from byte 8 + i % 4, bits 2 * (i // 4) and up.
    """
    n = packed.shape[0]
    low = nibbles(packed[:, 0:8]).reshape(n, 16)  # [n, 2, 8] -> scale order
    high = bit_planes(packed[:, 8:12], 8, width=2).reshape(n, 16)  # [n, 4, 4] -> scale order
    return low | (high << 4)


def _apply(q: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor | None) -> torch.Tensor:
    """codes [n, groups, group_len] * scale [n, groups] (- offset) -> float32 [n, 256]."""
    out = q.float().mul_(scale.unsqueeze(-1))
    if offset is not None:
        out.sub_(offset.unsqueeze(-1))
    return out.reshape(q.shape[0], -1)


class Q2_K(QuantFormat, ggml_type=GGMLQuantizationType.Q2_K):
    # layout: scales[16] (4-bit scale | 4-bit min) | qs[64] | d f16 | dmin f16
    @classmethod
    def dequantize(cls, blocks: torch.Tensor) -> torch.Tensor:
        n = blocks.shape[0]
        d, dmin = f16_field(blocks, 80), f16_field(blocks, 82)  # [n, 1] each
        sc = blocks[:, 0:16]
        scale = d * (sc & 0x0F).float()  # [n, 16]
        minimum = dmin * (sc >> 4).float()
        # two 32-byte strips, 4 two-bit fields each: [n, 2, 4, 32] -> 16 groups of 16
        q = bit_planes(blocks[:, 16:80].reshape(n, 2, 32), 8, width=2).reshape(n, 16, 16)
        return _apply(q, scale, minimum)


class Q3_K(QuantFormat, ggml_type=GGMLQuantizationType.Q3_K):
    # layout: hmask[32] | qs[64] | scales[12] | d f16
    @classmethod
    def dequantize(cls, blocks: torch.Tensor) -> torch.Tensor:
        n = blocks.shape[0]
        d = f16_field(blocks, 108)  # [n, 1]
        scale = d * (_scale_6bit_q3(blocks[:, 96:108]).float() - 32)  # [n, 16]
        low = bit_planes(blocks[:, 32:96].reshape(n, 2, 32), 8, width=2)  # [n, 2, 4, 32]
        high = bit_planes(blocks[:, 0:32], 8)  # [n, 8, 32]: bit b feeds run b
        # a clear high bit means "subtract 4": q = low - 4 * (1 - high), in -4..3
        q = low.reshape(n, 8, 32).to(torch.int8) - ((high ^ 1) << 2).to(torch.int8)
        return _apply(q.reshape(n, 16, 16), scale, None)


class Q4_K(QuantFormat, ggml_type=GGMLQuantizationType.Q4_K):
    # layout: d f16 | dmin f16 | scales[12] | qs[128]
    @classmethod
    def dequantize(cls, blocks: torch.Tensor) -> torch.Tensor:
        n = blocks.shape[0]
        d, dmin = f16_field(blocks, 0), f16_field(blocks, 2)  # [n, 1] each
        sc, m = _scale_min_6bit(blocks[:, 4:16])  # [n, 8] each
        # four 32-byte strips, low then high nibbles: [n, 4, 2, 32] -> 8 runs of 32
        q = nibbles(blocks[:, 16:144].reshape(n, 4, 32)).reshape(n, 8, 32)
        return _apply(q, d * sc.float(), dmin * m.float())


class Q5_K(QuantFormat, ggml_type=GGMLQuantizationType.Q5_K):
    # layout: d f16 | dmin f16 | scales[12] | qh[32] | qs[128]
    @classmethod
    def dequantize(cls, blocks: torch.Tensor) -> torch.Tensor:
        n = blocks.shape[0]
        d, dmin = f16_field(blocks, 0), f16_field(blocks, 2)  # [n, 1] each
        sc, m = _scale_min_6bit(blocks[:, 4:16])  # [n, 8] each
        low = nibbles(blocks[:, 48:176].reshape(n, 4, 32)).reshape(n, 8, 32)
        high = bit_planes(blocks[:, 16:48], 8)  # [n, 8, 32]: bit b is the 5th bit of run b
        return _apply(low | (high << 4), d * sc.float(), dmin * m.float())


class Q6_K(QuantFormat, ggml_type=GGMLQuantizationType.Q6_K):
    # layout: ql[128] | qh[64] | scales[16] int8 | d f16
    @classmethod
    def dequantize(cls, blocks: torch.Tensor) -> torch.Tensor:
        n = blocks.shape[0]
        d = f16_field(blocks, 208)  # [n, 1]
        scale = d * blocks[:, 192:208].view(torch.int8).float()  # [n, 16]
        # each 128-element half: 64 ql bytes give runs 0,1 (low nibbles) and 2,3 (high)
        low = nibbles(blocks[:, 0:128].reshape(n, 2, 64)).reshape(n, 2, 4, 32)
        # ... and 32 qh bytes give the top 2 bits of runs 0-3, lowest bits first
        high = bit_planes(blocks[:, 128:192].reshape(n, 2, 32), 8, width=2)  # [n, 2, 4, 32]
        q = (low | (high << 4)).to(torch.int8) - 32
        return _apply(q.reshape(n, 16, 16), scale, None)
