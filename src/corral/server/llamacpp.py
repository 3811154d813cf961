"""llama.cpp server extras: /completion, /health, /tokenize, /detokenize, /apply-template,
/metrics, /lora-adapters; and llama.cpp's answer shape, which /infill (server/fim) shares.

POST /completion takes llama.cpp's sampling fields, `n_predict`, `stop`, `stream`, and a
`grammar` (GBNF) or `json_schema` that constrains the output (corral.server.structured, so a
bad one is a 400 naming the field, as on the OpenAI routes).

POST /tokenize also answers TEI's body shape (`inputs`, for embedding models; tei/routes.py).

llama.cpp serves one model, so its bodies name none; here `model` picks one and may be left
out while exactly one model is loaded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from corral.engine.generate import Timings
from corral.server.body import parse_body, request_json, validate
from corral.server.errors import ApiError, bad_request
from corral.server.manager import Lease
from corral.server.openai.protocol import ChatMessage
from corral.server.prompts import check_ids, render, text_ids, with_defaults
from corral.server.runs import Run, finish_name, submit, until_disconnect
from corral.server.state import ServerState, get_state
from corral.server.streaming import SSE_MEDIA_TYPE, EventStream, sse_data
from corral.server.structured import constraint_factory, openai_spec

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


class CompletionRequest(_Body):
    """POST /completion, with llama.cpp's field names (unknown ones, such as cache_prompt,
    are ignored)."""

    prompt: str | list[int]
    n_predict: int = -1  # -1: until an end token or the context is full
    temperature: float | None = Field(default=None, ge=0)
    top_k: int | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, ge=0, le=1)
    min_p: float | None = Field(default=None, ge=0, le=1)
    typical_p: float | None = Field(default=None, ge=0, le=1)
    repeat_penalty: float | None = Field(default=None, ge=0)
    repeat_last_n: int | None = Field(default=None, ge=-1)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None  # -1: random, as in llama.cpp
    stop: list[str] = Field(default_factory=list)
    stream: bool = False
    grammar: str | None = None
    json_schema: Any = None


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


# -- /completion, and llama.cpp's answer shape -----------------------------------------------

_SAMPLING_FIELDS = (
    "temperature", "top_k", "top_p", "min_p", "typical_p", "repeat_penalty", "repeat_last_n",
    "presence_penalty", "frequency_penalty",
)  # fmt: skip


@router.post("/completion")
async def completion(request: Request) -> Response:
    st = get_state(request)
    body = await parse_body(request, CompletionRequest)
    spec, param = openai_spec(None, body.grammar, body.json_schema)
    lease = await _lease(st, body.model)
    try:
        entry = lease.entry
        model = entry.model
        if isinstance(body.prompt, str):
            ids = await asyncio.to_thread(text_ids, model, body.prompt)
        else:
            ids = check_ids(model, body.prompt, "prompt")
        factory = await asyncio.to_thread(constraint_factory, entry, spec, param)
        given = {k: getattr(body, k) for k in _SAMPLING_FIELDS if getattr(body, k) is not None}
        if body.seed is not None and body.seed >= 0:
            given["seed"] = body.seed
        opts = entry.defaults.with_(
            sampling=entry.defaults.sampling.with_(**given),
            max_tokens=None if body.n_predict < 0 else body.n_predict,
        )
        if body.stop:
            opts = opts.with_(stop=tuple(s for s in body.stop if s))
        run = submit(entry, ids, opts, st.metrics, st.config.retry_after_s, 0, factory)
    except BaseException:
        lease.release()
        raise

    return await completion_response(request, run, lease, entry.name, body.stream)


async def completion_response(
    request: Request, run: Run, lease: Lease, model: str, stream: bool
) -> Response:
    """A submitted /completion or /infill run as llama.cpp answers it: streamed events, or
    one JSON answer once done; the run is cancelled and the model's lease released either
    way (a client that leaves frees its slot)."""

    def close() -> None:
        run.cancel()
        lease.release()

    if stream:
        return EventStream(completion_stream(run, model), SSE_MEDIA_TYPE, close)
    try:
        done = await until_disconnect(request, run.collect())
    finally:
        close()
    t = done.timings
    return JSONResponse(
        completion_answer(
            model, done.text, done.finish_reason, run, done.completion_tokens, t.cached_tokens, t
        )
    )


def completion_answer(
    model: str, text: str, finish: str, run: Run, predicted: int, cached: int, timings: Any
) -> dict[str, Any]:
    """llama.cpp's final /completion (and /infill) answer."""
    return {
        "content": text, "stop": True, "model": model, "tokens_predicted": predicted,
        "tokens_evaluated": run.prompt_tokens, "tokens_cached": cached, "truncated": False,
        "stop_type": "limit" if finish == "length" else "eos", "stopping_word": "",
        "timings": {
            "prompt_n": timings.prompt_tokens, "prompt_ms": timings.prompt_s * 1000,
            "predicted_n": timings.decode_tokens, "predicted_ms": timings.decode_s * 1000,
        },
    }  # fmt: skip


async def completion_stream(run: Run, model: str) -> AsyncIterator[bytes]:
    """llama.cpp's stream: `data: {"content": ..., "stop": false}` events, then the final
    answer with `stop: true` (no [DONE] line)."""
    count = 0
    try:
        async for ev in run.events():
            if ev.token_id is not None and not ev.eog:
                count += 1
            if ev.finish_reason is not None:
                t = ev.timings or Timings()
                final = completion_answer(
                    model, ev.text, finish_name(ev), run, count, t.cached_tokens, t
                )
                yield sse_data(final)
                return
            if ev.text:
                yield sse_data({"content": ev.text, "stop": False})
    except ApiError as e:
        yield sse_data({"error": {"code": e.status, "message": e.message}})
        return
    # no final event (n_predict 0): the answer still ends the stream
    yield sse_data(completion_answer(model, "", "length", run, count, 0, Timings()))
