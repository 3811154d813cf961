"""Documents as the ChatGPT retrieval plugin sees them, stored in a collection.

A document (id, text, metadata: source, source_id, url, created_at, author) is stored like an
indexed file whose path is its id: its text is split and embedded as a file's is, its chunks
and its `documents` row swap in one transaction, and sending the same text and metadata again
does no work. An indexed file reads back as a document too: its path is its id, its source
"file", its mtime its created_at. Deleting by ids, by filter or all drops documents and their
chunks in one transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from corral.rag.db import API_KIND, Collection
from corral.rag.filters import FILE_SOURCE, Filter, iso_date, parse_date
from corral.rag.indexer import FileResult, Indexer
from corral.rag.loaders import text_blocks
from corral.rag.types import Block, DocKind, Hit


@dataclass(frozen=True)
class DocumentMeta:
    """The plugin's document metadata; created_at is any date `parse_date` reads."""

    source: str | None = None
    source_id: str | None = None
    url: str | None = None
    created_at: str | None = None
    author: str | None = None

    def created_ts(self) -> float | None:
        """created_at as unix seconds (None when absent); a bad date is InvalidRequestError."""
        return None if not self.created_at else parse_date(self.created_at)


def upsert_text(indexer: Indexer, doc_id: str, text: str, meta: DocumentMeta) -> FileResult:
    """Store one plain-text document (paragraphs as blocks) under `doc_id`."""
    blocks = text_blocks(text, DocKind.TEXT)
    return upsert_blocks(indexer, doc_id, blocks, meta, text.encode("utf-8"))


def upsert_blocks(
    indexer: Indexer, doc_id: str, blocks: Sequence[Block], meta: DocumentMeta, data: bytes
) -> FileResult:
    """Store a loaded document (an uploaded file's blocks) under `doc_id`; `data` are the
    bytes it came from, hashed with the metadata so that a resend of both is a no-op."""
    digest = hashlib.sha256(data)
    digest.update(json.dumps(asdict(meta), sort_keys=True).encode())
    return indexer.add_blocks(
        doc_id, blocks, digest.hexdigest(), API_KIND, len(data), meta.created_ts(), asdict(meta)
    )


def delete_documents(
    col: Collection,
    ids: Sequence[str] = (),
    where: Filter | None = None,
    delete_all: bool = False,
) -> list[str]:
    """Drop documents (any of `ids`, any matching `where`, or all) with their chunks, in one
    transaction; the ids that were there."""
    if delete_all:
        paths = col.all_paths()
    else:
        paths = sorted(set(ids) | set(col.paths_where(where) if where and not where.empty else ()))
    return list(col.remove_files(paths))


def chunk_results(col: Collection, hits: Sequence[Hit]) -> list[dict[str, Any]]:
    """Hits as the plugin's DocumentChunkWithScore: id (`<document id>_<n>`, n the chunk's
    place in its document), text, metadata (plus document_id, start_line, end_line), score
    (the hybrid search's fused score, higher is better) and embedding (not sent: null)."""
    docs = col.documents(sorted({h.path for h in hits}))
    out = []
    for h in hits:
        row = docs.get(h.path, {})
        if row.get("has_meta"):
            meta = {k: row[k] for k in ("source", "source_id", "url", "created_at", "author")}
        else:  # an indexed file
            path = Path(h.path)
            meta = {
                "source": FILE_SOURCE,
                "source_id": None,
                "url": path.as_uri() if path.is_absolute() else None,
                "created_at": iso_date(row.get("mtime")),
                "author": None,
            }
        meta |= {"document_id": h.path, "start_line": h.start_line, "end_line": h.end_line}
        out.append({
            "id": f"{h.path}_{col.ordinal(h.id, h.path)}",
            "text": h.text,
            "metadata": meta,
            "embedding": None,
            "score": h.score,
        })  # fmt: skip
    return out
