"""TEI routes: POST /embed, POST /similarity, POST /tokenize (TEI's body shape), GET /info.

POST /tokenize is also llama.cpp's route (body `content`); llamacpp.py hands a body with
`inputs` over to `tokenize_tei` here, so both clients work on one path.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from fastapi import APIRouter
from starlette.requests import Request

from corral.server.body import parse_body, validate
from corral.server.embedders import embed_texts
from corral.server.errors import not_supported
from corral.server.state import get_state
from corral.server.tei import protocol as p

router = APIRouter()


def _no_prompts(body: p._Body) -> None:
    if body.prompt_name is not None:
        raise not_supported("'prompt_name' is", "prompt_name")


@router.post("/embed")
async def embed(request: Request) -> list[list[float]]:
    st = get_state(request)
    body = await parse_body(request, p.EmbedRequest)
    _no_prompts(body)
    held = await st.manager.embedders.get(body.model)
    texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
    out = await embed_texts(
        held,
        texts,
        truncate=body.truncation(),
        normalize=body.normalize,
        dimensions=body.dimensions,
    )
    return out.vectors.tolist()  # type: ignore[no-any-return]


@router.post("/similarity")
async def similarity(request: Request) -> list[float]:
    st = get_state(request)
    body = await parse_body(request, p.SimilarityRequest)
    _no_prompts(body)
    held = await st.manager.embedders.get(body.model)
    texts = [body.inputs.source_sentence, *body.inputs.sentences]
    out = await embed_texts(held, texts, truncate=body.truncation(), normalize=True)
    source, others = out.vectors[0], out.vectors[1:]
    return np.clip(others @ source, -1.0, 1.0).tolist()  # type: ignore[no-any-return]


async def tokenize_tei(request: Request, data: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """TEI's /tokenize for an already parsed JSON body."""
    st = get_state(request)
    body = validate(data, p.TokenizeRequest)
    _no_prompts(body)
    held = await st.manager.embedders.get(body.model)
    texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
    text = held.embedder.text

    def run() -> list[list[dict[str, Any]]]:
        return [[p.simple_token(t) for t in text.detail(s, body.add_special_tokens)] for s in texts]

    return await asyncio.to_thread(run)


@router.get("/info")
async def info(request: Request, model: str | None = None) -> dict[str, Any]:
    st = get_state(request)
    held = await st.manager.embedders.get(model)
    emb = held.embedder
    ref = await asyncio.to_thread(st.store.get, emb.name)
    return p.info(emb.name, ref.digest if ref else None, emb.info)
