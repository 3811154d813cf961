"""ollama POST /api/embed (texts in, L2-normalized vectors out, cut to fit unless
`"truncate": false`) and the older POST /api/embeddings (one `prompt`, one vector, not
normalized, as ollama's own)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from pydantic import Field
from starlette.requests import Request

from corral.embed import Truncation
from corral.server.body import parse_body
from corral.server.durations import ns
from corral.server.embedders import embed_texts
from corral.server.ollama.protocol import _Named
from corral.server.state import get_state

router = APIRouter()


class EmbedRequest(_Named):
    input: str | list[str] = ""
    truncate: bool = True
    dimensions: int | None = Field(default=None, ge=1)
    options: dict[str, Any] | None = None
    keep_alive: str | float | int | None = None


class EmbeddingsRequest(_Named):
    prompt: str = ""
    options: dict[str, Any] | None = None
    keep_alive: str | float | int | None = None


@router.post("/api/embed")
async def embed(request: Request) -> dict[str, Any]:
    t0 = time.perf_counter()
    st = get_state(request)
    body = await parse_body(request, EmbedRequest)
    texts = [body.input] if isinstance(body.input, str) else body.input
    held = await st.manager.embedders.get(body.model)
    if texts in ([], [""]):  # as ollama: no input only loads the model
        texts = []
    out = await embed_texts(
        held,
        texts,
        truncate=Truncation.of(body.truncate),
        dimensions=body.dimensions,
    )
    return {
        "model": held.embedder.name,
        "embeddings": out.vectors.tolist(),
        "total_duration": ns(time.perf_counter() - t0),
        "load_duration": ns(held.load_s),
        "prompt_eval_count": out.total_tokens,
    }


@router.post("/api/embeddings")
async def embeddings(request: Request) -> dict[str, Any]:
    st = get_state(request)
    body = await parse_body(request, EmbeddingsRequest)
    held = await st.manager.embedders.get(body.model)
    if not body.prompt:
        return {"embedding": []}  # ollama: an empty prompt only loads the model
    out = await embed_texts(held, [body.prompt], truncate=Truncation.RIGHT, normalize=False)
    return {"embedding": out.vectors[0].tolist()}
