"""Request bodies of the retrieval routes: corral's /retrieval/query and the ChatGPT
retrieval plugin's /upsert, /query and /delete (same field names and defaults as upstream)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class QueryBody(BaseModel):
    """POST /retrieval/query: the k best chunks of a collection for a query."""

    collection: str = "default"
    query: str
    k: int = Field(5, ge=1, le=100)
    filter: dict[str, Any] | None = None
    mode: str = "hybrid"


# -- the ChatGPT retrieval plugin's API (models/api.py and models/models.py upstream) ---------


class Source(StrEnum):
    """Where a document came from (the plugin's three)."""

    EMAIL = "email"
    FILE = "file"
    CHAT = "chat"


class DocumentMetadata(BaseModel):
    """A document's metadata; unknown keys are ignored, as the plugin does."""

    source: Source | None = None
    source_id: str | None = None
    url: str | None = None
    created_at: str | None = None  # any date: ISO 8601 or unix seconds
    author: str | None = None


class Document(BaseModel):
    """One document of POST /upsert (no id: the server makes one)."""

    id: str | None = None
    text: str
    metadata: DocumentMetadata | None = None


class UpsertRequest(BaseModel):
    documents: list[Document]


class MetadataFilter(BaseModel):
    """Which chunks a query or delete covers; all given conditions must hold."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key must not widen a delete

    document_id: str | None = None
    source: Source | None = None
    source_id: str | None = None
    author: str | None = None
    start_date: str | None = None
    end_date: str | None = None


class PluginQuery(BaseModel):
    """One query of POST /query; `mode` is corral's (the plugin has only vector search)."""

    query: str
    filter: MetadataFilter | None = None
    top_k: int = Field(3, ge=1, le=100)
    mode: Literal["hybrid", "vector", "keyword"] = "hybrid"


class QueryRequest(BaseModel):
    queries: list[PluginQuery] = Field(min_length=1)


class DeleteRequest(BaseModel):
    ids: list[str] | None = None
    filter: MetadataFilter | None = None
    delete_all: bool = False
