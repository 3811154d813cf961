"""Collection store and indexer: idempotent re-index, changed files, interrupted runs,
filters, hybrid ranking, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from corral.errors import InvalidRequestError
from corral.rag.db import Collection, CollectionNotFoundError
from corral.rag.indexer import Indexer, Outcome
from corral.rag.retrieve import SearchMode, search
from rag_stubs import StubEmbedder


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    d = tmp_path / "docs"
    (d / "sub").mkdir(parents=True)
    (d / "a.md").write_text("# Cats\n\nCats purr and sleep all day.\n\n## Food\n\nThey eat fish.\n")
    (d / "b.txt").write_text("Zebras run fast across the plains.\n")
    (d / "sub" / "c.rst").write_text("Birds\n=====\n\nBirds fly south in winter.\n")
    (d / "bin.txt").write_bytes(b"\x00\x01binary")
    (d / "skip.log.bak").write_text("not a known type")
    return d


def open_col(tmp_path: Path, emb: StubEmbedder) -> Collection:
    return Collection.open_or_create("t", emb.name, emb.dimensions, home=tmp_path / "home")


def test_reindex_unchanged_does_no_embedding_work(tmp_path: Path, docs: Path, stub) -> None:
    with open_col(tmp_path, stub) as col:
        first = Indexer(col, stub).add([docs])
        assert first.count(Outcome.ADDED) == 3
        assert [r.reason for r in first.results if r.outcome is Outcome.SKIPPED] == ["binary file"]
        calls = stub.calls
        again = Indexer(col, stub).add([docs])
        assert stub.calls == calls  # zero embedder calls the second time
        assert again.count(Outcome.UNCHANGED) == 3 and again.embedded == 0
        assert col.stats()["chunks"] == 4


def test_changed_file_replaces_its_chunks(tmp_path: Path, docs: Path, stub) -> None:
    with open_col(tmp_path, stub) as col:
        Indexer(col, stub).add([docs])
        (docs / "a.md").write_text("# Cats\n\nCats purr and sleep all day.\n\nNew: dogs bark.\n")
        stub.texts = 0
        r = Indexer(col, stub).add([docs / "a.md"])
        assert r.results[0].outcome is Outcome.UPDATED
        assert stub.texts == 1  # only the changed chunk; the unchanged one reuses its vector
        texts = [c["text"] for c in col.chunks(list(range(1, 100))).values()]
        assert not any("fish" in t for t in texts) and any("dogs bark" in t for t in texts)
        assert [h.path for h in search(col, stub, "fish", 5, mode=SearchMode.KEYWORD)] == []


def test_interrupted_run_keeps_committed_files(tmp_path: Path, docs: Path) -> None:
    class Dies(StubEmbedder):
        def embed(self, texts, **options):  # noqa: ANN001, ANN202
            if self.calls == 1:
                raise KeyboardInterrupt  # killed during the second file
            return super().embed(texts, **options)

    dying = Dies()
    with open_col(tmp_path, dying) as col, pytest.raises(KeyboardInterrupt):
        Indexer(col, dying).add([docs])
    fine = StubEmbedder()
    with open_col(tmp_path, fine) as col:
        assert len(col.files()) == 1  # the first file was committed, the second rolled back
        r = Indexer(col, fine).add([docs])
        assert (r.count(Outcome.UNCHANGED), r.count(Outcome.ADDED)) == (1, 2)
        assert col.stats()["chunks"] == 4


def test_filters_globs_and_rm(tmp_path: Path, docs: Path, stub) -> None:
    with open_col(tmp_path, stub) as col:
        r = Indexer(col, stub).add([docs], include=["*.md", "*.rst"], exclude=["*/sub/*"])
        assert [Path(x.path).name for x in r.results] == ["a.md"]
        Indexer(col, stub).add([docs])
        hits = search(col, stub, "birds fish zebras", 5, where={"path": "*.rst"})
        assert {Path(h.path).name for h in hits} == {"c.rst"}
        hits = search(col, stub, "fish", 5, where={"heading": "food"})
        assert [h.heading for h in hits] == ["Cats > Food"]
        assert col.remove_file(str((docs / "b.txt").resolve()))
        assert all(Path(f["path"]).name != "b.txt" for f in col.files())


def test_hybrid_fuses_both_lists(tmp_path: Path, docs: Path, stub) -> None:
    with open_col(tmp_path, stub) as col:
        Indexer(col, stub).add([docs])
        hits = search(col, stub, "zebras", 3)
        assert Path(hits[0].path).name == "b.txt"
        assert hits[0].vector_rank == 1 and hits[0].keyword_rank == 1
        assert hits[0].score == pytest.approx(2 / 61, abs=1e-6)
        assert hits[0].location.endswith("b.txt:1")


def test_bad_input_errors(tmp_path: Path, docs: Path, stub) -> None:
    with open_col(tmp_path, stub) as col:
        with pytest.raises(InvalidRequestError, match="empty"):
            search(col, stub, "  ", 3)
        with pytest.raises(InvalidRequestError, match="unknown filter"):
            search(col, stub, "x", 3, where={"colour": "red"})
    with pytest.raises(CollectionNotFoundError, match="nope"):
        Collection.open("nope", home=tmp_path / "home")
    with pytest.raises(InvalidRequestError, match="indexed with stub"):
        Collection.open_or_create("t", "other", 384, home=tmp_path / "home")
    with pytest.raises(InvalidRequestError, match="no such file"):
        Indexer(open_col(tmp_path, stub), stub).add([tmp_path / "missing"])


def test_wal_mode(tmp_path: Path, stub) -> None:
    with open_col(tmp_path, stub) as col:
        assert col.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.realmodel
def test_hybrid_finds_keyword_and_semantic_hits(tmp_path: Path, minilm) -> None:  # noqa: ANN001
    d = tmp_path / "d"
    d.mkdir()
    (d / "code.txt").write_text("Set the flag ZXQ_991 to enable the turbo widget cache.\n")
    (d / "ocean.md").write_text("# Sea\n\nWhales are large marine mammals that sing.\n")
    (d / "misc.txt").write_text("The tax form is due in April.\n\nBread needs flour and yeast.\n")
    col = Collection.open_or_create("r", minilm.name, minilm.dimensions, home=tmp_path / "h")
    Indexer(col, minilm).add([d])
    kw = search(col, minilm, "ZXQ_991", 2)
    assert Path(kw[0].path).name == "code.txt" and kw[0].keyword_rank == 1
    sem = search(col, minilm, "enormous animals of the ocean that make songs", 2)
    assert Path(sem[0].path).name == "ocean.md" and sem[0].vector_rank == 1
    assert np.isclose(np.linalg.norm(minilm.embed(["x"])[0]), 1.0)
