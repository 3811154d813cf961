"""Metadata filters on stored chunks, and the dates they compare.

A `Filter` turns into a WHERE clause over `chunks c JOIN files f LEFT JOIN documents d`:
`c`/`f` carry what every chunk has (path, heading, loader kind, file mtime), `d` the metadata
that documents sent through the server's /upsert carry (source, source_id, url, created_at,
author). An indexed file has no `documents` row; it counts as source "file", its path is its
document id and its mtime its creation date.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from corral.errors import InvalidRequestError

# every key Filter.of accepts; the date ones are parsed into start / end timestamps
FILTER_KEYS = ("path", "path_prefix", "heading", "kind", "document_id", "source",
               "source_id", "author", "start_date", "end_date")  # fmt: skip
FILE_SOURCE = "file"  # the source of a chunk from an indexed file


def parse_date(value: str | float | int) -> float:
    """A date as a unix timestamp: ISO 8601 ("2024-05-01", "2024-05-01T12:00:00Z") or a
    number of seconds; a date without a zone is UTC."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequestError(
            f"bad date {text!r}: use ISO 8601 (2024-05-01, 2024-05-01T12:00:00Z) "
            "or a unix timestamp"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def iso_date(ts: float | None) -> str | None:
    """A unix timestamp as ISO 8601 UTC (None stays None)."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat()


@dataclass(frozen=True)
class Filter:
    """Metadata filters on chunks (all given ones must hold).

    path: fnmatch glob on the source path; path_prefix: a folder or file prefix; heading:
    substring of the heading path; kind: the loader kind (markdown, pdf, ...). The retrieval
    plugin's: document_id (an indexed file's is its path), source (email, file, chat),
    source_id, author, and start / end (unix seconds, inclusive) on the creation date."""

    path: str | None = None
    path_prefix: str | None = None
    heading: str | None = None
    kind: str | None = None
    document_id: str | None = None
    source: str | None = None
    source_id: str | None = None
    author: str | None = None
    start: float | None = None
    end: float | None = None

    @classmethod
    def of(cls, data: dict[str, Any] | None) -> Filter:
        """From a request's filter object (FILTER_KEYS); None values are no filter."""
        data = {k: v for k, v in (data or {}).items() if v is not None}
        unknown = set(data) - set(FILTER_KEYS)
        if unknown:
            raise InvalidRequestError(f"unknown filter key(s): {', '.join(sorted(unknown))}")
        start, end = data.pop("start_date", None), data.pop("end_date", None)
        return cls(
            **{k: str(v) for k, v in data.items()},
            start=None if start is None else parse_date(start),
            end=None if end is None else parse_date(end),
        )

    def sql(self) -> tuple[str, list[Any]]:
        """A WHERE clause over `chunks c JOIN files f LEFT JOIN documents d` and its
        parameters."""
        where, args = ["1"], []
        if self.path:
            where.append("glob_path(c.path, ?)")
            args.append(self.path)
        if self.path_prefix:
            where.append("substr(c.path, 1, ?) = ?")
            args += [len(self.path_prefix), self.path_prefix]
        if self.heading:
            where.append("instr(lower(c.heading), lower(?)) > 0")
            args.append(self.heading)
        if self.kind:
            where.append("f.kind = ?")
            args.append(self.kind)
        if self.document_id is not None:
            where.append("c.path = ?")
            args.append(self.document_id)
        if self.source is not None:
            # no documents row: an indexed file; a document sent without a source has none
            where.append("(CASE WHEN d.path IS NULL THEN ? ELSE d.source END) = ?")
            args += [FILE_SOURCE, self.source]
        for column in ("source_id", "author"):
            value = getattr(self, column)
            if value is not None:
                where.append(f"d.{column} = ?")
                args.append(value)
        # files.mtime holds a document's created_at (NULL when it had none: never matches)
        if self.start is not None:
            where.append("f.mtime >= ?")
            args.append(self.start)
        if self.end is not None:
            where.append("f.mtime <= ?")
            args.append(self.end)
        return " AND ".join(where), args

    @property
    def empty(self) -> bool:
        return all(getattr(self, f.name) is None or getattr(self, f.name) == ""
                   for f in fields(self))  # fmt: skip
