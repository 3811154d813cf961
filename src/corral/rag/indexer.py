"""Files -> committed chunks: walk, hash, load, split, embed, store; one transaction a file.

A file whose bytes hash as stored is skipped before it is even parsed (no embedding work);
a changed file is re-split and only chunks whose text is new are embedded (the others reuse
their stored vectors), then its rows are swapped in one transaction. A run that dies keeps
every file already committed; running it again picks up where it stopped. Unreadable or
binary files are reported with a reason and never stop the run. A folder indexed again loses
the chunks of its files that were deleted since (one transaction for all of them).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from corral.errors import InvalidRequestError
from corral.rag.db import Collection
from corral.rag.loaders import Unreadable, kind_of, load
from corral.rag.splitter import SplitOptions, Splitter
from corral.rag.types import Block, DocKind

# Folders a recursive walk never enters: tool state and dependencies, not the user's text.
SKIP_DIRS = frozenset({".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv",
                       ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox", "dist", "build"})  # fmt: skip


class EmbedderLike(Protocol):
    """What indexing needs of an embedder (`corral.embed.Embedder` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def dimensions(self) -> int: ...
    @property
    def max_tokens(self) -> int: ...
    def count_tokens(self, texts: str | Sequence[str]) -> list[int]: ...
    def embed(self, texts: str | Sequence[str], **options: object) -> np.ndarray: ...


class Outcome(StrEnum):
    ADDED = "added"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"
    REMOVED = "removed"  # indexed from a folder before; the file is gone now


@dataclass(frozen=True)
class FileResult:
    path: str
    outcome: Outcome
    chunks: int = 0  # written; for REMOVED: dropped
    embedded: int = 0  # chunks that needed the embedding model (the rest were reused)
    reason: str = ""


@dataclass
class IndexReport:
    results: list[FileResult] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        return sum(r.outcome is outcome for r in self.results)

    @property
    def embedded(self) -> int:
        return sum(r.embedded for r in self.results)

    def summary(self) -> str:
        """One line: files by outcome, chunks written and embedded (and dropped, if any)."""
        parts = [f"{self.count(o)} {o.value}" for o in Outcome if self.count(o)]
        written = sum(r.chunks for r in self.results if r.outcome in _WRITES)
        dropped = sum(r.chunks for r in self.results if r.outcome is Outcome.REMOVED)
        line = (
            f"{', '.join(parts) or 'no files'}; {written} chunks written, {self.embedded} embedded"
        )
        return line + (f", {dropped} dropped" if dropped else "")


_WRITES = (Outcome.ADDED, Outcome.UPDATED)


def _matches(path: Path, globs: Sequence[str]) -> bool:
    s = path.as_posix()
    return any(fnmatch.fnmatch(s, g) or fnmatch.fnmatch(path.name, g) for g in globs)


def iter_files(
    paths: Iterable[str | Path], include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> Iterator[tuple[Path, bool]]:
    """(file, named explicitly) for each file under `paths`, sorted, recursing into folders.

    In folders only known document types are taken (`loaders.SUFFIX_KINDS`), hidden and tool
    folders are skipped; `include` globs (on the path or the name) narrow, `exclude` globs
    drop. A file named on the command line is always read (as text if its type is unknown)."""
    for raw in paths:
        root = Path(raw).expanduser()
        if not root.exists():
            raise InvalidRequestError(f"no such file or folder: {raw}")
        if root.is_file():
            if not _matches(root, exclude):
                yield root.resolve(), True
            continue
        for folder, dirs, names in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
            for name in sorted(names):
                p = Path(folder) / name
                if name.startswith(".") or kind_of(p) is None:
                    continue
                if include and not _matches(p, include):
                    continue
                if not _matches(p, exclude):
                    yield p.resolve(), False


class Indexer:
    """Indexes files into one collection with one embedder."""

    def __init__(
        self,
        collection: Collection,
        embedder: EmbedderLike,
        options: SplitOptions | None = None,
        progress: Callable[[FileResult], None] | None = None,
    ) -> None:
        self.collection = collection
        self.embedder = embedder
        self.options = options or SplitOptions.for_model(embedder.max_tokens)
        if self.options.max_tokens > embedder.max_tokens:
            raise InvalidRequestError(
                f"chunk size {self.options.max_tokens} is over what {embedder.name} reads "
                f"({embedder.max_tokens} tokens)"
            )
        self.splitter = Splitter(embedder.count_tokens, self.options)
        self.progress = progress

    def add(
        self, paths: Iterable[str | Path], include: Sequence[str] = (),
        exclude: Sequence[str] = (),
    ) -> IndexReport:  # fmt: skip
        """Index files and folders; then drop what was indexed from those folders before
        and is deleted now (files excluded by this run's globs but still there stay)."""
        paths = list(paths)
        report = IndexReport()
        for path, explicit in iter_files(paths, include, exclude):
            result = self.add_file(path, explicit)
            report.results.append(result)
            if self.progress:
                self.progress(result)
        folders = [Path(p).expanduser().resolve() for p in paths if Path(p).expanduser().is_dir()]
        for result in self.prune(folders):
            report.results.append(result)
            if self.progress:
                self.progress(result)
        return report

    def prune(self, folders: Sequence[Path]) -> list[FileResult]:
        """Drop the chunks of files indexed under `folders` that no longer exist, in one
        transaction (a crash keeps all of them, to be dropped by the next run)."""
        gone: list[str] = []
        for folder in folders:
            for key in self.collection.paths_under(str(folder)):
                if key not in gone and _deleted(key):
                    gone.append(key)
        if not gone:
            return []
        dropped = self.collection.remove_files(gone)
        return [FileResult(k, Outcome.REMOVED, chunks=n) for k, n in dropped.items()]

    def add_file(self, path: Path, explicit: bool = True) -> FileResult:
        """Index one file (committed when this returns)."""
        key = str(path)
        try:
            data = path.read_bytes()
        except OSError as e:
            return FileResult(key, Outcome.SKIPPED, reason=e.strerror or str(e))
        digest = hashlib.sha256(data).hexdigest()
        old = self.collection.file_hash(key)
        if old == digest:
            return FileResult(key, Outcome.UNCHANGED)
        kind = kind_of(path) or DocKind.TEXT
        try:
            blocks = load(path, kind)
        except Unreadable as e:
            return FileResult(key, Outcome.SKIPPED, reason=str(e))
        st = path.stat()
        return self._store(key, old, blocks, digest, kind.value, st.st_size, st.st_mtime)

    def add_blocks(
        self, key: str, blocks: Sequence[Block], digest: str, kind: str, size: int,
        mtime: float | None, document: dict[str, Any] | None = None,
    ) -> FileResult:  # fmt: skip
        """Index text already loaded as blocks under `key` (a document sent to the server):
        nothing to do when `digest` is the stored one, else its chunks are swapped in one
        transaction. mtime: its creation date (date filters); document: its plugin metadata."""
        old = self.collection.file_hash(key)
        if old == digest:
            return FileResult(key, Outcome.UNCHANGED)
        return self._store(key, old, blocks, digest, kind, size, mtime, document)

    def _store(
        self, key: str, old: str | None, blocks: Sequence[Block], digest: str, kind: str,
        size: int, mtime: float | None, document: dict[str, Any] | None = None,
    ) -> FileResult:  # fmt: skip
        chunks = self.splitter.split(blocks, key)
        if not chunks:
            return FileResult(key, Outcome.SKIPPED, reason="no text")
        reuse = self.collection.vectors_by_hash(key) if old else {}
        todo = [c for c in chunks if c.hash not in reuse]
        if todo:
            # ERROR, not RIGHT: the splitter guarantees a fit, so a cut would be a bug to see
            vecs = self.embedder.embed([c.embed_text for c in todo], truncate="error")
            for c, v in zip(todo, vecs, strict=True):
                reuse[c.hash] = np.asarray(v, dtype=np.float32).tobytes()
        self.collection.replace_file(
            key, digest, kind, size, mtime, chunks, [reuse[c.hash] for c in chunks], document
        )
        outcome = Outcome.UPDATED if old else Outcome.ADDED
        return FileResult(key, outcome, chunks=len(chunks), embedded=len(todo))


def _deleted(path: str) -> bool:
    """Whether `path` is gone; a file we merely cannot stat (permissions, a disk away) is
    not, so its chunks stay."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False
