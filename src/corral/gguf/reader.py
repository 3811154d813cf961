"""Open a GGUF file (v2 or v3), memory-mapped, and turn every failure into a one-line
GGUFError that names the file and what is wrong with it.

The header is parsed here rather than with `gguf.GGUFReader`: that reader builds a numpy
object per array element and takes 13 s on Gemma 3's 262k-token vocabulary, against a load
budget of a fraction of a second. The `gguf` package still supplies the format's tables
(value types, quant types and their block geometry) and writes files for the tests.

Metadata comes out as Python values (str, int, float, bool, list[str]); numeric arrays come
out as numpy arrays. Tensors are `TensorInfo` whose `data` is a zero-copy view into the map.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from corral.errors import GGUFError, UnsupportedError
from corral.gguf.consts import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

try:
    from corral import _gguf_strings as _strings_ext
except ImportError:  # pragma: no cover - built by pip install; the loop below does the same
    _strings_ext = None

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
# Magics of the pre-GGUF llama.cpp formats, as stored little-endian on disk.
_LEGACY_MAGICS = {
    b"lmgg": "an old unversioned GGML file (pre-GGUF llama.cpp; convert it with `corral migrate`)",
    b"fmgg": "an old GGMF file (pre-GGUF llama.cpp; convert it with `corral migrate`)",
    b"tjgg": "an old GGJT file (pre-GGUF llama.cpp; convert it with `corral migrate`)",
}
_SCALAR = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}
_NUMPY = {k: np.dtype(v) for k, v in _SCALAR.items()}
# numpy dtype for the float tensor types (quantized ones are raw uint8 blocks)
_FLOAT_TENSOR_DTYPES = {
    GGMLQuantizationType.F32: np.float32,
    GGMLQuantizationType.F16: np.float16,
    GGMLQuantizationType.F64: np.float64,
    GGMLQuantizationType.I8: np.int8,
    GGMLQuantizationType.I16: np.int16,
    GGMLQuantizationType.I32: np.int32,
    GGMLQuantizationType.I64: np.int64,
}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the file. `shape` is in PyTorch order (rows first), the reverse of GGUF's.

    `data` is a zero-copy view: a typed array of `shape` for F32/F16 and the integer types,
    and the raw bytes as uint8 [rows, bytes_per_row] for BF16 and the quantized types.
    """

    name: str
    ggml_type: GGMLQuantizationType
    shape: tuple[int, ...]
    data: np.ndarray

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def sniff_format(path: str | os.PathLike[str]) -> str:
    """Say in words what kind of file `path` looks like, from its first bytes."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == GGUF_MAGIC:
        return "GGUF"
    if head[:4] in _LEGACY_MAGICS:
        return _LEGACY_MAGICS[head[:4]]
    if len(head) >= 9 and head[8:9] == b"{":
        return "a safetensors file"
    if head[:2] == b"PK":
        return "a zip archive (a PyTorch .pt/.bin checkpoint or a wheel)"
    if head[:1] == b"\x80":
        return "a Python pickle (an old PyTorch checkpoint)"
    if head.lstrip()[:1] in (b"{", b"["):
        return "a JSON file"
    if not head:
        return "an empty file"
    return "an unknown format"


_U64 = struct.Struct("<Q")


class _Cursor:
    """Bounds-checked little-endian reads over the mapped bytes."""

    def __init__(self, buf: np.ndarray, name: str) -> None:
        self.buf = buf
        self.mv = memoryview(buf)  # type: ignore[arg-type]
        self.size = len(buf)
        self.off = 0
        self.name = name

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.off + n > self.size:
            raise GGUFError(
                f"{self.name}: truncated or corrupt: {what} at byte {self.off} runs past the end "
                f"of the file ({self.size} bytes)"
            )

    def unpack(self, fmt: str, what: str) -> Any:
        n = struct.calcsize(fmt)
        self.need(n, what)
        v = struct.unpack_from(fmt, self.mv, self.off)[0]
        self.off += n
        return v

    def string(self, what: str) -> str:
        n = self.unpack("<Q", what)
        self.need(n, what)
        s = bytes(self.mv[self.off : self.off + n]).decode("utf-8", errors="replace")
        self.off += n
        return s

    def strings(self, count: int, key: str) -> list[str]:
        """An array of `count` strings (vocabularies: ~100k of them: one C call, or one
        tight loop where the extension is not built)."""
        if _strings_ext is not None:
            got, off = _strings_ext.strings(self.mv, self.off, count)
            if isinstance(got, int):  # string `got` runs past the end: string() says so
                self.off = off
                self.string(f"string {got} of '{key}'")
            self.off = off
            return got
        mv, off, size = self.mv, self.off, self.size
        length = _U64.unpack_from
        out: list[str] = []
        append = out.append
        for i in range(count):
            end = off + 8
            if end <= size:
                end += length(mv, off)[0]
            if end > size:  # the checks of string() give the error message
                self.off = off
                self.string(f"string {i} of '{key}'")
            append(str(mv[off + 8 : end], "utf-8", "replace"))
            off = end
        self.off = off
        return out

    def value(self, vtype: GGUFValueType, key: str) -> Any:
        if vtype == GGUFValueType.STRING:
            return self.string(f"string value of '{key}'")
        if vtype == GGUFValueType.ARRAY:
            itype = self._vtype(self.unpack("<I", f"array type of '{key}'"), key)
            count = self.unpack("<Q", f"array length of '{key}'")
            if itype == GGUFValueType.STRING:
                return self.strings(count, key)
            if itype == GGUFValueType.ARRAY:
                return [self.value(GGUFValueType.ARRAY, key) for _ in range(count)]
            dt = _NUMPY[itype]
            self.need(count * dt.itemsize, f"array '{key}'")
            # copied: a view would keep the whole file mapped for as long as metadata lives
            arr = np.frombuffer(self.buf, dtype=dt, count=count, offset=self.off).copy()
            self.off += count * dt.itemsize
            return arr
        v = self.unpack(_SCALAR[vtype], f"value of '{key}'")
        return v

    def _vtype(self, raw: int, key: str) -> GGUFValueType:
        try:
            return GGUFValueType(raw)
        except ValueError:
            raise GGUFError(
                f"{self.name}: corrupt metadata: '{key}' has unknown value type {raw}"
            ) from None


class GGUFFile:
    """An open GGUF file: `metadata` (key -> value) and `tensors` (name -> TensorInfo).

    Tensor data stay memory-mapped; `close()` (or the context manager) drops the mapping once
    the weights have been copied out.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        name = self.path.name
        if not self.path.exists():
            raise GGUFError(f"{name}: no such file")
        if self.path.is_dir():
            raise GGUFError(f"{name}: is a directory, not a GGUF file")
        kind = sniff_format(self.path)
        if kind != "GGUF":
            raise GGUFError(f"{name}: not a GGUF file, it looks like {kind}")
        self._map: np.ndarray | None = np.memmap(self.path, dtype=np.uint8, mode="r")
        cur = _Cursor(self._map, name)
        cur.off = 4
        self.version = cur.unpack("<I", "version")
        if self.version not in (2, 3):
            raise GGUFError(f"{name}: GGUF version {self.version} is not supported (only 2 and 3)")
        n_tensors = cur.unpack("<Q", "tensor count")
        n_kv = cur.unpack("<Q", "metadata count")
        if n_tensors > 1_000_000 or n_kv > 1_000_000:
            raise GGUFError(f"{name}: corrupt header: {n_tensors} tensors, {n_kv} metadata keys")
        self.metadata: dict[str, Any] = {}
        self.value_types: dict[str, GGUFValueType] = {}
        for i in range(n_kv):
            key = cur.string(f"metadata key {i}")
            vtype = cur._vtype(cur.unpack("<I", f"type of '{key}'"), key)
            self.metadata[key] = cur.value(vtype, key)
            self.value_types[key] = vtype
        raw_infos = []
        for i in range(n_tensors):
            tname = cur.string(f"tensor name {i}")
            n_dims = cur.unpack("<I", f"dimension count of '{tname}'")
            if n_dims > 8:
                raise GGUFError(f"{name}: corrupt tensor info: '{tname}' has {n_dims} dimensions")
            dims = [cur.unpack("<Q", f"shape of '{tname}'") for _ in range(n_dims)]
            raw_type = cur.unpack("<I", f"type of '{tname}'")
            offset = cur.unpack("<Q", f"offset of '{tname}'")
            raw_infos.append((tname, dims, raw_type, offset))
        align = int(self.metadata.get("general.alignment", DEFAULT_ALIGNMENT))
        if align <= 0 or align & (align - 1):
            raise GGUFError(f"{name}: corrupt header: alignment {align} is not a power of two")
        data_start = (cur.off + align - 1) // align * align
        self.tensors: dict[str, TensorInfo] = {}
        size = len(self._map)
        for tname, dims, raw_type, offset in raw_infos:
            try:
                qtype = GGMLQuantizationType(raw_type)
            except ValueError:
                raise UnsupportedError(
                    f"{name}: tensor '{tname}' has unknown ggml type id {raw_type}"
                ) from None
            shape = tuple(int(d) for d in reversed(dims))
            block, type_size = GGML_QUANT_SIZES[qtype]
            if dims and dims[0] % block:
                raise GGUFError(
                    f"{name}: corrupt tensor info: '{tname}' row of {dims[0]} is not a whole "
                    f"number of {qtype.name} blocks"
                )
            n_el = int(np.prod(shape, dtype=np.int64)) if shape else 1
            nbytes = n_el // block * type_size
            start = data_start + offset
            if start + nbytes > size:
                raise GGUFError(
                    f"{name}: truncated: tensor '{tname}' needs bytes {start}..{start + nbytes}, "
                    f"the file has {size}"
                )
            raw = self._map[start : start + nbytes]
            if qtype in _FLOAT_TENSOR_DTYPES:
                data = raw.view(_FLOAT_TENSOR_DTYPES[qtype]).reshape(shape)
            else:
                row_bytes = (dims[0] // block * type_size) if dims else nbytes
                data = raw.reshape(-1, row_bytes)
            self.tensors[tname] = TensorInfo(tname, qtype, shape, data)

    @property
    def architecture(self) -> str:
        arch = self.metadata.get("general.architecture")
        if not isinstance(arch, str):
            raise GGUFError(f"{self.path.name}: no general.architecture key")
        return arch

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def close(self) -> None:
        """Drop our references to the mapping; it is unmapped once no tensor view holds it."""
        self.tensors = {}
        self._map = None

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_gguf(path: str | os.PathLike[str]) -> GGUFFile:
    """Open `path` as GGUF; raises GGUFError with a one-line reason if it cannot be read."""
    return GGUFFile(path)
