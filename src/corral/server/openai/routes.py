"""OpenAI routes: GET /v1/models, POST /v1/chat/completions.

/v1/completions lives in completions.py, /v1/embeddings in embeddings.py. Each route: parse and check the body, hold the
model (a Lease), build prompt ids off the event loop, submit n runs, then answer at once
(JSON) or as server-sent events ending `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from corral.chat.tools import ToolCallParser, ToolPlan
from corral.chat.tools.parse import ArgsDelta, CallStart, ContentDelta
from corral.grammar import GrammarSpec
from corral.server.body import parse_body
from corral.server.errors import ApiError, Family, bad_request, error_body
from corral.server.manager import Lease, LoadedModel
from corral.server.openai import protocol as p
from corral.server.openai.convert import (
    chat_tools,
    check_chat,
    gen_options,
    per_choice,
    to_messages,
)
from corral.server.prompts import chat_ids, with_defaults
from corral.server.runs import Completion, Run, finish_name, merged, submit_many, until_disconnect
from corral.server.state import get_state
from corral.server.streaming import SSE_DONE, SSE_MEDIA_TYPE, EventStream, sse_data
from corral.server.structured import (
    ConstraintFactory,
    constraint_factory,
    openai_spec,
    template_source,
    tool_factory,
    tool_plan,
)

router = APIRouter()


def _created(manifest: dict[str, Any]) -> int:
    try:
        return int(datetime.fromisoformat(str(manifest.get("created"))).timestamp())
    except ValueError:
        return 0


@router.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    """Every stored model (loaded or not), as OpenAI model objects."""
    refs = await asyncio.to_thread(get_state(request).store.list)
    data = [p.model_object(r.full_name, _created(r.manifest)) for r in refs]
    return {"object": "list", "data": data}


@router.get("/v1/models/{model:path}")
async def get_model(request: Request, model: str) -> dict[str, Any]:
    ref = get_state(request).manager.resolve(model)
    return p.model_object(ref.full_name, _created(ref.manifest))


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    st = get_state(request)
    body = await parse_body(request, p.ChatCompletionRequest)
    check_chat(body)
    spec, param = openai_spec(body.response_format, body.grammar, body.json_schema)
    messages = to_messages(body.messages)
    max_tokens = body.max_completion_tokens
    max_tokens = body.max_tokens if max_tokens is None else max_tokens
    lease = await st.manager.acquire(body.model, lora=body.lora)
    try:
        entry = lease.entry
        tools, choice = chat_tools(body)
        plan = tool_plan(entry, tools, choice, body.parallel_tool_calls)
        if plan is not None and spec is not None and plan.callable:
            raise bad_request(f"'{param}' cannot be combined with tools", param)
        ids, factory = await asyncio.to_thread(_prepare, entry, messages, plan, spec, param)
        opts = per_choice(gen_options(entry.defaults, body, max_tokens), body.n)
        top = (body.top_logprobs or 0) if body.logprobs else 0
        runs = submit_many(
            entry, [ids] * body.n, opts, st.metrics, st.config.retry_after_s, top, factory
        )
    except BaseException:
        lease.release()
        raise
    answer = _ChatAnswer(body, lease, runs, plan)
    if body.stream:
        return EventStream(answer.stream(), SSE_MEDIA_TYPE, answer.close)
    try:
        return JSONResponse(await until_disconnect(request, answer.whole()))
    finally:
        answer.close()


def _prepare(
    entry: LoadedModel, messages: list[dict[str, Any]], plan: ToolPlan | None,
    spec: GrammarSpec | None, param: str,
) -> tuple[list[int], ConstraintFactory | None]:  # fmt: skip
    """Prompt ids and the constraint factory (blocking work: templates, compilation)."""
    messages = with_defaults(entry, messages)
    if plan is None and any(m.get("tool_calls") or m["role"] == "tool" for m in messages):
        plan = ToolPlan.create(template_source(entry), [])  # history with calls, no tools
    if plan is None:
        return chat_ids(entry, messages), constraint_factory(entry, spec, param)
    prepared, template_tools = plan.prepare(messages)
    extra = {"tools": template_tools} if template_tools else {}
    ids = chat_ids(entry, prepared, **extra)
    return ids, tool_factory(entry, plan) or constraint_factory(entry, spec, param)


class _ChatAnswer:
    """The answer to one chat request, whole or streamed."""

    def __init__(
        self, body: p.ChatCompletionRequest, lease: Lease, runs: list[Run], plan: ToolPlan | None
    ) -> None:
        self.body = body
        self.lease = lease
        self.runs = runs
        self.plan = plan if plan is not None and plan.callable else None
        self.rid = p.new_id("chatcmpl")
        self.created = p.now()
        self.model = lease.entry.name
        self.tokenizer = lease.entry.model.tokenizer

    def close(self) -> None:
        for r in self.runs:
            r.cancel()
        self.lease.release()

    def _logprobs(
        self, ids: list[int], lps: list[float], tops: list[tuple[tuple[int, float], ...]]
    ) -> dict[str, Any] | None:
        if not self.body.logprobs:
            return None
        piece = self.tokenizer.token_to_piece
        content = [
            p.token_logprob(piece(t), lp, [(piece(a), alp) for a, alp in top])
            for t, lp, top in zip(ids, lps, tops, strict=True)
        ]
        return {"content": content}

    def _choice(self, i: int, c: Completion) -> dict[str, Any]:
        lp = self._logprobs(c.token_ids, c.logprobs, c.top)
        parsed = self.plan.parse(c.text) if self.plan is not None else None
        if parsed is None or not parsed.calls:
            return p.chat_choice(i, c.text, c.finish_reason, lp)
        # complete calls only; a cut one is dropped and the finish reason stays "length"
        finish = "tool_calls" if c.finish_reason == "stop" else c.finish_reason
        calls = [call.openai() for call in parsed.calls]
        return p.chat_choice(i, parsed.content or None, finish, lp, calls)

    async def whole(self) -> dict[str, Any]:
        done = await asyncio.gather(*(r.collect() for r in self.runs))
        choices = [self._choice(i, c) for i, c in enumerate(done)]
        cached = done[0].timings.cached_tokens
        use = p.usage(done[0].prompt_tokens, sum(c.completion_tokens for c in done), cached)
        return p.chat_completion(self.rid, self.model, self.created, choices, use)

    def _chunk(self, choices: list[dict[str, Any]], use: dict[str, Any] | None = None) -> bytes:
        opts = self.body.stream_options
        with_usage = bool(opts and opts.include_usage)
        return sse_data(p.chat_chunk(self.rid, self.model, self.created, choices, use, with_usage))

    async def stream(self) -> AsyncIterator[bytes]:
        n = len(self.runs)
        for i in range(n):
            yield self._chunk([p.chunk_choice(i, {"role": "assistant", "content": ""})])
        ids: list[list[int]] = [[] for _ in range(n)]
        lps: list[list[float]] = [[] for _ in range(n)]
        tops: list[list[tuple[tuple[int, float], ...]]] = [[] for _ in range(n)]
        counts, finished, cached = [0] * n, [False] * n, 0
        parsers = [self.plan.parser() if self.plan is not None else None for _ in range(n)]
        try:
            async for i, ev in merged(self.runs):
                if ev.token_id is not None and not ev.eog:
                    counts[i] += 1
                    ids[i].append(ev.token_id)
                    lps[i].append(ev.logprob if ev.logprob is not None else 0.0)
                    tops[i].append(ev.top_logprobs or ())
                deltas = self._deltas(parsers[i], ev.text, ev.finish_reason is not None)
                for k, delta in enumerate(deltas):
                    lp = self._logprobs(ids[i], lps[i], tops[i]) if k == 0 else None
                    ids[i], lps[i], tops[i] = [], [], []
                    yield self._chunk([p.chunk_choice(i, delta, None, lp)])
                if ev.finish_reason is not None:
                    finished[i] = True
                    cached = ev.timings.cached_tokens if ev.timings else cached
                    finish = finish_name(ev)
                    if parsers[i] is not None and parsers[i].calls and finish == "stop":
                        finish = "tool_calls"
                    yield self._chunk([p.chunk_choice(i, {}, finish)])
        except ApiError as e:
            # headers are gone: the error travels in-band, as OpenAI's own streams do
            yield sse_data(error_body(e, Family.OPENAI))
            yield SSE_DONE
            return
        for i in range(n):
            if not finished[i]:  # max_tokens 0: no events at all
                yield self._chunk([p.chunk_choice(i, {}, "length")])
        opts = self.body.stream_options
        if opts and opts.include_usage:
            use = p.usage(self.runs[0].prompt_tokens, sum(counts), cached)
            yield self._chunk([], use)
        yield SSE_DONE

    @staticmethod
    def _deltas(parser: ToolCallParser | None, text: str, last: bool) -> list[dict[str, Any]]:
        """Chunk deltas for a piece of text: content, or tool-call starts and argument
        fragments (by index) once the model writes calls."""
        if parser is None:
            return [{"content": text}] if text else []
        events = parser.push(text) if text else []
        if last:
            events += parser.finish()
        out: list[dict[str, Any]] = []
        for e in events:
            if isinstance(e, ContentDelta):
                out.append({"content": e.text})
            elif isinstance(e, CallStart):
                out.append(p.tool_call_start(e.index, e.id, e.name))
            elif isinstance(e, ArgsDelta):
                out.append(p.tool_call_args(e.index, e.text))
        return out
