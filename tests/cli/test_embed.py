"""`corral embed`: vectors as JSON lines, stdin input, options, errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from corral.cli.main import main
from corral.embed import load_embedder
from corral.store import Store
from tiny_encoders import N_EMBD, random_state, write_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder(tmp_path_factory.mktemp("m") / "tiny-bert", "bert", random_state("bert"))


def test_texts_to_json_lines(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["embed", str(folder), "hello world", "a dog"]) == 0
    lines = capsys.readouterr().out.splitlines()
    vecs = np.array([json.loads(line) for line in lines])
    np.testing.assert_allclose(
        vecs, load_embedder(folder).embed(["hello world", "a dog"]), atol=1e-6
    )


def test_stdin_lines_and_json_and_options(
    folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n\n  \nthe cat\n"))
    args = ["embed", str(folder), "-", "--json", "--dimensions", "8", "--no-normalize"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["dimensions"] == 8 and doc["token_counts"] == [3, 4]
    want = load_embedder(folder).embed(["hello", "the cat"], normalize=False, dimensions=8)
    np.testing.assert_allclose(doc["embeddings"], want, atol=1e-6)


def test_by_store_name(folder: Path, store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    store.add_folder(folder, "tb")
    assert main(["embed", "tb", "hi"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == N_EMBD


def test_errors_are_one_line(
    folder: Path, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    long = " ".join(["cat"] * 100)
    assert main(["embed", str(folder), long, "--truncate", "error"]) == 1
    assert "at most" in capsys.readouterr().err
    assert main(["embed", "nope", "hi"]) == 1
    assert "not found" in capsys.readouterr().err
