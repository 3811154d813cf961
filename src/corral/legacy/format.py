"""The pre-GGUF llama.cpp model files: unversioned GGML, GGMF v1 and GGJT v1-v3 (.bin files
of early llama.cpp, alpaca.cpp, gpt4all), read as llama.cpp's `llama_file_loader` did.

Layout, all little-endian:

    magic u32        'ggml' (0x67676d6c, unversioned), 'ggmf' (v1) or 'ggjt' (v1, v2, v3)
    version u32      absent for 'ggml'
    hparams 7 x u32  n_vocab, n_embd, n_mult, n_head, n_layer, n_rot, ftype
    vocab            n_vocab x (len u32, bytes[len], score f32 -- no score for 'ggml')
    tensors until EOF: n_dims u32, name_len u32, type u32, ne[n_dims] u32, name,
                     (GGJT: zero padding to a 32-byte file offset), data

`ne[0]` is the row length, as in GGUF. Tensor types use that era's ggml ids, which include
Q4_2 (4) and Q4_3 (5), since removed; their block layouts by version are in `blocks.py`.
Every failure is a one-line GGUFError naming the file and the problem.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from enum import Enum, IntEnum
from pathlib import Path

import numpy as np

from corral.errors import GGUFError, UnsupportedError


class Container(Enum):
    """The file flavour, in the order llama.cpp introduced them (llama_file_version)."""

    GGML = "GGML"  # unversioned: no vocab scores, no alignment
    GGMF_V1 = "GGMFv1"  # version field, vocab scores
    GGJT_V1 = "GGJTv1"  # tensor data aligned to 32 bytes (mmap-able)
    GGJT_V2 = "GGJTv2"  # Q4/Q5 nibble order changed (llama.cpp PR #1405)
    GGJT_V3 = "GGJTv3"  # Q4_0/Q4_1/Q8_0 scales became f16 (PR #1508); K-quants appeared

    @property
    def has_scores(self) -> bool:
        return self is not Container.GGML

    @property
    def aligned(self) -> bool:
        return self in (Container.GGJT_V1, Container.GGJT_V2, Container.GGJT_V3)

    @property
    def block_era(self) -> int:
        """1: the original block layouts, 2: after PR #1405, 3: after PR #1508 (today's)."""
        return {Container.GGJT_V2: 2, Container.GGJT_V3: 3}.get(self, 1)


MAGICS = {0x67676D6C: "ggml", 0x67676D66: "ggmf", 0x67676A74: "ggjt"}


