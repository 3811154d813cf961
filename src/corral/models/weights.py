"""GGUF tensors -> the weights the layers multiply with, without a float32 copy of the model.

Quantized matrices stay as their GGUF blocks, read straight from the file mapping
(`BlockWeight`): one-token steps run corral's C kernels on them (llama.cpp's arithmetic, a
quarter of float32's memory traffic); prompts of many tokens dequantize one matrix at a time
and use BLAS, rounding activations as the kernels do. Float matrices (`DenseWeight`) are used
as stored (F32, F16) or widened (BF16). Vectors (norms, biases) become float32 tensors.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from corral import kernels
from corral.engine.device import CPU, Device
from corral.errors import GGUFError, UnsupportedError
from corral.gguf.consts import GGMLQuantizationType as Q
from corral.gguf.reader import GGUFFile, TensorInfo
from corral.quant import SUPPORTED_TYPES, dequantize, dequantize_rows, is_supported
from corral.quant.activations import ACT_QUANT_FOR, ActQuant, round_activations

# Up to this many rows of activations every kernel-backed weight goes through the integer
# kernels (llama.cpp's arithmetic, as its AVX2 build picks kernels for the call's row count:
# see kernels.order(); in the "rows" order row r of a call is bit-identical to computing it
# alone). Beyond it, each weight switches at its type's break-even (kernels.AMX_BREAK_EVEN or
# DENSE_BREAK_EVEN) to its dense route: AMX tiles (llama.cpp's sums for the types its AVX2
# build repacks or tiles) or float32 GEMM on dequantized blocks (not llama.cpp's bits),
# 1.5-3x faster on long prompts. CORRAL_DENSE=0 (kernels.DENSE) keeps every call on the
# integer kernels, so that prompts of any length get llama.cpp's logits.
KERNEL_MAX_ROWS = 16
# Dequantize big matrices for BLAS this many elements at a time (bounds the float32 copy).
_DEQUANT_CHUNK = 1 << 22
# CORRAL_KERNELS=0 turns the C kernels off (BLAS on dequantized blocks for every call).
_USE_KERNELS = kernels.available() and os.environ.get("CORRAL_KERNELS", "1") != "0"
# CORRAL_EXACT=1 computes in plain float32 (no activation rounding), for debugging.
_EXACT = os.environ.get("CORRAL_EXACT", "") not in ("", "0")


class Linear(Protocol):
    """A [out, in] weight as the layers use it."""

    shape: torch.Size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in] float32 -> [..., out] float32."""
        ...

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Embedding lookup: ids [...] -> [..., in] float32."""
        ...


# Wraps each weight (GGUF name, Linear) as an architecture asks for it: LoRA adapters, set by
# corral.load(adapters=...) around one model build, so architecture modules never see them.
WEIGHT_HOOK: ContextVar[Callable[[str, Linear], Linear] | None] = ContextVar(
    "corral_weight_hook", default=None
)


def _as_tensor(a: np.ndarray) -> torch.Tensor:
    """Zero-copy tensor over a (read-only) mapped array; it is never written to."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "non-writable NumPy array"
        return torch.from_numpy(a)


class DenseWeight:
    """A float weight: F32 and F16 used in place, BF16 widened to float32."""

    def __init__(self, t: TensorInfo) -> None:
        if t.ggml_type == Q.BF16:
            self.w = dequantize(t.data, t.ggml_type, t.shape)
        else:
            self.w = _as_tensor(t.data)
        self.shape = self.w.shape

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.w.dtype == torch.float32:
            return F.linear(x, self.w)
        return F.linear(x, self.w.float())

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        return self.w[ids].float()


