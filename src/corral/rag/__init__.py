"""Local RAG: index a user's files, search them (vectors + keywords), answer with citations.

    corral index add docs/ --collection notes      # load -> split -> embed -> SQLite
    corral ask "how do I ...?" --collection notes   # retrieve -> cited prompt -> answer

Modules: `loaders` (files -> blocks with line numbers and headings), `splitter` (blocks ->
chunks that fit the embedding model), `db` (one SQLite file per collection: sqlite-vec +
FTS5), `indexer` (files -> committed chunks, idempotent), `retrieve` (hybrid search, reciprocal
rank fusion), `answer` (prompt with numbered sources, citations).
"""

from __future__ import annotations

from corral.rag.types import Block, Chunk, DocKind, Hit

__all__ = ["Block", "Chunk", "DocKind", "Hit"]