class LegacyType(IntEnum):
    """ggml tensor type ids as those files store them."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q4_2 = 4  # 16-value blocks, f16 scale; removed in May 2023
    Q4_3 = 5  # 16-value blocks, f16 scale and min; removed in April 2023
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14


# (elements per block, bytes per block) by type and block era (1, 2, 3)
BLOCK_GEOMETRY: dict[LegacyType, dict[int, tuple[int, int]]] = {
    LegacyType.F32: {1: (1, 4), 2: (1, 4), 3: (1, 4)},
    LegacyType.F16: {1: (1, 2), 2: (1, 2), 3: (1, 2)},
    LegacyType.Q4_0: {1: (32, 20), 2: (32, 20), 3: (32, 18)},  # f32 d until v3
    LegacyType.Q4_1: {1: (32, 24), 2: (32, 24), 3: (32, 20)},  # f32 d, m until v3
    LegacyType.Q4_2: {1: (16, 10)},
    LegacyType.Q4_3: {1: (16, 12)},
    LegacyType.Q5_0: {1: (32, 22), 2: (32, 22), 3: (32, 22)},
    LegacyType.Q5_1: {1: (32, 24), 2: (32, 24), 3: (32, 24)},
    LegacyType.Q8_0: {1: (32, 36), 2: (32, 36), 3: (32, 34)},  # f32 d until v3
    LegacyType.Q2_K: {3: (256, 84)},
    LegacyType.Q3_K: {3: (256, 110)},
    LegacyType.Q4_K: {3: (256, 144)},
    LegacyType.Q5_K: {3: (256, 176)},
    LegacyType.Q6_K: {3: (256, 210)},
}


@dataclass(frozen=True)
class HParams:
    n_vocab: int
    n_embd: int
    n_mult: int
    n_head: int
    n_layer: int
    n_rot: int
    ftype: int


@dataclass(frozen=True)
class LegacyTensor:
    """One tensor: `ne` in ggml order (row length first); `data` is raw bytes, mapped."""

    name: str
    type: LegacyType
    ne: tuple[int, ...]
    data: np.ndarray  # uint8, zero-copy view into the file

    @property
    def shape(self) -> tuple[int, ...]:
        """Torch order: rows first."""
        return tuple(reversed(self.ne))


@dataclass
class LegacyModel:
    path: Path
    container: Container
    hparams: HParams
    vocab: list[tuple[bytes, float]]
    tensors: dict[str, LegacyTensor]


class _Reader:
    """Bounds-checked little-endian reads over the mapped file."""

    def __init__(self, buf: np.ndarray, name: str) -> None:
        self.buf, self.mv, self.name, self.off = buf, memoryview(buf), name, 0  # type: ignore[arg-type]

    def fail(self, what: str) -> GGUFError:
        return GGUFError(f"{self.name}: truncated or corrupt legacy GGML file: {what}")

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.off + n > len(self.buf):
            raise self.fail(f"{what} at byte {self.off} runs past the end ({len(self.buf)} bytes)")
        out = self.mv[self.off : self.off + n]
        self.off += n
        return out

    def u32(self, what: str) -> int:
        return int(struct.unpack("<I", self.take(4, what))[0])

    def f32(self, what: str) -> float:
        return float(struct.unpack("<f", self.take(4, what))[0])


def _container(magic: int, version: int | None, name: str) -> Container:
    if magic == 0x67676D6C:
        return Container.GGML
    if magic == 0x67676D66 and version == 1:
        return Container.GGMF_V1
    if magic == 0x67676A74 and version in (1, 2, 3):
        return (Container.GGJT_V1, Container.GGJT_V2, Container.GGJT_V3)[version - 1]
    kind = MAGICS.get(magic)
    if kind is None:
        raise GGUFError(f"{name}: not a legacy GGML/GGMF/GGJT file (magic {magic:#010x})")
    raise UnsupportedError(f"{name}: {kind.upper()} version {version} is not a known version")


def read_legacy_file(path: str | os.PathLike[str]) -> LegacyModel:
    """Parse one legacy llama file's header, vocabulary and tensor table (data stay mapped).
    A model split over several files is joined by `parts.read_legacy`."""
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise GGUFError(f"{name}: no such file")
    if path.stat().st_size < 8:
        raise GGUFError(f"{name}: too short to be a GGML model ({path.stat().st_size} bytes)")
    buf = np.memmap(path, dtype=np.uint8, mode="r")
    r = _Reader(buf, name)
    magic = r.u32("magic")
    version = None if magic == 0x67676D6C else r.u32("version")
    container = _container(magic, version, name)
    hp = HParams(*(r.u32(f"hyper-parameter {i}") for i in range(7)))
    if not (0 < hp.n_vocab <= 1_000_000 and 0 < hp.n_embd <= 1 << 17 and 0 < hp.n_head <= 4096
            and 0 < hp.n_layer <= 4096 and hp.n_embd % hp.n_head == 0):  # fmt: skip
        raise GGUFError(f"{name}: corrupt legacy GGML header: implausible hyper-parameters {hp}")
    vocab = []
    for i in range(hp.n_vocab):
        n = r.u32(f"length of token {i}")
        if n > 4096:
            raise r.fail(f"token {i} claims {n} bytes")
        text = bytes(r.take(n, f"token {i}"))
        vocab.append((text, r.f32(f"score of token {i}") if container.has_scores else 0.0))
    tensors: dict[str, LegacyTensor] = {}
    era = container.block_era
    while r.off < len(buf):
        n_dims = r.u32("tensor dimension count")
        name_len = r.u32("tensor name length")
        raw_type = r.u32("tensor type")
        if not 1 <= n_dims <= 3 or not 0 < name_len <= 512:
            raise r.fail(f"tensor {len(tensors)} has {n_dims} dimensions, a {name_len}-byte name")
        ne = tuple(r.u32("tensor shape") for _ in range(n_dims))
        try:
            tname = bytes(r.take(name_len, "tensor name")).decode("utf-8")
        except UnicodeDecodeError:
            raise r.fail(f"tensor {len(tensors)} has a name that is not text") from None
        try:
            ttype = LegacyType(raw_type)
        except ValueError:
            raise UnsupportedError(
                f"{name}: tensor '{tname}' has unknown ggml type id {raw_type}"
            ) from None
        geometry = BLOCK_GEOMETRY[ttype].get(era)
        if geometry is None:
            raise UnsupportedError(
                f"{name}: tensor '{tname}' is {ttype.name}, which {container.value} files "
                "cannot hold"
            )
        if container.aligned:
            r.off += -r.off & 31  # GGJT pads each tensor's data to a 32-byte offset
        block, size = geometry
        if any(d <= 0 for d in ne) or ne[0] % block:
            raise r.fail(f"tensor '{tname}' has shape {ne}, not whole {ttype.name} blocks")
        nbytes = int(np.prod(ne, dtype=np.int64)) // block * size
        start = r.off
        r.take(nbytes, f"data of tensor '{tname}'")
        data = buf[start : start + nbytes]  # a view: the weights stay in the file
        tensors[tname] = LegacyTensor(tname, ttype, ne, data)
    if not tensors:
        raise r.fail("no tensors after the vocabulary")
    return LegacyModel(path, container, hp, vocab, tensors)
