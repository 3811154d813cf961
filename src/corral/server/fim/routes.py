"""POST /infill (llama.cpp) and POST /v1/completions with `segments` (Tabby).

Both build their prompt with corral.fim from the model's own FIM tokens, fitted to the
context (far code first, extra files before that), and stop on the family's section
markers (`FimStops`, as every suffix-aware route and `corral lsp` do), so a middle never
runs on into a new file.

Path clash: Tabby and OpenAI both POST to /v1/completions. The bodies differ: Tabby's has a
`segments` object, OpenAI's a `prompt`. This router is registered before the OpenAI one
and answers /v1/completions itself, handing every body without `segments` to the OpenAI
route unchanged (Starlette keeps the body it read, so the OpenAI route reads it again).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from corral.errors import CorralError
from corral.fim import (
    FimBuilder,
    FimOrder,
    FimRequest,
    FimStops,
    NoFimError,
    prompt_budget,
    require_fim_tokens,
)
from corral.server.body import parse_body
from corral.server.errors import ApiError, bad_request, from_corral_error
from corral.server.fim import protocol as p
from corral.server.llamacpp import completion_response
from corral.server.loras import LoraScale
from corral.server.manager import Lease, LoadedModel
from corral.server.options import GenOptions
from corral.server.prompts import text_ids
from corral.server.runs import Run, until_disconnect
from corral.server.state import ServerState, get_state

router = APIRouter()
TABBY_MAX_TOKENS = 64  # Tabby's own default (max_decoding_tokens)


async def _lease(st: ServerState, model: str | None, lora: list[LoraScale] | None = None) -> Lease:
    """The named model; unnamed (llama.cpp and Tabby serve one model): the only loaded
    model, else the only stored one. `lora`: the request's adapters (server/loras.py)."""
    if model is None:
        # one model may be loaded several times, once per adapter set
        loaded = list(dict.fromkeys(e.name for e in st.manager.loaded()))
        if len(loaded) == 1:
            model = loaded[0]
        else:
            stored = [] if loaded else await asyncio.to_thread(st.store.list)
            if len(stored) != 1:
                raise bad_request(
                    "'model' is required unless exactly one model is loaded or stored", "model"
                )
            model = stored[0].full_name
    return await st.manager.acquire(model, lora=lora)


def fim_prompt(
    entry: LoadedModel, req: FimRequest, max_tokens: int | None, order: FimOrder, param: str
) -> tuple[list[int], FimStops]:
    """(prompt ids, stops) for a FIM request; a 400 naming `param` for a model without
    FIM tokens. Runs a tokenizer: call through asyncio.to_thread."""
    model = entry.model
    try:
        tokens = require_fim_tokens(model.tokenizer, model.info.metadata, f"model {entry.name!r}")
    except NoFimError as e:
        raise ApiError(400, str(e), param=param) from None
    built = FimBuilder(model.tokenizer, tokens, order).build(
        req, prompt_budget(model.info.n_ctx, max_tokens)
    )
    return built.ids, FimStops.of(model.tokenizer, built.stop_ids)


def submit_fim(
    st: ServerState, entry: LoadedModel, ids: list[int], opts: GenOptions, fim: FimStops
) -> Run:
    """Queue a FIM generation that ends on the FIM markers as well as the model's end
    tokens."""
    from corral.engine.scheduler import Request as EngineRequest

    n_ctx = entry.n_ctx
    max_tokens = n_ctx if opts.max_tokens is None else max(1, opts.max_tokens)
    request = EngineRequest(
        prompt_ids=ids, max_tokens=max_tokens, sampling=opts.sampling,
        stop=fim.stop_strings(opts.stop), constraint=fim.constraint(),
    )  # fmt: skip
    try:
        handle = entry.scheduler.submit(request, loop=asyncio.get_running_loop())
    except CorralError as e:
        raise from_corral_error(e, st.config.retry_after_s) from None
    return Run(handle, len(ids), st.metrics)


