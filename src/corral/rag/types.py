"""Plain data passed between the RAG stages: blocks (loaded), chunks (split), hits (found)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class DocKind(StrEnum):
    """How a file is read; decides block and heading detection."""

    TEXT = "text"
    MARKDOWN = "markdown"
    RST = "rst"
    HTML = "html"
    PDF = "pdf"
    CODE = "code"


@dataclass(frozen=True)
class Block:
    """A paragraph-like unit of a document: never split across a heading.

    Lines are 1-based and inclusive, counted in the file (for PDF: in the extracted text,
    whose heading path names the page)."""

    text: str
    start_line: int
    end_line: int
    heading: tuple[str, ...] = ()


def content_hash(text: str) -> str:
    """Stable hash of a chunk's (or file's) text; equal text -> no new embedding work."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class Chunk:
    """What gets embedded and stored: text with where it came from."""

    text: str
    path: str
    start_line: int
    end_line: int
    heading: tuple[str, ...] = ()

    @property
    def heading_text(self) -> str:
        return " > ".join(self.heading)

    @property
    def embed_text(self) -> str:
        """The text the embedder reads: the heading path first, so a paragraph under
        "Install > Windows" is found by a question about installing on Windows."""
        return f"{self.heading_text}\n{self.text}" if self.heading else self.text

    @property
    def hash(self) -> str:
        return content_hash(self.embed_text)


@dataclass
class Hit:
    """A retrieved chunk: its fused score and the ranks each search gave it (None: absent)."""

    id: int
    text: str
    path: str
    start_line: int
    end_line: int
    heading: str
    score: float
    vector_rank: int | None = None
    keyword_rank: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def location(self) -> str:
        """`path:start-end`, how citations name a source."""
        lines = (
            str(self.start_line)
            if self.start_line == self.end_line
            else f"{self.start_line}-{self.end_line}"
        )
        return f"{self.path}:{lines}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "start_line": self.start_line,
            "end_line": self.end_line,
            "heading": self.heading,
            "score": self.score,
            "text": self.text,
            "vector_rank": self.vector_rank,
            "keyword_rank": self.keyword_rank,
        }
