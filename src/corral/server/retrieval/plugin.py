"""The ChatGPT retrieval plugin's API over a RAG collection: POST /upsert, /upsert-file,
/query and /delete (DELETE /delete too, as upstream), Bearer token auth.

Request and response bodies are the plugin's (openai/chatgpt-retrieval-plugin, models/api.py).
Documents live in one collection (`ServerConfig.retrieval_collection`, or `?collection=NAME`
on any route), next to the files `corral index add` put there: those come back as documents
whose id is their path and whose source is "file". A new collection gets the server's
retrieval embedder; an existing one keeps its own (its vectors need it).

Scores are the hybrid search's (vector + keyword, reciprocal rank fusion: higher is better),
not a cosine similarity; `mode: "vector"` on a query ranks by vectors alone. Each document is
committed on its own, so a batch that fails part way keeps the documents before the failure.

With `bearer_token` set these routes need `Authorization: Bearer TOKEN` (401 otherwise) and
the server-wide `api_key`, if any, does not apply to them (see create_app).
"""

from __future__ import annotations

import asyncio
import hmac
import tempfile
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, File, Form, UploadFile
from pydantic import ValidationError
from starlette.requests import Request

from corral.errors import CorralError
from corral.rag.db import Collection, CollectionNotFoundError, collection_path
from corral.rag.documents import (
    DocumentMeta,
    chunk_results,
    delete_documents,
    upsert_blocks,
    upsert_text,
)
from corral.rag.filters import Filter
from corral.rag.indexer import Indexer
from corral.server.errors import ApiError, bad_request
from corral.server.retrieval.protocol import (
    DeleteRequest,
    DocumentMetadata,
    MetadataFilter,
    QueryRequest,
    Source,
    UpsertRequest,
)
from corral.server.state import ServerState, get_state

PLUGIN_PATHS = frozenset({"/upsert", "/upsert-file", "/query", "/delete"})


def require_token(request: Request) -> None:
    """401 unless the request carries the configured bearer token (none configured: open)."""
    token = get_state(request).config.bearer_token
    if not token:
        return
    given = request.headers.get("authorization", "").strip().encode()
    # constant-time comparison: the token must not leak through response timing
    if not hmac.compare_digest(given, f"Bearer {token}".encode()):
        raise ApiError(
            401,
            "missing or invalid bearer token: send 'Authorization: Bearer TOKEN'",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )


# the token is checked before the body is validated: a stranger learns nothing from a 400
router = APIRouter(dependencies=[Depends(require_token)])


@router.post("/upsert")
async def upsert(
    request: Request, body: UpsertRequest, collection: str | None = None
) -> dict[str, list[str]]:
    """Store documents (split, embedded, replacing any with the same id); their ids."""
    st = get_state(request)
    docs = [
        (d.id or str(uuid.uuid4()), d.text, _meta(d.metadata, f"documents.{i}"))
        for i, d in enumerate(body.documents)
    ]
    for i, (_, text, _) in enumerate(docs):
        if not text.strip():
            raise bad_request(f"document {i} has no text", f"documents.{i}.text")
    if not docs:
        return {"ids": []}
    name = collection or st.config.retrieval_collection
    emb = await _embedder_for(st, name)

    def work() -> list[str]:
        with _open_for_write(st, name, emb) as col:
            indexer = Indexer(col, emb)
            for doc_id, text, meta in docs:
                upsert_text(indexer, doc_id, text, meta)
        return [doc_id for doc_id, _, _ in docs]

    return {"ids": await asyncio.to_thread(work)}


@router.post("/upsert-file")
async def upsert_file(
    request: Request,
    file: UploadFile = File(...),  # noqa: B008 - FastAPI's way of declaring a form file
    metadata: str | None = Form(None),  # noqa: B008
    id: str | None = Form(None),  # noqa: B008 - corral's own: the plugin always makes one
    collection: str | None = None,
) -> dict[str, list[str]]:
    """Store an uploaded file (txt, md, rst, html, pdf, code: read as `corral index add`
    reads it) as one document; metadata is a JSON form field (source defaults to file)."""
    st = get_state(request)
    meta_model = DocumentMetadata()
    if metadata:
        try:
            meta_model = DocumentMetadata.model_validate_json(metadata)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first.get("loc", ()))
            raise bad_request(
                f"'metadata{'.' + where if where else ''}': {first.get('msg', 'invalid')}",
                "metadata",
            ) from None
    if meta_model.source is None:  # it came as a file (the plugin: only without metadata)
        meta_model = meta_model.model_copy(update={"source": Source.FILE})
    meta = _meta(meta_model, "metadata")
    data = await file.read()
    filename = Path(file.filename or "upload.txt").name
    blocks = await asyncio.to_thread(_load_upload, filename, data)
    doc_id = id or str(uuid.uuid4())
    name = collection or st.config.retrieval_collection
    emb = await _embedder_for(st, name)

    def work() -> None:
        with _open_for_write(st, name, emb) as col:
            upsert_blocks(Indexer(col, emb), doc_id, blocks, meta, data)

    await asyncio.to_thread(work)
    return {"ids": [doc_id]}


