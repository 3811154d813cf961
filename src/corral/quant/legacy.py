"""The legacy 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0.

Every block starts with an f16 scale `d` (and, for the _1 kinds, an f16 offset `m`);
element i of a 4/5-bit block is `d * (q_i - zero)` or `d * q_i + m`. The 4-bit codes are
packed two per byte: byte j holds element j in its low nibble and element j + 16 in its
high one. The 5th bits of Q5 sit in a little-endian 32-bit word, bit i for element i.
"""

from __future__ import annotations

import torch

from corral.gguf.consts import GGMLQuantizationType
from corral.quant.base import QuantFormat, f16_field, nibbles

_BIT_SHIFTS = torch.arange(8, dtype=torch.uint8)


def _low_bits_32(qh: torch.Tensor) -> torch.Tensor:
    """uint8 [n, 4] (a little-endian u32 per block) -> uint8 [n, 32]: bit i of the word."""
    # [n, 4, 1] >> [8] -> [n, 4 bytes, 8 bits]; byte b bit k is word bit 8b + k
    return ((qh.unsqueeze(-1) >> _BIT_SHIFTS) & 1).reshape(qh.shape[0], 32)


def _codes_4bit(qs: torch.Tensor) -> torch.Tensor:
    """uint8 [n, 16] packed nibbles -> uint8 [n, 32] codes in element order."""
    return nibbles(qs).reshape(qs.shape[0], 32)


def _codes_5bit(qh: torch.Tensor, qs: torch.Tensor) -> torch.Tensor:
    """uint8 [n, 4] high bits and [n, 16] nibbles -> uint8 [n, 32] 5-bit codes."""
    return _codes_4bit(qs) | (_low_bits_32(qh) << 4)


class Q4_0(QuantFormat, ggml_type=GGMLQuantizationType.Q4_0):
    # layout: d f16 | qs[16]
    @classmethod
    def dequantize(cls, blocks: torch.Tensor) -> torch.Tensor:
        d = f16_field(blocks, 0)  # [n, 1]
        q = _codes_4bit(blocks[:, 2:18]).float()  # [n, 32]
        return q.sub_(8).mul_(d)


class Q4_1(QuantFormat, ggml_type=GGMLQuantizationType.Q4_1):
    # layout: d f16 | m f16 | qs[16]
    @classmethod
    def dequantize(cls, blocks: torch.Tensor) -> torch.Tensor:
        d, m = f16_field(blocks, 0), f16_field(blocks, 2)  # [n, 1] each
        q = _codes_4bit(blocks[:, 4:20]).float()  # [n, 32]
        return q.mul_(d).add_(m)


class Q5_0(QuantFormat, ggml_type=GGMLQuantizationType.Q5_0):
    # layout: d f16 | qh[4] | qs[16]
    @classmethod
    def dequantize(cls, blocks: torch.Tensor) -> torch.Tensor:
        d = f16_field(blocks, 0)  # [n, 1]
        q = _codes_5bit(blocks[:, 2:6], blocks[:, 6:22]).float()  # [n, 32]
        return q.sub_(16).mul_(d)


class Q5_1(QuantFormat, ggml_type=GGMLQuantizationType.Q5_1):
    # layout: d f16 | m f16 | qh[4] | qs[16]
    @classmethod
    def dequantize(cls, blocks: torch.Tensor) -> torch.Tensor:
        d, m = f16_field(blocks, 0), f16_field(blocks, 2)  # [n, 1] each
        q = _codes_5bit(blocks[:, 4:8], blocks[:, 8:24]).float()  # [n, 32]
        return q.mul_(d).add_(m)


class Q8_0(QuantFormat, ggml_type=GGMLQuantizationType.Q8_0):
    # layout: d f16 | qs[32] int8
    @classmethod
    def dequantize(cls, blocks: torch.Tensor) -> torch.Tensor:
        d = f16_field(blocks, 0)  # [n, 1]
        return blocks[:, 2:34].view(torch.int8).float().mul_(d)  # [n, 32]
