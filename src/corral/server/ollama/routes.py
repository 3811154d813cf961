"""ollama generation routes: /api/generate, /api/chat (+ /api/version; embeddings: embed.py).

Model management (/api/tags, show, ps, pull, create, copy, delete) is in models.py and
blob uploads (/api/blobs) in blobs.py; both join this router. Answers stream as NDJSON by
default (`"stream": false` for one object); durations are nanoseconds; the last object
carries the statistics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from corral.chat.tools import ToolCallParser, ToolPlan
from corral.chat.tools.parse import CallEnd, ContentDelta
from corral.fim import FimStops
from corral.grammar import GrammarSpec
from corral.server.body import parse_body
from corral.server.durations import parse_keep_alive
from corral.server.errors import ApiError, Family, bad_request, error_body, not_supported
from corral.server.manager import Lease, LoadedModel, make_template
from corral.server.ollama import blobs as blob_routes
from corral.server.ollama import models as model_routes
from corral.server.ollama import protocol as p
from corral.server.options import GenOptions, apply_options, coerce
from corral.server.prompts import chat_ids, check_ids, fim_ids, render, text_ids, with_defaults
from corral.server.runs import Run, finish_name, submit, until_disconnect
from corral.server.state import ServerState, get_state
from corral.server.streaming import NDJSON_MEDIA_TYPE, EventStream, ndjson_line
from corral.server.structured import (
    ConstraintFactory,
    constraint_factory,
    ollama_spec,
    template_source,
    tool_factory,
    tool_plan,
)

router = APIRouter()
router.include_router(model_routes.router)
router.include_router(blob_routes.router)

# The ollama API level these routes follow; some clients compare it before using features.
OLLAMA_API_VERSION = "0.9.0"


@router.get("/api/version")
async def version() -> dict[str, str]:
    from corral import __version__

    return {"version": OLLAMA_API_VERSION, "corral_version": __version__}


def _check_common(body: p._Generation) -> tuple[float | None, int | None]:
    """Refusals shared by generate and chat; returns (keep_alive, num_ctx)."""
    ollama_spec(body.format)  # a bad format is a 400 before any model loads
    if body.think not in (None, False):
        raise bad_request(f"'{body.model}' does not support thinking", "think")
    try:
        keep = None if body.keep_alive is None else parse_keep_alive(body.keep_alive)
        num_ctx = (body.options or {}).get("num_ctx")
        num_ctx = None if num_ctx is None else coerce("num_ctx", num_ctx)
    except ValueError as e:
        raise bad_request(str(e)) from None
    return keep, num_ctx


async def _load_only(st: ServerState, model: str, keep: float | None) -> dict[str, Any]:
    """An empty prompt: load the model (or with keep_alive 0, unload it)."""
    name = st.manager.resolve(model).full_name
    if keep is not None and keep <= 0:
        await st.manager.unload(name)
        return {**p.head(name), "response": "", "done": True, "done_reason": "unload"}
    lease = await st.manager.acquire(name, keep)
    lease.release()
    return {**p.head(name), "response": "", "done": True, "done_reason": "load"}


def _options(entry: LoadedModel, options: dict[str, Any] | None) -> GenOptions:
    try:
        return apply_options(entry.defaults, options)
    except ValueError as e:
        raise bad_request(str(e), "options") from None


@router.post("/api/generate")
async def generate(request: Request) -> Response:
    t0 = time.perf_counter()
    st = get_state(request)
    body = await parse_body(request, p.GenerateRequest)
    if body.images:
        raise not_supported("images are", "images")
    keep, num_ctx = _check_common(body)
    if not body.prompt and not body.suffix and not body.context:
        return JSONResponse(await _load_only(st, body.model, keep))
    lease = await st.manager.acquire(body.model, keep, num_ctx, body.lora)
    try:
        entry = lease.entry
        opts = _options(entry, body.options)
        ids = await asyncio.to_thread(_generate_ids, entry, body)
        factory = await asyncio.to_thread(
            constraint_factory, entry, ollama_spec(body.format), "format"
        )
        if body.suffix:
            # a middle ends on the model's FIM markers, as on /infill and in `corral lsp`
            fim = FimStops.of_model(entry.model.tokenizer, entry.model.info.metadata)
            factory = fim.factory(factory)
            opts = opts.with_(stop=tuple(fim.stop_strings(opts.stop)))
        run = submit(entry, ids, opts, st.metrics, st.config.retry_after_s, constraint=factory)
    except BaseException:
        lease.release()
        raise

    def piece(text: str) -> dict[str, Any]:
        return {"response": text}

    # raw prompts get no context back: the caller owns the formatting (as in ollama)
    answer = _Answer(lease, run, t0, piece, ids if not body.raw else None)
    return await answer.respond(request, body.stream)


def _generate_ids(entry: LoadedModel, body: p.GenerateRequest) -> list[int]:
    """Prompt ids for /api/generate: FIM with a suffix, the text as is when raw, else the
    prompt in the chat template (after the `context` of an earlier answer, if given)."""
    model = entry.model
    context = check_ids(model, body.context or [], "context")
    prompt = body.prompt or ""
    if body.suffix:
        return context + fim_ids(model, prompt, body.suffix)
    if body.raw:
        return context + text_ids(model, prompt, add_special=not context)
    template = None
    if body.template:
        template = make_template(model, body.template)
    system = body.system if body.system is not None else entry.modelfile.system
    if context:  # a continuation: the earlier turns are in the context already
        messages = [{"role": "user", "content": prompt}]
    else:
        head = [{"role": "system", "content": system}] if system else []
        messages = head + [dict(m) for m in entry.modelfile.messages]
        messages.append({"role": "user", "content": prompt})
    extra = {"prompt": prompt, "system": system or ""} if template is not None else {}
    text = render(entry, messages, template, **extra)
    return context + text_ids(model, text, add_special=not context)


@router.post("/api/chat")
async def chat(request: Request) -> Response:
    t0 = time.perf_counter()
    st = get_state(request)
    body = await parse_body(request, p.ChatRequest)
    keep, num_ctx = _check_common(body)
    messages = _messages(body.messages or [])
    if not messages:
        result = await _load_only(st, body.model, keep)
        result.pop("response")
        return JSONResponse({**result, "message": {"role": "assistant", "content": ""}})
    lease = await st.manager.acquire(body.model, keep, num_ctx, body.lora)
    try:
        entry = lease.entry
        opts = _options(entry, body.options)
        plan = tool_plan(entry, body.tools, None, True)
        spec = ollama_spec(body.format)
        if plan is not None and spec is not None:
            raise bad_request("'format' cannot be combined with tools", "format")
        ids, factory = await asyncio.to_thread(_chat_prepare, entry, messages, plan, spec)
        run = submit(entry, ids, opts, st.metrics, st.config.retry_after_s, constraint=factory)
    except BaseException:
        lease.release()
        raise

    def piece(text: str) -> dict[str, Any]:
        return {"message": {"role": "assistant", "content": text}}

    answer = _Answer(lease, run, t0, piece, None, plan)
    return await answer.respond(request, body.stream)


def _chat_prepare(
    entry: LoadedModel, messages: list[dict[str, Any]], plan: ToolPlan | None,
    spec: GrammarSpec | None,
) -> tuple[list[int], ConstraintFactory | None]:  # fmt: skip
    """Prompt ids and constraint factory for /api/chat (blocking work)."""
    messages = with_defaults(entry, messages)
    if plan is None and any(m.get("tool_calls") or m["role"] == "tool" for m in messages):
        plan = ToolPlan.create(template_source(entry), [])  # history with calls, no tools
    if plan is None:
        return chat_ids(entry, messages), constraint_factory(entry, spec, "format")
    prepared, template_tools = plan.prepare(messages)
    extra = {"tools": template_tools} if template_tools else {}
    return chat_ids(entry, prepared, **extra), tool_factory(entry, plan)


def _messages(messages: list[p.Message]) -> list[dict[str, Any]]:
    out = []
    for i, m in enumerate(messages):
        if m.images:
            raise not_supported("images are", f"messages.{i}.images")
        msg: dict[str, Any] = {"role": m.role, "content": m.content or ""}
        if m.tool_calls:
            if m.role != "assistant" or not all(isinstance(c, dict) for c in m.tool_calls):
                raise bad_request("only assistant messages carry tool_calls", f"messages.{i}")
            msg["tool_calls"] = m.tool_calls
        if m.role == "tool":
            name = m.tool_name
            msg.update({"name": name} if name else {})
            msg.update({"tool_call_id": m.tool_call_id} if m.tool_call_id else {})
        out.append(msg)
    return out


class _Answer:
    """One generation's answer: a single JSON object, or NDJSON pieces then statistics."""

    def __init__(
        self,
        lease: Lease,
        run: Run,
        t0: float,
        piece: Callable[[str], dict[str, Any]],
        context: list[int] | None,
        plan: ToolPlan | None = None,
    ) -> None:
        self.lease = lease
        self.run = run
        self.t0 = t0
        self.piece = piece
        self.context = context  # prompt ids, for the `context` field (None: leave it out)
        self.name = lease.entry.name
        self.plan = plan if plan is not None and plan.callable else None

    def close(self) -> None:
        self.run.cancel()
        self.lease.release()

    async def respond(self, request: Request, stream: bool) -> Response:
        if stream:
            return EventStream(self.stream(), NDJSON_MEDIA_TYPE, self.close)
        try:
            return JSONResponse(await until_disconnect(request, self.whole()))
        finally:
            self.close()

    def _final(self, reason: str, timings: Any, ids: list[int]) -> dict[str, Any]:
        out = {
            **p.head(self.name),
            **self.piece(""),
            **p.final_fields(
                reason,
                time.perf_counter() - self.t0,
                self.lease.load_s,
                self.run.prompt_tokens,
                timings.prompt_s,
                len(ids),
                timings.decode_s,
            ),
        }
        if self.context is not None:
            out["context"] = self.context + ids
        return out

    async def whole(self) -> dict[str, Any]:
        c = await self.run.collect()
        out = self._final(c.finish_reason, c.timings, c.token_ids)
        parsed = self.plan.parse(c.text) if self.plan is not None else None
        if parsed is None or not parsed.calls:
            out.update(self.piece(c.text))
            return out
        out.update(self.piece(parsed.content))
        out["message"]["tool_calls"] = [call.ollama() for call in parsed.calls]
        return out

    def _pieces(self, parser: ToolCallParser | None, text: str, last: bool) -> list[dict]:
        """Response objects for a piece of text: content, or whole calls (ollama streams
        each call once it is complete, arguments as an object)."""
        if parser is None:
            return [self.piece(text)] if text else []
        events = (parser.push(text) if text else []) + (parser.finish() if last else [])
        out = []
        for e in events:
            if isinstance(e, ContentDelta):
                out.append(self.piece(e.text))
            elif isinstance(e, CallEnd):
                msg = {"role": "assistant", "content": "", "tool_calls": [e.call.ollama()]}
                out.append({"message": msg})
        return out

    async def stream(self) -> AsyncIterator[bytes]:
        from corral.engine.generate import Timings

        ids: list[int] = []
        reason, timings = "length", Timings()
        parser = self.plan.parser() if self.plan is not None else None
        try:
            async for ev in self.run.events():
                if ev.token_id is not None and not ev.eog:
                    ids.append(ev.token_id)
                for obj in self._pieces(parser, ev.text, ev.finish_reason is not None):
                    yield ndjson_line({**p.head(self.name), **obj, "done": False})
                if ev.finish_reason is not None:
                    reason, timings = finish_name(ev), ev.timings or timings
        except ApiError as e:
            yield ndjson_line(error_body(e, Family.OLLAMA))
            return
        yield ndjson_line(self._final(reason, timings, ids))