class BlockWeight:
    """A quantized weight kept as its GGUF blocks (uint8 [out, row_bytes], mapped)."""

    def __init__(self, t: TensorInfo) -> None:
        self.info = t
        self.shape = torch.Size(t.shape)
        self.raw = _as_tensor(t.data)
        self.act = ActQuant.NONE if _EXACT else ACT_QUANT_FOR.get(t.ggml_type, ActQuant.NONE)
        self.kernel = (
            kernels.QMatrix(
                self.raw,
                t.ggml_type,
                t.shape[0],
                t.shape[1],
                dense_rows="auto" if kernels.DENSE else None,
            )
            if _USE_KERNELS and not _EXACT and t.ggml_type in kernels.SUPPORTED_TYPES
            else None
        )
        rows, cols = t.shape
        self.rows_per_chunk = max(1, _DEQUANT_CHUNK // cols)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel is not None:  # integer kernels, or past the break-even its dense route
            return self.kernel(x)
        x = round_activations(x, self.act)
        out_rows, cols = self.shape
        t = self.info
        if out_rows <= self.rows_per_chunk:
            return F.linear(x, dequantize(t.data, t.ggml_type, t.shape))
        parts = []
        for r in range(0, out_rows, self.rows_per_chunk):
            n = min(self.rows_per_chunk, out_rows - r)
            parts.append(F.linear(x, dequantize(t.data[r : r + n], t.ggml_type, (n, cols))))
        return torch.cat(parts, dim=-1)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        if self.kernel is not None:
            return self.kernel.rows(ids)
        t = self.info
        return dequantize_rows(t.data, t.ggml_type, t.shape, ids)


def project(x: torch.Tensor, *ws: Linear) -> list[torch.Tensor]:
    """[w(x) for w in ws] with one input (q/k/v, gate/up): where all are kernel-backed block
    weights, x is quantized once and every matrix's rows go to one parallel region (same
    results as separate calls, fewer thread wake-ups per token)."""
    if len(ws) > 1 and all(type(w) is BlockWeight and w.kernel is not None for w in ws):
        return kernels.qmatmul_many(x, [w.kernel for w in ws])  # type: ignore[union-attr]
    if len(ws) > 1 and all(type(w) is DeviceWeight for w in ws):
        fused = fuse_device_weights(ws)  # type: ignore[arg-type]
        return list(F.linear(x, fused.w).split(fused.sizes, dim=-1))
    return [w(x) for w in ws]


class FusedRows:
    """Several DeviceWeights' rows in one matrix (`w`), each weight a view of its part."""

    def __init__(self, ws: Sequence[DeviceWeight]) -> None:
        self.members = tuple(ws)
        self.sizes = [w.w.shape[0] for w in ws]
        self.w = torch.cat([w.w for w in ws])  # [sum of rows, cols]
        start = 0
        for w, n in zip(ws, self.sizes, strict=True):
            w.w = self.w[start : start + n]  # the separate copies are freed
            w.fused = self
            start += n


def fuse_device_weights(ws: Sequence[DeviceWeight]) -> FusedRows:
    """One matrix for weights that always multiply the same input (q/k/v, gate/up): at
    batch 1 a GPU reads one large matrix near its bandwidth and small ones well below it,
    and one launch replaces several. Made on first use, kept by the weights."""
    f = ws[0].fused
    if f is not None and f.members == tuple(ws):
        return f
    return FusedRows(ws)


class DeviceWeight:
    """A weight dequantized once into accelerator memory, in the device's compute dtype."""

    def __init__(self, t: TensorInfo, device: Device) -> None:
        rows, cols = t.shape
        self.w = torch.empty(rows, cols, dtype=device.dtype, device=device.torch_device)
        step = max(1, _DEQUANT_CHUNK // cols)
        for r in range(0, rows, step):  # bounded host memory while filling
            n = min(step, rows - r)
            part = dequantize(t.data[r : r + n], t.ggml_type, (n, cols))
            self.w[r : r + n] = part.to(device.dtype).to(device.torch_device)
        self.shape = self.w.shape
        self.fused: FusedRows | None = None  # set when fused with its siblings (project)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.w)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        return self.w[ids]


def to_weight(t: TensorInfo, device: Device = CPU) -> Linear:
    """A 2-D tensor -> the Linear that multiplies with it on `device`."""
    if len(t.shape) != 2:
        raise GGUFError(f"tensor '{t.name}' has shape {t.shape}, expected a matrix")
    if not device.is_cpu:
        return DeviceWeight(t, device)
    if t.ggml_type in (Q.F32, Q.F16, Q.BF16):
        return DenseWeight(t)
    return BlockWeight(t)


def to_float(t: TensorInfo) -> torch.Tensor:
    """Any tensor -> float32 of its shape (small tensors: norms, biases, rope factors)."""
    return dequantize(t.data, t.ggml_type, t.shape)


class TensorSource:
    """Named access to a file's tensors with a clear error for the missing ones."""

    def __init__(self, gguf: GGUFFile, device: Device = CPU) -> None:
        self.gguf = gguf
        self.device = device
        self.hook = WEIGHT_HOOK.get()
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

    def weight(self, name: str) -> Linear:
        w = to_weight(self.info(name), self.device)
        return w if self.hook is None else self.hook(name, w)

    def vector(self, name: str) -> torch.Tensor:
        """A float32 vector on the model's device (norms run in float32 everywhere)."""
        return to_float(self.info(name)).to(self.device.torch_device)

    def optional_vector(self, name: str) -> torch.Tensor | None:
        return self.vector(name) if self.has(name) else None
