"""Request bodies of the retrieval routes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class QueryBody(BaseModel):
    """POST /retrieval/query: the k best chunks of a collection for a query."""

    collection: str = "default"
    query: str
    k: int = Field(5, ge=1, le=100)
    filter: dict[str, Any] | None = None
    mode: str = "hybrid"
