"""POST /v1/completions: text in, text out (several prompts, n choices each, echo, suffix
for fill-in-the-middle, logprobs of the chosen tokens)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from corral.fim import FimStops
from corral.server.body import parse_body
from corral.server.errors import ApiError, Family, bad_request, error_body, not_supported
from corral.server.manager import Lease, LoadedModel
from corral.server.openai import protocol as p
from corral.server.openai.convert import check_common, gen_options, per_choice
from corral.server.prompts import check_ids, fim_ids, text_ids
from corral.server.runs import Completion, Run, merged, submit_many, until_disconnect
from corral.server.state import get_state
from corral.server.streaming import SSE_DONE, SSE_MEDIA_TYPE, EventStream, sse_data
from corral.server.structured import constraint_factory, openai_spec

router = APIRouter()


def _prompts(body: p.CompletionRequest) -> list[str | list[int]]:
    """The request's prompts, each text or token ids."""
    prompt = body.prompt
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise bad_request("'prompt' is an empty list", "prompt")
    if all(isinstance(x, int) for x in prompt):
        return [list(prompt)]  # type: ignore[arg-type]
    return list(prompt)  # type: ignore[arg-type]


def _ids(entry: LoadedModel, prompt: str | list[int], suffix: str | None) -> list[int]:
    model = entry.model
    if suffix is not None:
        if not isinstance(prompt, str):
            raise bad_request("'suffix' needs a text prompt, not token ids", "suffix")
        return fim_ids(model, prompt, suffix)
    if isinstance(prompt, str):
        return text_ids(model, prompt)
    return check_ids(model, prompt, "prompt")


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    st = get_state(request)
    body = await parse_body(request, p.CompletionRequest)
    check_common(body)
    if body.best_of is not None and body.best_of != body.n:
        raise not_supported("best_of other than n is", "best_of")
    prompts = _prompts(body)
    if len(prompts) * body.n > p.MAX_N:
        raise bad_request(f"at most {p.MAX_N} completions per request (prompts x n)", "n")
    spec, param = openai_spec(body.response_format, body.grammar, body.json_schema)
    lease = await st.manager.acquire(body.model, lora=body.lora)
    try:
        entry = lease.entry
        ids = [await asyncio.to_thread(_ids, entry, pr, body.suffix) for pr in prompts]
        factory = await asyncio.to_thread(constraint_factory, entry, spec, param)
        opts = per_choice(gen_options(entry.defaults, body, body.max_tokens), body.n)
        if body.suffix is not None:
            # a middle ends on the model's FIM markers, as on /infill and in `corral lsp`
            fim = FimStops.of_model(entry.model.tokenizer, entry.model.info.metadata)
            factory = fim.factory(factory)
            opts = [o.with_(stop=tuple(fim.stop_strings(o.stop))) for o in opts]
        all_ids = [x for x in ids for _ in range(body.n)]
        runs = submit_many(
            entry, all_ids, opts * len(ids), st.metrics, st.config.retry_after_s,
            body.logprobs or 0, factory,
        )  # fmt: skip
    except BaseException:
        lease.release()
        raise
    texts = [pr if isinstance(pr, str) else entry.model.detokenize(pr) for pr in prompts]
    answer = _CompletionAnswer(body, lease, runs, [t for t in texts for _ in range(body.n)])
    if body.stream:
        return EventStream(answer.stream(), SSE_MEDIA_TYPE, answer.close)
    try:
        return JSONResponse(await until_disconnect(request, answer.whole()))
    finally:
        answer.close()