def _sampling(base: GenOptions, **given: Any) -> GenOptions:
    changes = {k: v for k, v in given.items() if v is not None}
    return base.with_(sampling=base.sampling.with_(**changes)) if changes else base


# -- llama.cpp /infill -----------------------------------------------------------------------


@router.post("/infill")
async def infill(request: Request) -> Response:
    st = get_state(request)
    body = await parse_body(request, p.InfillRequest)
    lease = await _lease(st, body.model, body.lora)
    try:
        entry = lease.entry
        opts = _sampling(
            entry.defaults, temperature=body.temperature, top_k=body.top_k, top_p=body.top_p,
            min_p=body.min_p, repeat_penalty=body.repeat_penalty, seed=body.seed,
        ).with_(max_tokens=None if body.n_predict < 0 else body.n_predict)  # fmt: skip
        if body.stop:
            opts = opts.with_(stop=tuple(body.stop))
        req = FimRequest(body.input_prefix, body.input_suffix, body.prompt, body.extra_files())
        order = FimOrder.SPM if body.spm_infill else FimOrder.PSM
        ids, fim = await asyncio.to_thread(
            fim_prompt, entry, req, opts.max_tokens, order, "input_suffix"
        )
        run = submit_fim(st, entry, ids, opts, fim)
    except BaseException:
        lease.release()
        raise

    return await completion_response(request, run, lease, entry.name, body.stream)


# -- Tabby /v1/completions (segments) --------------------------------------------------------
# Tabby's completion API does not stream: its CompletionRequest has no `stream` field and
# the route answers one JSON CompletionResponse (tabby/src/services/completion.rs), which is
# what Tabby's clients expect. A `stream` field is ignored like any other unknown field.


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    """Tabby's completion if the body has `segments`, else OpenAI's."""
    if not _is_tabby(await request.body()):
        from corral.server.openai.completions import completions as openai_completions

        return await openai_completions(request)
    return await _tabby(request)


def _is_tabby(raw: bytes) -> bool:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False  # the OpenAI route reports the malformed body
    return isinstance(data, dict) and isinstance(data.get("segments"), dict)


def _tabby_ids(
    entry: LoadedModel, body: p.TabbyRequest, max_tokens: int
) -> tuple[list[int], FimStops]:
    seg = body.segments or p.Segments()
    debug = body.debug_options
    model = entry.model
    # prompts not built here still stop on the model's markers, if it has them
    own = FimStops.of_model(model.tokenizer, model.info.metadata)
    if debug is not None and debug.raw_prompt is not None:
        return text_ids(model, debug.raw_prompt), own
    use_extra = not (debug and debug.disable_retrieval_augmented_code_completion)
    extra = seg.extra_files() if use_extra else []
    if not seg.suffix and not own.ids:
        # nothing after the cursor: a plain continuation drops nothing the client sent
        return text_ids(model, seg.prefix), own
    req = FimRequest(seg.prefix, seg.suffix or "", extra=extra, path=seg.filepath)
    return fim_prompt(entry, req, max_tokens, FimOrder.PSM, "segments.suffix")


async def _tabby(request: Request) -> Response:
    st = get_state(request)
    body = await parse_body(request, p.TabbyRequest)
    lease = await _lease(st, body.model)
    try:
        entry = lease.entry
        max_tokens = body.max_tokens or TABBY_MAX_TOKENS
        opts = _sampling(entry.defaults, temperature=body.temperature, seed=body.seed)
        opts = opts.with_(max_tokens=max_tokens)
        ids, fim = await asyncio.to_thread(_tabby_ids, entry, body, max_tokens)
        run = submit_fim(st, entry, ids, opts, fim)
        try:
            done = await until_disconnect(request, run.collect())
        finally:
            run.cancel()
    finally:
        lease.release()
    from corral.server.openai.protocol import new_id

    return JSONResponse({"id": new_id("cmpl"), "choices": [{"index": 0, "text": done.text}]})
