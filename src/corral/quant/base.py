"""The quant-format registry and the helpers every block kernel shares.

A format is declared by subclassing `QuantFormat` with its ggml type:

    class Q8_0(QuantFormat, ggml_type=GGMLQuantizationType.Q8_0): ...

which registers it and gives it its block geometry (elements per block, bytes per block)
from `gguf.GGML_QUANT_SIZES`. Its `dequantize` turns uint8 blocks [n_blocks, type_size]
into float32 [n_blocks, block_size].
"""

from __future__ import annotations

from typing import ClassVar

import torch

from corral.gguf.consts import GGML_QUANT_SIZES, GGMLQuantizationType

# ggml type -> the format class that dequantizes it, in declaration order.
REGISTRY: dict[GGMLQuantizationType, type[QuantFormat]] = {}


class QuantFormat:
    """One GGML block format. Subclasses set `ggml_type=` and implement `dequantize`."""

    ggml_type: ClassVar[GGMLQuantizationType]
    block_size: ClassVar[int]  # elements per block
    type_size: ClassVar[int]  # bytes per block

    def __init_subclass__(cls, ggml_type: GGMLQuantizationType, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if ggml_type in REGISTRY:
            raise TypeError(f"{ggml_type.name} is already registered by {REGISTRY[ggml_type]}")
        cls.ggml_type = ggml_type
        cls.block_size, cls.type_size = GGML_QUANT_SIZES[ggml_type]
        REGISTRY[ggml_type] = cls

    @classmethod
    def dequantize(cls, blocks: torch.Tensor) -> torch.Tensor:
        """uint8 [n_blocks, type_size] -> float32 [n_blocks, block_size]."""
        raise NotImplementedError


def f16_field(blocks: torch.Tensor, offset: int) -> torch.Tensor:
    """The little-endian f16 at byte `offset` of each block, as float32 [n_blocks, 1]."""
    # contiguous() first: a strided 2-byte slice cannot be reinterpreted as f16 in place
    return blocks[:, offset : offset + 2].contiguous().view(torch.float16).float()


def nibbles(packed: torch.Tensor) -> torch.Tensor:
    """uint8 [..., k] -> uint8 [..., 2, k]: the low nibbles of all k bytes, then the high ones."""
    return torch.stack((packed & 0x0F, packed >> 4), dim=-2)


def bit_planes(packed: torch.Tensor, n_bits: int, width: int = 1) -> torch.Tensor:
    """uint8 [..., k] -> uint8 [..., n_bits // width, k]: field i is bits [i*width, (i+1)*width)."""
    shifts = torch.arange(0, n_bits, width, dtype=torch.uint8, device=packed.device)
    # shifts broadcast as [n_fields, 1] against the [..., 1, k] bytes
    return (packed.unsqueeze(-2) >> shifts.unsqueeze(-1)) & ((1 << width) - 1)
