"""POST /retrieval/query {collection, query, k, filter, mode} -> chunks with scores; and the
ChatGPT retrieval plugin's /upsert, /upsert-file, /query, /delete (see plugin.py).

The collection's own embedding model is taken from the server's embedder pool (loaded once,
shared with /v1/embeddings); SQLite work runs in a worker thread, one connection a request
(WAL: queries read while `corral index add` writes).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request

from corral.errors import InvalidRequestError
from corral.server.retrieval import plugin
from corral.server.retrieval.protocol import QueryBody

router = APIRouter()
# the ChatGPT retrieval plugin's routes ride along (their own token check)
router.include_router(plugin.router)


@router.post("/retrieval/query")
async def query(request: Request, body: QueryBody) -> dict[str, Any]:
    from corral.rag.db import Collection
    from corral.rag.retrieve import SearchMode, search

    st = request.app.state.corral
    try:
        mode = SearchMode(body.mode)
    except ValueError as e:
        raise InvalidRequestError(
            f"mode must be hybrid, vector or keyword, not {body.mode!r}"
        ) from e
    home = st.config.store_home
    col = Collection.open(body.collection, home)
    try:
        emb = None
        if mode is not SearchMode.KEYWORD:
            emb = (await st.manager.embedders.get(col.embedder)).embedder
        hits = await asyncio.to_thread(search, col, emb, body.query, body.k, body.filter, mode)
    finally:
        col.close()
    return {"collection": body.collection, "results": [h.to_dict() for h in hits]}
