"""One SQLite file per collection: `$CORRAL_HOME/rag/<name>.sqlite`.

Tables: `meta` (embedding model, dimensions), `files` (path -> content hash: unchanged files
are skipped), `chunks` (text, path, line range, heading, content hash, float32 vector),
`documents` (retrieval-plugin metadata of documents sent to the server's /upsert, by path),
`chunks_fts` (FTS5 over text and heading, rowid = chunk id) and `chunks_vec` (sqlite-vec
`vec0`, cosine distance, rowid = chunk id). WAL mode: readers (`ask`, the server) never block
an index run, and each file is one transaction, so a killed run keeps every file it finished.

sqlite-vec is a loadable extension; Python builds whose sqlite3 cannot load extensions use
the `pysqlite3` module instead. Where neither works, vectors are searched by numpy over the
`chunks.embedding` column (same results, slower on large collections).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from corral.errors import CorralError, InvalidRequestError
from corral.rag.filters import Filter
from corral.rag.types import Chunk

__all__ = ["Collection", "CollectionNotFoundError", "Filter"]

SCHEMA_VERSION = 1
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DEFAULT_COLLECTION = "default"
# `files.kind` of documents sent through the server's /upsert: no file on disk stands behind
# them, so the index run's check for deleted files leaves them alone
API_KIND = "api"


class CollectionNotFoundError(CorralError):
    """A collection name with no file under $CORRAL_HOME/rag."""


def rag_home(home: Path | None = None) -> Path:
    """Where collections live: `$CORRAL_HOME/rag` (default ~/.cache/corral/rag)."""
    from corral.store.store import default_home

    return (home or default_home()) / "rag"


def collection_path(name: str, home: Path | None = None) -> Path:
    if not _NAME.fullmatch(name):
        raise InvalidRequestError(
            f"bad collection name {name!r}: letters, digits, '.', '_' and '-', at most 64"
        )
    return rag_home(home) / f"{name}.sqlite"


def list_collections(home: Path | None = None) -> list[str]:
    root = rag_home(home)
    return sorted(p.stem for p in root.glob("*.sqlite")) if root.is_dir() else []


def _sqlite() -> tuple[ModuleType, bool]:
    """(sqlite3 module, whether sqlite-vec loads into it)."""
    import sqlite3

    mods: list[ModuleType] = [sqlite3]
    if not hasattr(sqlite3.Connection, "enable_load_extension"):
        try:
            import pysqlite3  # type: ignore[import-not-found]

            mods.insert(0, pysqlite3)
        except ImportError:
            pass
    for mod in mods:
        if hasattr(mod.Connection, "enable_load_extension"):
            try:
                import sqlite_vec  # noqa: F401

                return mod, True
            except ImportError:
                break
    return sqlite3, False


# joined into every filtered search: Filter.sql reads the plugin metadata as `d`
_DOCS = "LEFT JOIN documents d ON d.path = c.path"


class Collection:
    """An open collection; `Collection.open(name)` or `Collection.create(name, ...)`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        mod, self.has_vec = _sqlite()
        self.conn = mod.connect(str(path), isolation_level=None, check_same_thread=False)
        self.conn.row_factory = mod.Row
        if self.has_vec:
            import sqlite_vec

            self.conn.enable_load_extension(True)
            sqlite_vec.load(self.conn)
            self.conn.enable_load_extension(False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA busy_timeout=10000")
        self.conn.create_function(
            "glob_path", 2, lambda p, g: int(fnmatch.fnmatch(p, g)), deterministic=True
        )
        # here, not in _init_schema: collections made before /upsert existed get it too,
        # and every search joins it
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS documents (path TEXT PRIMARY KEY, source TEXT, "
            "source_id TEXT, url TEXT, created_at TEXT, author TEXT)"
        )

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def open(cls, name: str, home: Path | None = None) -> Collection:
        path = collection_path(name, home)
        if not path.is_file():
            known = ", ".join(list_collections(home)) or "none yet"
            raise CollectionNotFoundError(
                f"no collection {name!r} (collections: {known}); "
                f"`corral index add PATH --collection {name}` makes it"
            )
        return cls(path)

    @classmethod
    def open_or_create(
        cls, name: str, embedder: str, dimensions: int, home: Path | None = None
    ) -> Collection:
        """The collection, made for `embedder` if new; an existing one made with another
        embedding model (other vectors) is an error rather than a silently broken search."""
        path = collection_path(name, home)
        path.parent.mkdir(parents=True, exist_ok=True)
        col = cls(path)
        col._init_schema(dimensions)
        have = col.meta()
        if not have:
            col._set_meta({"embedder": embedder, "dimensions": dimensions,
                           "schema": SCHEMA_VERSION, "created": time.time()})  # fmt: skip
        elif have["embedder"] != embedder or int(have["dimensions"]) != dimensions:
            col.close()
            raise InvalidRequestError(
                f"collection {name!r} was indexed with {have['embedder']} "
                f"({have['dimensions']} dimensions), not {embedder} ({dimensions}); "
                f"use that model, or `corral index rm {name}` and index again"
            )
        return col

    def _init_schema(self, dims: int) -> None:
        c = self.conn
        c.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        c.execute(
            "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, hash TEXT NOT NULL, "
            "kind TEXT, size INTEGER, mtime REAL, indexed_at REAL, chunks INTEGER)"
        )
        c.execute(
            "CREATE TABLE IF NOT EXISTS chunks (id INTEGER PRIMARY KEY, path TEXT NOT NULL, "
            "start_line INTEGER, end_line INTEGER, heading TEXT, hash TEXT, text TEXT, "
            "embedding BLOB)"
        )
        c.execute("CREATE INDEX IF NOT EXISTS chunks_path ON chunks(path)")
        c.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(text, heading, "
            "tokenize='porter unicode61')"
        )
        if self.has_vec:
            c.execute(
                "CREATE VIRTUAL TABLE IF NOT EXISTS chunks_vec USING "
                f"vec0(embedding float[{int(dims)}] distance_metric=cosine)"
            )

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any error."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- metadata ----------------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        rows = self.conn.execute("SELECT key, value FROM meta").fetchall()
        return {r["key"]: json.loads(r["value"]) for r in rows}

    def _set_meta(self, values: dict[str, Any]) -> None:
        with self.transaction():
            self.conn.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [(k, json.dumps(v)) for k, v in values.items()],
            )

    @property
    def embedder(self) -> str:
        return str(self.meta()["embedder"])

    def file_hash(self, path: str) -> str | None:
        row = self.conn.execute("SELECT hash FROM files WHERE path = ?", (path,)).fetchone()
        return row["hash"] if row else None

    def vectors_by_hash(self, path: str) -> dict[str, bytes]:
        """Stored vectors of a file's chunks by content hash: a changed file re-embeds only
        the chunks whose text changed."""
        rows = self.conn.execute(
            "SELECT hash, embedding FROM chunks WHERE path = ?", (path,)
        ).fetchall()
        return {r["hash"]: r["embedding"] for r in rows}

    def files(self) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM files ORDER BY path").fetchall()
        return [dict(r) for r in rows]

    def stats(self) -> dict[str, Any]:
        one = self.conn.execute
        return {
            **self.meta(),
            "path": str(self.path),
            "files": one("SELECT count(*) FROM files").fetchone()[0],
            "chunks": one("SELECT count(*) FROM chunks").fetchone()[0],
            "bytes": self.path.stat().st_size,
            "vector_search": "sqlite-vec" if self.has_vec else "numpy",
        }

    # -- writes ------------------------------------------------------------------------------

    def replace_file(
        self, path: str, file_hash: str, kind: str, size: int, mtime: float | None,
        chunks: Sequence[Chunk], vectors: Sequence[bytes], document: dict[str, Any] | None = None,
    ) -> None:  # fmt: skip
        """Swap a file's chunks for new ones in one transaction (all or nothing).

        document: the plugin metadata of an /upsert document (`documents` columns)."""
        with self.transaction():
            self._delete_chunks(path)
            if document is not None:
                self.conn.execute(
                    "INSERT INTO documents (path, source, source_id, url, created_at, author) "
                    "VALUES (:path, :source, :source_id, :url, :created_at, :author)",
                    {"source": None, "source_id": None, "url": None, "created_at": None,
                     "author": None, **document, "path": path},
                )  # fmt: skip
            for chunk, vec in zip(chunks, vectors, strict=True):
                cur = self.conn.execute(
                    "INSERT INTO chunks (path, start_line, end_line, heading, hash, text, "
                    "embedding) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (path, chunk.start_line, chunk.end_line, chunk.heading_text, chunk.hash,
                     chunk.text, vec),
                )  # fmt: skip
                rowid = cur.lastrowid
                self.conn.execute(
                    "INSERT INTO chunks_fts (rowid, text, heading) VALUES (?, ?, ?)",
                    (rowid, chunk.text, chunk.heading_text),
                )
                if self.has_vec:
                    self.conn.execute(
                        "INSERT INTO chunks_vec (rowid, embedding) VALUES (?, ?)", (rowid, vec)
                    )
            self.conn.execute(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
                (path, file_hash, kind, size, mtime, time.time(), len(chunks)),
            )

    def remove_file(self, path: str) -> bool:
        """Drop one file and its chunks; False if it was not indexed."""
        return bool(self.remove_files([path]))

    def remove_files(self, paths: Sequence[str]) -> dict[str, int]:
        """Drop files and their chunks in one transaction: {path: chunks dropped} for each
        path that was indexed (a crash drops all of them or none)."""
        dropped: dict[str, int] = {}
        with self.transaction():
            for path in paths:
                n = self._delete_chunks(path)
                gone = self.conn.execute("DELETE FROM files WHERE path = ?", (path,)).rowcount
                if n or gone:
                    dropped[path] = n
        return dropped

    def paths_under(self, folder: str) -> list[str]:
        """Indexed file paths inside `folder` (a resolved absolute path), sorted; documents
        sent through the API are not files and are never listed."""
        prefix = folder.rstrip("/\\") + os.sep
        rows = self.conn.execute(
            "SELECT path FROM files WHERE substr(path, 1, ?) = ? AND kind IS NOT ? "
            "ORDER BY path", (len(prefix), prefix, API_KIND),
        ).fetchall()  # fmt: skip
        return [r[0] for r in rows]

    def _delete_chunks(self, path: str) -> int:
        ids = [r[0] for r in self.conn.execute("SELECT id FROM chunks WHERE path = ?", (path,))]
        for table in ("chunks_fts", "chunks_vec") if self.has_vec else ("chunks_fts",):
            self.conn.executemany(f"DELETE FROM {table} WHERE rowid = ?", [(i,) for i in ids])
        self.conn.execute("DELETE FROM chunks WHERE path = ?", (path,))
        self.conn.execute("DELETE FROM documents WHERE path = ?", (path,))
        return len(ids)

    # -- reads -------------------------------------------------------------------------------

    def vector_search(
        self, vector: np.ndarray, k: int, where: Filter | None = None
    ) -> list[tuple[int, float]]:
        """(chunk id, cosine distance) of the k nearest chunks, nearest first."""
        blob = np.asarray(vector, dtype=np.float32).tobytes()
        where = where or Filter()
        if self.has_vec and where.empty:
            rows = self.conn.execute(
                "SELECT rowid, distance FROM chunks_vec WHERE embedding MATCH ? AND k = ? "
                "ORDER BY distance", (blob, k),
            ).fetchall()  # fmt: skip
            return [(r[0], float(r[1])) for r in rows]
        clause, args = where.sql()
        sql = f"SELECT c.id, c.embedding FROM chunks c JOIN files f USING (path) {_DOCS} "
        sql += f"WHERE {clause}"
        if self.has_vec:  # filtered: exact scan of the matching rows inside SQLite
            rows = self.conn.execute(
                f"SELECT c.id, vec_distance_cosine(c.embedding, ?) AS dist FROM chunks c "
                f"JOIN files f USING (path) {_DOCS} WHERE {clause} ORDER BY dist LIMIT ?",
                [blob, *args, k],
            ).fetchall()
            return [(r[0], float(r[1])) for r in rows]
        rows = self.conn.execute(sql, args).fetchall()
        if not rows:
            return []
        mat = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
        q = vector / (np.linalg.norm(vector) or 1.0)
        dist = 1.0 - (mat @ q) / np.maximum(np.linalg.norm(mat, axis=1), 1e-12)
        order = np.argsort(dist, kind="stable")[:k]
        return [(rows[i][0], float(dist[i])) for i in order]

    def keyword_search(
        self, query: str, k: int, where: Filter | None = None
    ) -> list[tuple[int, float]]:
        """(chunk id, bm25 score: lower is better) of FTS5 matches, best first. The query's
        words are OR-ed (quoted, so FTS5 syntax in a question cannot break it)."""
        words = re.findall(r"\w+", query)
        if not words:
            return []
        match = " OR ".join(f'"{w}"' for w in words)
        clause, args = (where or Filter()).sql()
        rows = self.conn.execute(
            "SELECT c.id, bm25(chunks_fts) AS s FROM chunks_fts JOIN chunks c "
            f"ON c.id = chunks_fts.rowid JOIN files f USING (path) {_DOCS} "
            f"WHERE chunks_fts MATCH ? AND {clause} ORDER BY s LIMIT ?",
            [match, *args, k],
        ).fetchall()
        return [(r[0], float(r[1])) for r in rows]

    def chunks(self, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Stored chunk rows (without vectors) by id."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.conn.execute(
            "SELECT id, path, start_line, end_line, heading, hash, text FROM chunks "
            f"WHERE id IN ({marks})", list(ids),
        ).fetchall()  # fmt: skip
        return {r["id"]: dict(r) for r in rows}

    def documents(self, paths: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The `files` row of each path with its plugin metadata (`documents` columns, None
        for an indexed file), by path."""
        if not paths:
            return {}
        marks = ",".join("?" * len(paths))
        rows = self.conn.execute(
            "SELECT f.path, f.kind, f.mtime, d.path IS NOT NULL AS has_meta, d.source, "
            "d.source_id, d.url, d.created_at, d.author FROM files f "
            f"LEFT JOIN documents d ON d.path = f.path WHERE f.path IN ({marks})", list(paths),
        ).fetchall()  # fmt: skip
        return {r["path"]: dict(r) for r in rows}

    def paths_where(self, where: Filter) -> list[str]:
        """Paths (document ids) with at least one chunk matching `where`, sorted."""
        clause, args = where.sql()
        rows = self.conn.execute(
            f"SELECT DISTINCT c.path FROM chunks c JOIN files f USING (path) {_DOCS} "
            f"WHERE {clause} ORDER BY c.path", args,
        ).fetchall()  # fmt: skip
        return [r[0] for r in rows]

    def all_paths(self) -> list[str]:
        """Every indexed path (file or document id), sorted."""
        return [r[0] for r in self.conn.execute("SELECT path FROM files ORDER BY path")]

    def ordinal(self, chunk_id: int, path: str) -> int:
        """0-based position of a chunk within its file (ids grow in file order)."""
        row = self.conn.execute(
            "SELECT count(*) FROM chunks WHERE path = ? AND id < ?", (path, chunk_id)
        ).fetchone()
        return int(row[0])
