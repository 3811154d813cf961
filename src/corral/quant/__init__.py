"""GGML tensor types -> torch float32: the dequantization kernels, by type.

`dequantize` turns a whole tensor's raw bytes (as stored in a GGUF file) into a float32
tensor; `dequantize_rows` does it for a few rows only (embedding lookup). Both read the
bytes in place (a read-only memory map is fine) and never write to them.

A tensor's bytes are a flat run of blocks (every row is a whole number of blocks), so the
work goes block-chunk by block-chunk into one preallocated output, which bounds the
temporary memory whatever the tensor's size.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from corral.errors import UnsupportedError
from corral.gguf.consts import GGMLQuantizationType
from corral.quant import floats, k_quants, legacy  # noqa: F401 - importing registers them
from corral.quant.base import REGISTRY, QuantFormat

__all__ = [
    "SUPPORTED_TYPES",
    "QuantFormat",
    "dequantize",
    "dequantize_rows",
    "is_supported",
]

SUPPORTED_TYPES: tuple[GGMLQuantizationType, ...] = tuple(sorted(REGISTRY, key=int))
# Output elements per chunk: 4 MiB of float32; a chunk's temporaries are a few times that.
# Smaller chunks pay more per-op dispatch than they win back in cache hits.
CHUNK_ELEMENTS = 1 << 20
# Outputs at least this big are allocated through numpy (see _empty_f32).
HUGE_OUTPUT_BYTES = 16 << 20


def is_supported(ggml_type: GGMLQuantizationType | int) -> bool:
    """Whether tensors of this ggml type (enum or raw id) can be dequantized."""
    try:
        return GGMLQuantizationType(ggml_type) in REGISTRY
    except ValueError:
        return False


def _format(ggml_type: GGMLQuantizationType | int) -> type[QuantFormat]:
    try:
        qtype = GGMLQuantizationType(ggml_type)
    except ValueError:
        qtype = None
    if qtype is None or qtype not in REGISTRY:
        name = qtype.name if qtype is not None else f"id {int(ggml_type)}"
        supported = ", ".join(t.name for t in SUPPORTED_TYPES)
        raise UnsupportedError(f"tensor type {name} is not supported (supported: {supported})")
    return REGISTRY[qtype]


def _raw_bytes(data: np.ndarray) -> torch.Tensor:
    """The tensor's bytes as a flat uint8 torch tensor sharing memory with `data`."""
    arr = np.ascontiguousarray(data)  # no copy when already contiguous (a memmap slice is)
    flat = arr.reshape(-1).view(np.uint8)
    with warnings.catch_warnings():
        # read-only maps make torch warn that writes would be undefined; we only read
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(flat)


def _check(fmt: type[QuantFormat], shape: tuple[int, ...], n_bytes: int) -> None:
    row = shape[-1] if shape else 1
    if row % fmt.block_size:
        raise ValueError(
            f"{fmt.ggml_type.name} row of {row} is not a whole number of "
            f"{fmt.block_size}-element blocks"
        )
    need = math.prod(shape) // fmt.block_size * fmt.type_size
    if n_bytes != need:
        raise ValueError(
            f"{fmt.ggml_type.name} tensor of shape {shape} needs {need} bytes, got {n_bytes}"
        )


def _empty_f32(n: int) -> torch.Tensor:
    """An uninitialised float32 [n]; big ones come from numpy for its huge-page advice."""
    if n * 4 < HUGE_OUTPUT_BYTES:
        return torch.empty(n, dtype=torch.float32)
    # numpy madvises big buffers for transparent huge pages: first touch of a fresh
    # 640 MiB output goes from ~190 ms of page faults to ~70 ms (its storage isn't resizable)
    return torch.from_numpy(np.empty(n, dtype=np.float32))


def _dequantize_blocks(fmt: type[QuantFormat], raw: torch.Tensor, n_elements: int) -> torch.Tensor:
    """uint8 [n_blocks * type_size] -> float32 [n_elements], chunk by chunk."""
    blocks = raw.view(-1, fmt.type_size)  # [n_blocks, type_size]
    out = _empty_f32(n_elements)
    out_blocks = out.view(-1, fmt.block_size)  # [n_blocks, block_size]
    step = max(1, CHUNK_ELEMENTS // fmt.block_size)
    for start in range(0, blocks.shape[0], step):
        out_blocks[start : start + step] = fmt.dequantize(blocks[start : start + step])
    return out


def dequantize(
    data: np.ndarray, ggml_type: GGMLQuantizationType | int, shape: Sequence[int]
) -> torch.Tensor:
    """A tensor's raw bytes (or typed F32/F16 array) -> float32 tensor of `shape`.

    `shape` is in PyTorch order (rows first, the last dim is the blocked one). `data` is
    only read. Raises UnsupportedError for a type without a kernel, ValueError when `data`
    does not hold exactly a `shape` tensor of that type.
    """
    fmt = _format(ggml_type)
    shape = tuple(int(s) for s in shape)
    raw = _raw_bytes(data)
    _check(fmt, shape, raw.numel())
    return _dequantize_blocks(fmt, raw, math.prod(shape)).view(shape)


def dequantize_rows(
    data: np.ndarray,
    ggml_type: GGMLQuantizationType | int,
    shape: Sequence[int],
    rows: torch.Tensor,
) -> torch.Tensor:
    """Dequantize only `rows` (indices along dim 0) of a tensor: float32 [*rows.shape, *shape[1:]].

    The embedding lookup: only the looked-up rows' blocks are read and decoded.
    """
    fmt = _format(ggml_type)
    shape = tuple(int(s) for s in shape)
    if not shape:
        raise ValueError("dequantize_rows needs a tensor of at least one dimension")
    raw = _raw_bytes(data)
    _check(fmt, shape, raw.numel())
    idx = torch.as_tensor(rows, dtype=torch.long)
    n_rows = shape[0]
    if idx.numel() and (int(idx.min()) < -n_rows or int(idx.max()) >= n_rows):
        raise IndexError(f"row index out of range for a tensor of {n_rows} rows")
    row_elements = math.prod(shape[1:])
    if row_elements % fmt.block_size:
        raise ValueError(f"a {fmt.ggml_type.name} row of shape {shape[1:]} is not whole blocks")
    picked = raw.view(n_rows, -1).index_select(0, idx.reshape(-1) % max(n_rows, 1))
    out = _dequantize_blocks(fmt, picked.reshape(-1), picked.shape[0] * row_elements)
    return out.view(*idx.shape, *shape[1:])
