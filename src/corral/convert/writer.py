"""Write a converter's output as one GGUF file, tensor by tensor, never half-written.

The header (metadata, then every tensor's name, shape and type) comes first in a GGUF file,
so the converter's tensors are produced twice: as shape-only tensors to lay out the header,
then for real, one at a time, straight to disk (peak memory: about one tensor). The file is
written under a temporary name and renamed into place only when complete.

Type policy, as llama.cpp's converter: vectors, norms and biases stay F32; matrices take the
requested type; a matrix whose rows do not fill whole Q8_0 blocks falls back to F16.
"""

from __future__ import annotations

import contextlib
import os
from enum import Enum
from pathlib import Path

import numpy as np
import torch
from gguf import (
    GGML_QUANT_VERSION,
    GGMLQuantizationType,
    GGUFType,
    GGUFWriter,
    LlamaFileType,
    quant_shape_to_byte_shape,
    quants,
)

from corral.convert.base import ArchConverter
from corral.convert.checkpoint import ConvertError

Q = GGMLQuantizationType


class OutType(Enum):
    """--outtype values: the tensor type of the matrices and the file type it stands for."""

    F32 = ("f32", Q.F32, LlamaFileType.ALL_F32)
    F16 = ("f16", Q.F16, LlamaFileType.MOSTLY_F16)
    BF16 = ("bf16", Q.BF16, LlamaFileType.MOSTLY_BF16)
    Q8_0 = ("q8_0", Q.Q8_0, LlamaFileType.MOSTLY_Q8_0)

    def __init__(self, label: str, qtype: GGMLQuantizationType, ftype: LlamaFileType) -> None:
        self.label = label
        self.qtype = qtype
        self.ftype = ftype

    @classmethod
    def parse(cls, label: str) -> OutType:
        for o in cls:
            if o.label == label.lower():
                return o
        raise ConvertError(
            f"unknown outtype '{label}' (choose from {', '.join(o.label for o in cls)})"
        )


def tensor_type(name: str, shape: tuple[int, ...], out: OutType) -> GGMLQuantizationType:
    """The GGUF type a tensor is stored as."""
    if len(shape) <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight"):
        return Q.F32
    if out is OutType.Q8_0 and shape[-1] % 32:
        return Q.F16
    return out.qtype


def _encode(t: torch.Tensor, qtype: GGMLQuantizationType) -> np.ndarray:
    a = t.detach().to(torch.float32).contiguous().numpy()
    if qtype == Q.F32:
        return a
    if qtype == Q.F16:
        return a.astype(np.float16)
    return quants.quantize(a, qtype)


def _info_args(
    shape: tuple[int, ...], qtype: GGMLQuantizationType
) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, numpy dtype, byte size) as GGUFWriter.add_tensor_info takes them."""
    if qtype in (Q.F32, Q.F16):
        dt = np.dtype(np.float32 if qtype == Q.F32 else np.float16)
        return shape, dt, int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    byte_shape = tuple(quant_shape_to_byte_shape(shape, qtype))
    return byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape, dtype=np.int64))


def write_gguf(conv: ArchConverter, out: Path, outtype: OutType, name: str | None = None) -> Path:
    """Convert to `out`; returns it. On any failure no file is left at `out` (nor a temp)."""
    out = Path(out)
    w = GGUFWriter(path=None, arch=conv.arch_name)
    w.add_type(GGUFType.MODEL)
    w.add_name(name or conv.ckpt.folder.name)
    conv.set_params(w)
    w.add_file_type(outtype.ftype)
    w.add_quantization_version(GGML_QUANT_VERSION)
    conv.set_vocab(w)

    plan: list[tuple[str, GGMLQuantizationType]] = []
    for tname, t in conv.tensors(conv.ckpt.meta):
        shape = tuple(t.shape)
        qtype = Q.F32 if conv.keeps_f32(tname) else tensor_type(tname, shape, outtype)
        plan.append((tname, qtype))
        w.add_tensor_info(tname, *_info_args(shape, qtype), raw_dtype=qtype)
    conv.check_complete({n for n, _ in plan})

    tmp = out.with_name(f".{out.name}.part")
    try:
        w.write_header_to_file(tmp)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        tensors = conv.tensors(conv.ckpt.load)
        for (tname, qtype), (got, t) in zip(plan, tensors, strict=True):
            assert got == tname, f"tensor order changed: {got} != {tname}"
            w.write_tensor_data(_encode(t, qtype))
        w.close()
        os.replace(tmp, out)
    except BaseException:
        w.close()
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return out
