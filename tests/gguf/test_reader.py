"""GGUF reading: metadata and tensors of a written file, and a one-line error for each way a
file can be wrong."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFWriter

import corral
from corral.errors import GGUFError, UnsupportedError
from corral.gguf import open_gguf
from tiny_gguf import write_tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny(
        tmp_path_factory.mktemp("gguf") / "tiny.gguf", qtype=GGMLQuantizationType.Q8_0
    )


def test_reads_metadata_and_tensors(tiny: Path) -> None:
    g = open_gguf(tiny)
    assert g.version == 3
    assert g.architecture == "llama"
    assert g.metadata["llama.block_count"] == 2
    assert g.metadata["tokenizer.ggml.tokens"][:3] == [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
    ]
    t = g.tensors["blk.0.attn_q.weight"]
    assert t.ggml_type == GGMLQuantizationType.Q8_0
    assert t.shape == (64, 64)  # PyTorch order: rows first
    assert t.data.dtype == np.uint8 and t.data.shape == (64, 64 // 32 * 34)
    norm = g.tensors["blk.0.attn_norm.weight"]
    assert norm.data.dtype == np.float32 and norm.shape == (64,)


def test_version_2_is_read(tiny: Path, tmp_path: Path) -> None:
    data = bytearray(tiny.read_bytes())
    data[4:8] = struct.pack("<I", 2)
    p = tmp_path / "v2.gguf"
    p.write_bytes(bytes(data))
    assert open_gguf(p).version == 2


def test_unknown_version(tiny: Path, tmp_path: Path) -> None:
    data = bytearray(tiny.read_bytes())
    data[4:8] = struct.pack("<I", 9)
    p = tmp_path / "v9.gguf"
    p.write_bytes(bytes(data))
    with pytest.raises(GGUFError, match=r"v9.gguf: GGUF version 9 is not supported"):
        open_gguf(p)


@pytest.mark.parametrize("keep", [0.5, 0.995, 20 / 1e9])
def test_truncated_file_names_file_and_problem(tiny: Path, tmp_path: Path, keep: float) -> None:
    data = tiny.read_bytes()
    p = tmp_path / "cut.gguf"
    p.write_bytes(data[: max(8, int(len(data) * keep))])
    with pytest.raises(GGUFError) as e:
        open_gguf(p)
    msg = str(e.value)
    assert msg.startswith("cut.gguf: ") and "truncated" in msg
    assert "\n" not in msg


def test_corrupt_header(tiny: Path, tmp_path: Path) -> None:
    data = bytearray(tiny.read_bytes())
    data[16:24] = struct.pack("<Q", 2**40)  # absurd metadata count
    p = tmp_path / "bad.gguf"
    p.write_bytes(bytes(data))
    with pytest.raises(GGUFError, match="bad.gguf: corrupt header"):
        open_gguf(p)


def test_corrupt_value_type(tiny: Path, tmp_path: Path) -> None:
    data = bytearray(tiny.read_bytes())
    # first key: u64 length, then the key, then its u32 value type
    klen = struct.unpack_from("<Q", data, 24)[0]
    data[32 + klen : 36 + klen] = struct.pack("<I", 77)
    p = tmp_path / "badtype.gguf"
    p.write_bytes(bytes(data))
    with pytest.raises(GGUFError, match="unknown value type 77"):
        open_gguf(p)


@pytest.mark.parametrize(
    ("head", "says"),
    [
        (struct.pack("<Q", 50) + b'{"__metadata__":{}}' + b" " * 40, "safetensors"),
        (b"tjgg" + struct.pack("<I", 3) + b"\0" * 64, "GGJT"),
        (b"lmgg" + b"\0" * 64, "unversioned GGML"),
        (b"PK\x03\x04" + b"\0" * 64, "zip"),
        (b'{"a": 1}', "JSON"),
        (b"", "empty"),
    ],
)
def test_not_gguf_says_what_it_looks_like(tmp_path: Path, head: bytes, says: str) -> None:
    p = tmp_path / "model.bin"
    p.write_bytes(head)
    with pytest.raises(GGUFError, match=f"model.bin: not a GGUF file, it looks like .*{says}"):
        open_gguf(p)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(GGUFError, match="nothere.gguf: no such file"):
        open_gguf(tmp_path / "nothere.gguf")


def test_unknown_architecture(tmp_path: Path) -> None:
    p = tmp_path / "odd.gguf"
    w = GGUFWriter(str(p), "frobnicator")
    w.add_tensor("x", np.zeros(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UnsupportedError, match="architecture 'frobnicator' is not supported"):
        corral.load(p)


def test_unsupported_tensor_type_is_named(tmp_path: Path) -> None:
    p = write_tiny(
        tmp_path / "iq.gguf",
        n_embd=256,
        n_head=4,
        raw_types={"blk.0.attn_q.weight": GGMLQuantizationType.IQ2_XXS},
    )
    with pytest.raises(
        UnsupportedError,
        match=r"iq.gguf: tensor 'blk.0.attn_q.weight' has type IQ2_XXS, which is not supported",
    ):
        corral.load(p)


def _string_array_file(path: Path, strings: list[bytes]) -> bytes:
    """A GGUF with one string-array key (raw bytes, invalid UTF-8 allowed) and no tensors."""
    key = b"tokenizer.ggml.tokens"
    head = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key
    arr = struct.pack("<IIQ", 9, 8, len(strings))  # ARRAY of STRING
    arr += b"".join(struct.pack("<Q", len(s)) + s for s in strings)
    data = head + arr
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("c_parser", [True, False])
def test_string_arrays_parse_and_cut_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, c_parser: bool
) -> None:
    from corral.gguf import reader

    if not c_parser:
        monkeypatch.setattr(reader, "_strings_ext", None)
    else:
        assert reader._strings_ext is not None, "corral._gguf_strings was not built"
    strings = [b"", b"a", "\u00e9t\u00e9".encode(), b"\xff\xfebad", b"x" * 300]
    data = _string_array_file(tmp_path / "s.gguf", strings)
    got = open_gguf(tmp_path / "s.gguf").metadata["tokenizer.ggml.tokens"]
    assert got == [s.decode("utf-8", "replace") for s in strings]
    # cut inside the last string: the error names that string and the key
    (tmp_path / "cut.gguf").write_bytes(data[:-10])
    with pytest.raises(GGUFError, match=r"cut.gguf: truncated .*string 4 of 'tokenizer.ggml"):
        open_gguf(tmp_path / "cut.gguf")
