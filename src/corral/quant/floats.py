"""Unquantized float formats: F32, F16 and BF16 (one element per block)."""

from __future__ import annotations

import torch

from corral.gguf.consts import GGMLQuantizationType
from corral.quant.base import QuantFormat


class F32(QuantFormat, ggml_type=GGMLQuantizationType.F32):
    @classmethod
    def dequantize(cls, blocks: torch.Tensor) -> torch.Tensor:
        # [n, 4] bytes -> [n, 1]; a view of the input, the caller copies it out
        return blocks.contiguous().view(torch.float32)


class F16(QuantFormat, ggml_type=GGMLQuantizationType.F16):
    @classmethod
    def dequantize(cls, blocks: torch.Tensor) -> torch.Tensor:
        # [n, 2] bytes -> [n, 1]
        return blocks.contiguous().view(torch.float16).float()


class BF16(QuantFormat, ggml_type=GGMLQuantizationType.BF16):
    @classmethod
    def dequantize(cls, blocks: torch.Tensor) -> torch.Tensor:
        # [n, 2] bytes -> [n, 1]; bf16 -> f32 is exact (the top half of the f32 bits)
        return blocks.contiguous().view(torch.bfloat16).float()