@router.post("/query")
async def query(
    request: Request, body: QueryRequest, collection: str | None = None
) -> dict[str, list[dict[str, Any]]]:
    """The top_k chunks of each query, with their documents' metadata and scores."""
    from corral.rag.retrieve import SearchMode, search

    st = get_state(request)
    wheres = [_filter(q.filter, f"queries.{i}.filter") for i, q in enumerate(body.queries)]
    for i, q in enumerate(body.queries):
        if not q.query.strip():
            raise bad_request(f"query {i} is empty", f"queries.{i}.query")
    col = _open(st, collection)
    try:
        emb = None
        if any(q.mode != SearchMode.KEYWORD for q in body.queries):
            emb = (await st.manager.embedders.get(col.embedder)).embedder

        def work() -> list[dict[str, Any]]:
            out = []
            for q, where in zip(body.queries, wheres, strict=True):
                hits = search(col, emb, q.query, q.top_k, where, SearchMode(q.mode))
                out.append({"query": q.query, "results": chunk_results(col, hits)})
            return out

        return {"results": await asyncio.to_thread(work)}
    finally:
        col.close()


@router.api_route("/delete", methods=["POST", "DELETE"])
async def delete(
    request: Request, body: DeleteRequest, collection: str | None = None
) -> dict[str, bool]:
    """Drop documents by ids, by metadata filter, or all, in one transaction."""
    st = get_state(request)
    where = _filter(body.filter, "filter")
    if not (body.ids or not where.empty or body.delete_all):
        raise bad_request("one of ids, filter or delete_all is required")
    col = _open(st, collection)
    try:
        await asyncio.to_thread(delete_documents, col, body.ids or (), where, body.delete_all)
    finally:
        col.close()
    return {"success": True}


# -- helpers ---------------------------------------------------------------------------------


def _meta(model: DocumentMetadata | None, param: str) -> DocumentMeta:
    """The rag layer's metadata, its date checked now (a bad one is a 400 before any work)."""
    m = model or DocumentMetadata()
    meta = DocumentMeta(
        source=m.source.value if m.source else None,
        source_id=m.source_id,
        url=m.url,
        created_at=m.created_at,
        author=m.author,
    )
    try:
        meta.created_ts()
    except CorralError as e:
        raise bad_request(f"'{param}.created_at': {e}", f"{param}.created_at") from None
    return meta


def _filter(model: MetadataFilter | None, param: str) -> Filter:
    try:
        return Filter.of(model.model_dump(mode="json") if model else None)
    except CorralError as e:
        raise bad_request(f"'{param}': {e}", param) from None


def _open(st: ServerState, name: str | None) -> Collection:
    """An existing collection, or 404."""
    name = name or st.config.retrieval_collection
    try:
        return Collection.open(name, st.config.store_home)
    except CollectionNotFoundError as e:
        raise ApiError(404, str(e), code="collection_not_found") from None


def _open_for_write(st: ServerState, name: str, emb: Any) -> Collection:
    return Collection.open_or_create(name, emb.name, emb.dimensions, st.config.store_home)


async def _embedder_for(st: ServerState, name: str) -> Any:
    """The collection's own embedder, or for a new one the configured (or only) one."""
    path = collection_path(name, st.config.store_home)
    model = st.config.retrieval_embedder
    if path.is_file():
        col = Collection(path)
        try:
            model = col.meta().get("embedder") or model
        finally:
            col.close()
    return (await st.manager.embedders.get(model)).embedder


def _load_upload(filename: str, data: bytes) -> list[Any]:
    """Blocks of an uploaded file, read by its name's suffix (PDF needs a real file)."""
    from corral.rag.loaders import Unreadable, load

    suffix = Path(filename).suffix
    with tempfile.TemporaryDirectory(prefix="corral-upload-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            blocks = load(path)
        except Unreadable as e:
            raise bad_request(f"cannot read {filename}: {e}", "file") from None
    if not blocks:
        raise bad_request(f"{filename} has no text", "file")
    return blocks
