"""Multi-part legacy files (model.bin, model.bin.1, ...): written here from early
llama.cpp's layout (1-D tensors repeated, tok_embeddings / wo / w2 split by columns, the
other matrices by rows), migrated, and compared with the same model in one file."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from legacy_files import FTYPE, MAGIC, OLD_ID, TinyLlama, era_of, vocab, write_legacy

import corral
from corral.cli.main import main
from corral.errors import GGUFError
from corral.gguf.reader import open_gguf
from corral.legacy import migrate, read_legacy, read_legacy_file

# 273 tokens (the test vocabulary) = 3 x 91: output.weight splits by rows into 3 parts;
# n_embd 96 and n_ff 192 give 32- and 64-value column shards (whole Q4/Q8 blocks)
N_PARTS = 3
COLUMN_SPLIT = ("tok_embeddings.weight", ".attention.wo.weight", ".feed_forward.w2.weight")


def _model(kind: str) -> TinyLlama:
    return TinyLlama(n_embd=96, n_head=4, n_ff=192, kind=kind)


def write_parts(path: Path, model: TinyLlama, magic: str, version: int, n: int) -> list[Path]:
    """The model split over `path`, `path.1`, ... as early llama.cpp's converter did."""
    era = era_of(magic, version)
    voc = vocab()
    bufs = []
    for _ in range(n):
        buf = bytearray(struct.pack("<I", MAGIC[magic]))
        if magic != "ggml":
            buf += struct.pack("<I", version)
        buf += struct.pack("<7I", len(voc), model.n_embd, 256, model.n_head, model.n_layer,
                           model.n_embd // model.n_head, FTYPE[model.kind])  # fmt: skip
        for old, _tok, _ty, score in voc:
            buf += struct.pack("<I", len(old)) + old
            if magic != "ggml":
                buf += struct.pack("<f", score)
        bufs.append(buf)
    for old_name, _new, w in model.tensors(era):
        rows, cols = w.values.shape
        raw = w.old.reshape(rows, -1)
        if rows == 1 and "norm" in old_name:
            shards, ne = [raw] * n, (cols,)  # the same vector in every part
        elif old_name.startswith(COLUMN_SPLIT[0]) or old_name.endswith(COLUMN_SPLIT[1:]):
            shards, ne = np.split(raw, n, axis=1), (cols // n, rows)
        else:
            shards, ne = np.split(raw, n, axis=0), (cols, rows // n)
        name = old_name.encode()
        for buf, shard in zip(bufs, shards, strict=True):
            buf += struct.pack("<3I", len(ne), len(name), OLD_ID[w.old_type])
            buf += struct.pack(f"<{len(ne)}I", *ne) + name
            if magic == "ggjt":
                buf += b"\0" * (-len(buf) & 31)
            buf += np.ascontiguousarray(shard).tobytes()
    paths = [path] + [path.with_name(f"{path.name}.{i}") for i in range(1, n)]
    for p, buf in zip(paths, bufs, strict=True):
        p.write_bytes(bytes(buf))
    return paths


@pytest.mark.parametrize(
    ("magic", "version", "kind"),
    [("ggml", 0, "F16"), ("ggmf", 1, "Q4_1"), ("ggjt", 1, "Q4_0"), ("ggjt", 3, "Q8_0")],
)
def test_parts_migrate_to_the_same_model_as_one_file(
    magic: str, version: int, kind: str, tmp_path: Path
) -> None:
    model = _model(kind)
    whole = write_legacy(tmp_path / "whole.bin", model, magic, version)
    parts = write_parts(tmp_path / "split.bin", model, magic, version, N_PARTS)
    # the first part alone is a third of each matrix
    first = read_legacy_file(parts[0])
    assert first.tensors["tok_embeddings.weight"].ne == (96 // N_PARTS, len(vocab()))
    joined, single = read_legacy(parts[0]), read_legacy(whole)
    assert list(joined.tensors) == list(single.tensors)
    for name, t in single.tensors.items():
        u = joined.tensors[name]
        assert (u.type, u.ne) == (t.type, t.ne), name
        np.testing.assert_array_equal(np.asarray(u.data), np.asarray(t.data), err_msg=name)
    migrate(whole, tmp_path / "whole.gguf")
    report = migrate(parts[0], tmp_path / "split.gguf")
    assert report.n_tensors == 3 + 9 * model.n_layer
    with open_gguf(tmp_path / "whole.gguf") as a, open_gguf(tmp_path / "split.gguf") as b:
        for name, t in a.tensors.items():
            np.testing.assert_array_equal(np.asarray(b.tensors[name].data), np.asarray(t.data))
    a, b = corral.load(tmp_path / "whole.gguf"), corral.load(tmp_path / "split.gguf")
    ids = a.tokenize("hello world the quick fox")
    np.testing.assert_array_equal(a.logits(ids), b.logits(ids))


def test_cli_migrates_a_split_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parts = write_parts(tmp_path / "m.bin", _model("F16"), "ggjt", 1, N_PARTS)
    assert main(["migrate", str(parts[0]), "-o", str(tmp_path / "m.gguf")]) == 0
    assert "21 tensors" in capsys.readouterr().out
    with open_gguf(tmp_path / "m.gguf") as g:
        assert tuple(g.tensors["output.weight"].shape) == (len(vocab()), 96)


def test_a_missing_part_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parts = write_parts(tmp_path / "m.bin", _model("F16"), "ggjt", 1, N_PARTS)
    parts[2].unlink()
    assert main(["migrate", str(parts[0]), "-o", str(tmp_path / "m.gguf")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "split over 3 files, but m.bin.2 is missing" in err
    assert not (tmp_path / "m.gguf").exists()


def test_a_part_of_another_model_is_refused(tmp_path: Path) -> None:
    parts = write_parts(tmp_path / "m.bin", _model("F16"), "ggjt", 1, N_PARTS)
    other = write_parts(tmp_path / "o.bin", TinyLlama(n_embd=96, n_ff=192, n_layer=3), "ggjt",
                        1, N_PARTS)  # fmt: skip
    parts[1].write_bytes(other[1].read_bytes())
    with pytest.raises(GGUFError, match="header differs"):
        read_legacy(parts[0])
