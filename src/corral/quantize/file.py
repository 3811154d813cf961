"""`corral quantize`: a GGUF model -> the same model with its weights in another ggml type.

Metadata is copied (general.file_type and general.quantization_version set as
llama-quantize sets them); each tensor's type comes from the scheme's mix (`mix.py`); the
data are dequantized to float32 with corral's kernels and quantized again block-row by
block-row (K-quants: `kquants.py`; the 32-value types: gguf-py's numpy reference ports).
Tensors are streamed to the output one at a time, so memory stays near one tensor's size.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGUFWriter
from gguf import GGMLQuantizationType as Q
from gguf.quants import quantize as gguf_quantize

from corral.errors import CorralError
from corral.gguf.reader import GGUFFile, TensorInfo, open_gguf
from corral.quant import dequantize
from corral.quantize.kquants import K_QUANTIZERS
from corral.quantize.mix import Scheme, TypePlanner
from corral.quantize.output import atomic_output, copy_metadata

QUANTIZATION_VERSION = 2  # GGML_QNT_VERSION, as llama-quantize writes it
# rows converted per step: bounds the float32 copy of a big matrix (~16 MiB)
_CHUNK_ELEMENTS = 1 << 22
_FLOAT_TYPES = {Q.F32: np.float32, Q.F16: np.float16}


@dataclass
class TensorChange:
    name: str
    shape: tuple[int, ...]
    src: Q
    dst: Q


@dataclass
class QuantizeReport:
    """What a quantization did: sizes are the tensors' bytes (as llama-quantize reports)."""

    scheme: Scheme
    n_elements: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    file_bytes_in: int = 0
    file_bytes_out: int = 0
    seconds: float = 0.0
    tensors: list[TensorChange] = field(default_factory=list)

    @property
    def bpw_in(self) -> float:
        return self.bytes_in * 8 / max(self.n_elements, 1)

    @property
    def bpw_out(self) -> float:
        return self.bytes_out * 8 / max(self.n_elements, 1)

    def type_counts(self) -> dict[str, int]:
        """How many tensors ended up in each type (the summary llama.cpp prints on load)."""
        counts: dict[str, int] = {}
        for t in self.tensors:
            counts[t.dst.name] = counts.get(t.dst.name, 0) + 1
        return dict(sorted(counts.items()))


def tensor_nbytes(shape: tuple[int, ...], qtype: Q) -> int:
    block, size = GGML_QUANT_SIZES[qtype]
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    return n // block * size


def quantize_rows(x: np.ndarray, qtype: Q) -> np.ndarray:
    """float32 [rows, cols] -> the rows in `qtype`: uint8 blocks, or float16/float32 values."""
    if qtype in _FLOAT_TYPES:
        return x.astype(_FLOAT_TYPES[qtype])
    rows, cols = x.shape
    kq = K_QUANTIZERS.get(qtype)
    if kq is not None:
        return kq(np.ascontiguousarray(x, dtype=np.float32).reshape(-1, 256)).reshape(rows, -1)
    return gguf_quantize(np.ascontiguousarray(x, dtype=np.float32), qtype)


def convert_tensor(t: TensorInfo, qtype: Q) -> np.ndarray:
    """A tensor's data in `qtype`, as the array GGUFWriter writes (bytes for block types)."""
    if t.ggml_type == qtype:
        return np.ascontiguousarray(t.data)
    cols = t.shape[-1] if t.shape else 1
    rows = max(1, int(np.prod(t.shape[:-1], dtype=np.int64))) if t.shape else 1
    raw = t.data.reshape(rows, -1)
    step = max(1, _CHUNK_ELEMENTS // max(cols, 1))
    parts = []
    for r in range(0, rows, step):
        n = min(step, rows - r)
        x = dequantize(raw[r : r + n], t.ggml_type, (n, cols)).numpy()
        parts.append(quantize_rows(x, qtype))
    out = np.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
    if qtype in _FLOAT_TYPES:
        return out.reshape(t.shape)
    return out


def plan(src_path: str | os.PathLike[str], scheme: Scheme) -> list[TensorChange]:
    """The type every tensor of `src_path` would get (llama-quantize's --dry-run)."""
    with open_gguf(src_path) as g:
        return _plan(g, scheme)


def _plan(g: GGUFFile, scheme: Scheme) -> list[TensorChange]:
    planner = TypePlanner(scheme, g.metadata, list(g.tensors))
    return [
        TensorChange(name, t.shape, t.ggml_type, planner.choose(name, t.shape, t.ggml_type))
        for name, t in g.tensors.items()
    ]


def quantize_file(
    src_path: str | os.PathLike[str],
    dst_path: str | os.PathLike[str],
    scheme: Scheme,
    allow_requantize: bool = False,
    progress: Callable[[int, int, TensorChange], None] | None = None,
) -> QuantizeReport:
    """Write `src_path` quantized with `scheme` to `dst_path` (replaced only on success).

    A tensor already in a quantized type is only requantized with allow_requantize (as
    llama-quantize's --allow-requantize): quality drops twice. CorralError on bad input.
    """
    t0 = time.perf_counter()
    src_path, dst_path = Path(src_path), Path(dst_path)
    if src_path.resolve() == dst_path.resolve():
        raise CorralError("the output file must differ from the input file")
    report = QuantizeReport(scheme)
    with open_gguf(src_path) as g:
        if g.get("general.type") == "adapter":
            raise CorralError(f"{src_path.name}: is a LoRA adapter, not a model")
        changes = _plan(g, scheme)
        for c in changes:
            t = g.tensors[c.name]
            requant = c.src != c.dst and c.src not in _FLOAT_TYPES and c.src != Q.BF16
            if requant and not allow_requantize:
                raise CorralError(
                    f"{src_path.name}: tensor '{c.name}' is already {c.src.name}; "
                    "requantizing loses quality twice (pass --allow-requantize to do it "
                    "anyway, or start from an F16/BF16/F32 file)"
                )
            report.n_elements += t.n_elements
            report.bytes_in += t.data.nbytes
            report.bytes_out += tensor_nbytes(c.shape, c.dst)
        with atomic_output(dst_path) as tmp:
            w = GGUFWriter(tmp, g.architecture)
            copy_metadata(w, g, skip={"general.file_type", "general.quantization_version"})
            w.add_quantization_version(QUANTIZATION_VERSION)
            w.add_file_type(int(scheme.value))
            for c in changes:
                # element shape + raw_dtype: any numpy dtype but uint8 (which would make the
                # writer read the shape as bytes) declares the tensor as it is
                nbytes = tensor_nbytes(c.shape, c.dst)
                w.add_tensor_info(c.name, c.shape, np.dtype(np.float32), nbytes, raw_dtype=c.dst)
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_ti_data_to_file()
            for i, c in enumerate(changes):
                w.write_tensor_data(convert_tensor(g.tensors[c.name], c.dst))
                report.tensors.append(c)
                if progress is not None:
                    progress(i + 1, len(changes), c)
            w.close()
        report.file_bytes_in = src_path.stat().st_size
    report.file_bytes_out = dst_path.stat().st_size
    report.seconds = time.perf_counter() - t0
    return report