class _CompletionAnswer:
    def __init__(
        self, body: p.CompletionRequest, lease: Lease, runs: list[Run], prompts: list[str]
    ) -> None:
        self.body = body
        self.lease = lease
        self.runs = runs
        self.prompts = prompts  # per choice, for echo
        self.rid = p.new_id("cmpl")
        self.created = p.now()
        self.model = lease.entry.name
        self.tokenizer = lease.entry.model.tokenizer

    def close(self) -> None:
        for r in self.runs:
            r.cancel()
        self.lease.release()

    def _text(self, token_id: int) -> str:
        return self.tokenizer.token_to_piece(token_id).decode("utf-8", "replace")

    def _logprobs(
        self,
        ids: list[int],
        lps: list[float],
        tops: list[tuple[tuple[int, float], ...]],
        offset: int,
    ) -> dict[str, Any] | None:
        """Legacy logprobs: chosen tokens, their logprobs, and `logprobs` alternatives each
        (the chosen token among them, as OpenAI does)."""
        if self.body.logprobs is None:
            return None
        tokens = [self._text(t) for t in ids]
        offsets = []
        for tok in tokens:
            offsets.append(offset)
            offset += len(tok)
        return {
            "tokens": tokens,
            "token_logprobs": lps,
            "top_logprobs": [
                {**{self._text(a): alp for a, alp in top}, tok: lp}
                for tok, lp, top in zip(tokens, lps, tops, strict=True)
            ],
            "text_offset": offsets,
        }

    def _choice(self, i: int, c: Completion) -> dict[str, Any]:
        head = self.prompts[i] if self.body.echo else ""
        lp = self._logprobs(c.token_ids, c.logprobs, c.top, len(head))
        return p.text_choice(i, head + c.text, c.finish_reason, lp)

    async def whole(self) -> dict[str, Any]:
        done = await asyncio.gather(*(r.collect() for r in self.runs))
        choices = [self._choice(i, c) for i, c in enumerate(done)]
        prompt_tokens = sum(c.prompt_tokens for c in done[:: self.body.n])
        use = p.usage(prompt_tokens, sum(c.completion_tokens for c in done))
        return p.text_completion(self.rid, self.model, self.created, choices, use)

    def _chunk(self, choices: list[dict[str, Any]], use: dict[str, Any] | None = None) -> bytes:
        body = p.text_completion(self.rid, self.model, self.created, choices, use, chunk=True)
        return sse_data(body)

    async def stream(self) -> AsyncIterator[bytes]:
        n = len(self.runs)
        offsets = [0] * n
        if self.body.echo:
            for i in range(n):
                offsets[i] = len(self.prompts[i])
                yield self._chunk([p.text_choice(i, self.prompts[i], None, None)])
        ids: list[list[int]] = [[] for _ in range(n)]
        lps: list[list[float]] = [[] for _ in range(n)]
        tops: list[list[tuple[tuple[int, float], ...]]] = [[] for _ in range(n)]
        counts, finished = [0] * n, [False] * n
        try:
            async for i, ev in merged(self.runs):
                if ev.token_id is not None and not ev.eog:
                    counts[i] += 1
                    ids[i].append(ev.token_id)
                    lps[i].append(ev.logprob if ev.logprob is not None else 0.0)
                    tops[i].append(ev.top_logprobs or ())
                reason = None
                if ev.finish_reason is not None:
                    finished[i] = True
                    reason = "length" if ev.finish_reason.value == "length" else "stop"
                if ev.text or reason:
                    lp = self._logprobs(ids[i], lps[i], tops[i], offsets[i])
                    offsets[i] += len(ev.text)
                    ids[i], lps[i], tops[i] = [], [], []
                    yield self._chunk([p.text_choice(i, ev.text, reason, lp)])
        except ApiError as e:
            yield sse_data(error_body(e, Family.OPENAI))
            yield SSE_DONE
            return
        for i in range(n):
            if not finished[i]:
                yield self._chunk([p.text_choice(i, "", "length", None)])
        opts = self.body.stream_options
        if opts and opts.include_usage:
            prompt_tokens = sum(r.prompt_tokens for r in self.runs[:: self.body.n])
            yield self._chunk([], p.usage(prompt_tokens, sum(counts)))
        yield SSE_DONE
