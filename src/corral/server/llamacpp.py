"""llama.cpp server extras: /health, /tokenize, /detokenize, /apply-template, /metrics,
/lora-adapters.

POST /tokenize also answers TEI's body shape (`inputs`, for embedding models; tei/routes.py).

llama.cpp serves one model, so its bodies name none; here `model` picks one and may be left
out while exactly one model is loaded.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from corral.server.body import parse_body, request_json, validate
from corral.server.errors import bad_request
from corral.server.manager import Lease
from corral.server.openai.protocol import ChatMessage
from corral.server.prompts import check_ids, render, with_defaults
from corral.server.state import ServerState, get_state

router = APIRouter()


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None


class TokenizeRequest(_Body):
    content: str
    add_special: bool = False
    parse_special: bool = True
    with_pieces: bool = False


class DetokenizeRequest(_Body):
    tokens: list[int]


class ApplyTemplateRequest(_Body):
    messages: list[ChatMessage] = Field(min_length=1)


async def _lease(st: ServerState, model: str | None) -> Lease:
    if model is None:
        # one model may be loaded several times, once per LoRA adapter set
        loaded = list(dict.fromkeys(e.name for e in st.manager.loaded()))
        if len(loaded) != 1:
            raise bad_request("'model' is required unless exactly one model is loaded", "model")
        model = loaded[0]
    return await st.manager.acquire(model)


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    """Liveness: answers without an API key and without loading anything."""
    return {"status": "ok"}


@router.post("/tokenize")
async def tokenize(request: Request) -> Any:
    # TEI's /tokenize shares the path; its bodies say `inputs` where llama.cpp's say `content`
    data = await request_json(request)
    if isinstance(data, dict) and "inputs" in data and "content" not in data:
        from corral.server.tei.routes import tokenize_tei

        return await tokenize_tei(request, data)
    st = get_state(request)
    body = validate(data, TokenizeRequest)
    lease = await _lease(st, body.model)
    try:
        model = lease.entry.model
        ids = await asyncio.to_thread(
            model.tokenize, body.content, body.add_special, body.parse_special
        )
        if not body.with_pieces:
            return {"tokens": ids}
        pieces = []
        for t in ids:
            raw = model.tokenizer.token_to_piece(t, special=True)
            try:
                piece: str | list[int] = raw.decode("utf-8")
            except UnicodeDecodeError:
                piece = list(raw)  # part of a character: bytes, as llama.cpp gives them
            pieces.append({"id": t, "piece": piece})
        return {"tokens": pieces}
    finally:
        lease.release()


@router.post("/detokenize")
async def detokenize(request: Request) -> dict[str, Any]:
    st = get_state(request)
    body = await parse_body(request, DetokenizeRequest)
    lease = await _lease(st, body.model)
    try:
        model = lease.entry.model
        ids = check_ids(model, body.tokens, "tokens")
        return {"content": await asyncio.to_thread(model.detokenize, ids)}
    finally:
        lease.release()


@router.post("/apply-template")
async def apply_template(request: Request) -> dict[str, Any]:
    from corral.server.openai.convert import to_messages

    st = get_state(request)
    body = await parse_body(request, ApplyTemplateRequest)
    messages = to_messages(body.messages)
    lease = await _lease(st, body.model)
    try:
        entry = lease.entry
        text = await asyncio.to_thread(render, entry, with_defaults(entry, messages))
        return {"prompt": text}
    finally:
        lease.release()


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    st = get_state(request)
    return PlainTextResponse(
        st.metrics.render(st.manager), media_type="text/plain; version=0.0.4; charset=utf-8"
    )


@router.get("/lora-adapters")
async def lora_adapters(request: Request) -> list[dict[str, Any]]:
    """The startup adapters (`corral serve --lora`) with their global scales."""
    return get_state(request).manager.adapters.listing()


@router.post("/lora-adapters")
async def set_lora_adapters(request: Request) -> dict[str, Any]:
    """New global scales, `[{id, scale}]`; adapters not named get 0 (as llama.cpp)."""
    from corral.server.loras import LoraList

    data = await request_json(request)
    # llama.cpp's body is the bare array; an object {"lora": [...]} is taken too
    body = validate(data if isinstance(data, dict) else {"lora": data}, LoraList)
    get_state(request).manager.adapters.set_global(body.lora)
    return {"success": True}
