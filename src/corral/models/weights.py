"""Turn GGUF tensors into the forms the layers use, without holding the model in float32.

Matrices become `Weight` (float16, dequantized from their blocks a slice of rows at a time);
vectors (norms, biases) become float32 tensors.
"""

from __future__ import annotations

import os

import torch
from gguf import GGMLQuantizationType as Q

from corral.errors import GGUFError, UnsupportedError
from corral.gguf.reader import GGUFFile, TensorInfo
from corral.models.layers import ActQuant, Weight
from corral.quant import SUPPORTED_TYPES, dequantize, is_supported

# The activation rounding llama.cpp's CPU kernels apply before a dot product with each type.
_ACT_QUANT = {
    **dict.fromkeys((Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0), ActQuant.Q8_0),
    **dict.fromkeys((Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K), ActQuant.Q8_K),
}
# CORRAL_EXACT=1 computes in plain float32 (no activation rounding), for debugging.
_EXACT = os.environ.get("CORRAL_EXACT", "") not in ("", "0")

# Rows dequantized per step when filling a float16 matrix: bounds the float32 temporary.
_ROWS_PER_STEP = 8192


def to_float(t: TensorInfo) -> torch.Tensor:
    """Any tensor -> float32 of its shape (small tensors: norms, biases, rope factors)."""
    return dequantize(t.data, t.ggml_type, t.shape)


def to_weight(t: TensorInfo) -> Weight:
    """A 2-D tensor -> Weight [rows, cols] in float16, filled a block of rows at a time."""
    if len(t.shape) != 2:
        raise GGUFError(f"tensor '{t.name}' has shape {t.shape}, expected a matrix")
    rows, cols = t.shape
    out = torch.empty(rows, cols, dtype=torch.float16)
    for r in range(0, rows, _ROWS_PER_STEP):
        n = min(_ROWS_PER_STEP, rows - r)
        out[r : r + n] = dequantize(t.data[r : r + n], t.ggml_type, (n, cols)).to(torch.float16)
    act = ActQuant.NONE if _EXACT else _ACT_QUANT.get(t.ggml_type, ActQuant.NONE)
    return Weight(out, act)


class TensorSource:
    """Named access to a file's tensors with a clear error for the missing ones."""

    def __init__(self, gguf: GGUFFile) -> None:
        self.gguf = gguf
        # fail before any work on a file whose tensors we cannot read
        for t in gguf.tensors.values():
            if not is_supported(t.ggml_type):
                names = ", ".join(q.name for q in SUPPORTED_TYPES)
                raise UnsupportedError(
                    f"{gguf.path.name}: tensor '{t.name}' has type {t.ggml_type.name}, "
                    f"which is not supported (supported: {names})"
                )

    def has(self, name: str) -> bool:
        return name in self.gguf.tensors

    def info(self, name: str) -> TensorInfo:
        try:
            return self.gguf.tensors[name]
        except KeyError:
            raise GGUFError(f"{self.gguf.path.name}: missing tensor '{name}'") from None

    def weight(self, name: str) -> Weight:
        t = self.info(name)
        w = to_weight(t)
        self.gguf.release(t)
        return w

    def vector(self, name: str) -> torch.Tensor:
        t = self.info(name)
        v = to_float(t)
        self.gguf.release(t)
        return v

    def optional_vector(self, name: str) -> torch.Tensor | None:
        return self.vector(name) if self.has(name) else None
