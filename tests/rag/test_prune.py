"""`corral index add FOLDER` again after files were deleted: their chunks go, in one
transaction, and the summary says so; files outside the folder, excluded ones still on disk
and API documents stay."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.cli.main import main
from corral.rag.db import API_KIND, Collection
from corral.rag.indexer import Indexer, Outcome
from corral.rag.retrieve import SearchMode, search
from rag_stubs import StubEmbedder


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    d = tmp_path / "docs"
    (d / "sub").mkdir(parents=True)
    (d / "a.md").write_text("# Cats\n\nCats purr and sleep all day.\n")
    (d / "b.txt").write_text("Zebras run fast across the plains.\n")
    (d / "sub" / "c.rst").write_text("Birds\n=====\n\nBirds fly south in winter.\n")
    return d


def open_col(tmp_path: Path, emb: StubEmbedder) -> Collection:
    return Collection.open_or_create("t", emb.name, emb.dimensions, home=tmp_path / "home")


def keyword_paths(col: Collection, query: str) -> list[str]:
    return [h.path for h in search(col, None, query, 5, mode=SearchMode.KEYWORD)]


def test_deleted_files_lose_their_chunks(tmp_path: Path, docs: Path, stub: StubEmbedder) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("Zebras live outside the folder too.\n")
    with open_col(tmp_path, stub) as col:
        Indexer(col, stub).add([docs, outside])
        assert len(col.files()) == 4
        (docs / "b.txt").unlink()
        (docs / "sub" / "c.rst").unlink()
        outside.unlink()  # not under the folder indexed again: stays
        r = Indexer(col, stub).add([docs])
        removed = sorted(Path(x.path).name for x in r.results if x.outcome is Outcome.REMOVED)
        assert removed == ["b.txt", "c.rst"]
        assert r.count(Outcome.UNCHANGED) == 1
        assert "2 removed" in r.summary() and "2 dropped" in r.summary()
        assert sorted(Path(f["path"]).name for f in col.files()) == ["a.md", "outside.txt"]
        assert keyword_paths(col, "birds") == []
        assert keyword_paths(col, "zebras") == [str(outside.resolve())]
        # vectors went too: a vector search can only find what is left
        assert col.stats()["chunks"] == 2
        hits = search(col, stub, "birds fly south", 5, mode=SearchMode.VECTOR)
        assert {Path(h.path).name for h in hits} <= {"a.md", "outside.txt"}


def test_excluded_but_present_files_stay(tmp_path: Path, docs: Path, stub: StubEmbedder) -> None:
    with open_col(tmp_path, stub) as col:
        Indexer(col, stub).add([docs])
        r = Indexer(col, stub).add([docs], include=["*.md"])
        assert r.count(Outcome.REMOVED) == 0 and len(col.files()) == 3


def test_subfolder_run_prunes_only_inside_it(
    tmp_path: Path, docs: Path, stub: StubEmbedder
) -> None:
    with open_col(tmp_path, stub) as col:
        Indexer(col, stub).add([docs])
        (docs / "b.txt").unlink()
        (docs / "sub" / "c.rst").unlink()
        r = Indexer(col, stub).add([docs / "sub"])
        assert [Path(x.path).name for x in r.results if x.outcome is Outcome.REMOVED] == ["c.rst"]
        assert any(Path(f["path"]).name == "b.txt" for f in col.files())


def test_a_sibling_folder_with_the_same_prefix_is_not_pruned(
    tmp_path: Path, stub: StubEmbedder
) -> None:
    (tmp_path / "doc").mkdir()
    (tmp_path / "docs2").mkdir()
    (tmp_path / "doc" / "x.txt").write_text("Alpha text.\n")
    (tmp_path / "docs2" / "y.txt").write_text("Beta text.\n")
    with open_col(tmp_path, stub) as col:
        Indexer(col, stub).add([tmp_path / "doc", tmp_path / "docs2"])
        (tmp_path / "docs2" / "y.txt").unlink()
        r = Indexer(col, stub).add([tmp_path / "doc"])  # "doc" is a string prefix of "docs2"
        assert r.count(Outcome.REMOVED) == 0 and len(col.files()) == 2


def test_prune_is_one_transaction(tmp_path: Path, docs: Path, stub: StubEmbedder) -> None:
    with open_col(tmp_path, stub) as col:
        Indexer(col, stub).add([docs])
        (docs / "b.txt").unlink()
        (docs / "sub" / "c.rst").unlink()
        calls = 0
        real = col._delete_chunks

        def dies_on_second(path: str) -> int:
            nonlocal calls
            calls += 1
            if calls == 2:
                raise KeyboardInterrupt
            return real(path)

        col._delete_chunks = dies_on_second  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt):
            Indexer(col, stub).add([docs])
        col._delete_chunks = real  # type: ignore[method-assign]
        assert len(col.files()) == 3 and col.stats()["chunks"] == 3  # nothing dropped
        r = Indexer(col, stub).add([docs])  # the next run finishes the job
        assert r.count(Outcome.REMOVED) == 2 and len(col.files()) == 1


def test_api_documents_are_never_pruned(tmp_path: Path, docs: Path, stub: StubEmbedder) -> None:
    with open_col(tmp_path, stub) as col:
        Indexer(col, stub).add([docs])
        ghost = str(docs.resolve() / "ghost.txt")  # an API document id that looks like a path
        col.replace_file(ghost, "h", API_KIND, 1, 0.0, [], [])
        r = Indexer(col, stub).add([docs])
        assert r.count(Outcome.REMOVED) == 0
        assert ghost in [f["path"] for f in col.files()]


def test_cli_summary_reports_removed(
    tmp_path: Path, docs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CORRAL_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("corral.cli.rag._embedder", lambda name: StubEmbedder())
    assert main(["index", "add", str(docs), "-c", "notes"]) == 0
    capsys.readouterr()
    (docs / "b.txt").unlink()
    assert main(["index", "add", str(docs), "-c", "notes"]) == 0
    out, err = capsys.readouterr()
    assert "1 removed" in out and "1 dropped" in out
    assert f"removed {(docs / 'b.txt').resolve()}" in err
