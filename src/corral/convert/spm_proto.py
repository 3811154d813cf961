"""Read the pieces of a SentencePiece `tokenizer.model` without the sentencepiece package.

The file is a protobuf `ModelProto`; all a GGUF vocabulary needs is its repeated field 1,
`SentencePiece {string piece = 1; float score = 2; Type type = 3}`, so a few lines of wire
format decoding replace a compiled dependency. Types are SentencePiece's (and GGUF's):
1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from corral.convert.checkpoint import ConvertError

NORMAL = 1


@dataclass(frozen=True)
class Piece:
    text: str
    score: float
    type: int


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int, bytes | int]]:
    """(field number, wire type, value) for each field of one message."""
    out: list[tuple[int, int, bytes | int]] = []
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _varint(buf, i)
            out.append((field, wire, v))
        elif wire == 1:
            out.append((field, wire, buf[i : i + 8]))
            i += 8
        elif wire == 2:
            n, i = _varint(buf, i)
            out.append((field, wire, buf[i : i + n]))
            i += n
        elif wire == 5:
            out.append((field, wire, buf[i : i + 4]))
            i += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    return out


def read_pieces(path: Path) -> list[Piece]:
    """The vocabulary of a SentencePiece model file, in id order."""
    try:
        fields = _fields(path.read_bytes())
        pieces = []
        for field, _, value in fields:
            if field != 1 or not isinstance(value, bytes):
                continue
            text, score, typ = "", 0.0, NORMAL
            for f, _, v in _fields(value):
                if f == 1 and isinstance(v, bytes):
                    text = v.decode("utf-8")
                elif f == 2 and isinstance(v, bytes):
                    (score,) = struct.unpack("<f", v)
                elif f == 3 and isinstance(v, int):
                    typ = v
            pieces.append(Piece(text, score, typ))
    except (OSError, ValueError, IndexError, UnicodeDecodeError, struct.error) as e:
        raise ConvertError(f"{path}: not a readable SentencePiece model ({e})") from None
    if not pieces:
        raise ConvertError(f"{path}: a SentencePiece model with no pieces")
    return pieces


def write_pieces(pieces: list[Piece]) -> bytes:
    """Encode pieces as a minimal ModelProto (for tests that need a tokenizer.model)."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            b = n & 0x7F
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)

    buf = bytearray()
    for p in pieces:
        text = p.text.encode("utf-8")
        msg = b"\x0a" + varint(len(text)) + text + b"\x15" + struct.pack("<f", p.score)
        msg += b"\x18" + varint(p.type)
        buf += b"\x0a" + varint(len(msg)) + msg
    return bytes(buf)
