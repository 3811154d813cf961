"""ollama model management: /api/tags, /api/show, /api/ps, /api/pull, /api/create,
/api/copy, /api/delete. These read and write the store; generation is in routes.py.

/api/create takes a Modelfile text or ollama's JSON fields; its `files` (one GGUF) and
`adapters` (GGUF LoRA files) name blobs uploaded first through /api/blobs (blobs.py)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from corral.errors import CorralError
from corral.server.body import parse_body
from corral.server.durations import rfc3339
from corral.server.errors import bad_request, from_corral_error, not_supported
from corral.server.modelfile import Modelfile, create_model, parameters_text, parse_modelfile
from corral.server.ollama import protocol as p
from corral.server.ollama.blobs import uploaded_blob
from corral.server.options import OPTION_NAMES, coerce
from corral.server.state import get_state
from corral.server.streaming import NDJSON_MEDIA_TYPE, ndjson_line
from corral.store import ModelRef, Store

router = APIRouter()

FAR_FUTURE = "2318-01-01T00:00:00Z"  # expires_at of a model kept forever, as ollama shows it
_FIM_TEXTS = ("<|fim_prefix|>", "<fim_prefix>", "<fim-prefix>", "<PRE>")


def _size_text(n: int | None) -> str:
    if not n:
        return ""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}".replace(".0", "")
    return str(n)


def details(ref: ModelRef) -> dict[str, Any]:
    """ollama's `details` object, from what the manifest recorded at pull time."""
    summary = ref.manifest.get("gguf") or {}
    arch = summary.get("architecture") or ""
    parent = Modelfile.from_manifest(ref.manifest).from_ or ""
    return {
        "parent_model": parent,
        "format": "gguf",
        "family": arch,
        "families": [arch] if arch else None,
        "parameter_size": _size_text(summary.get("parameters")),
        "quantization_level": summary.get("file_type") or "",
    }


def _digest(ref: ModelRef) -> str:
    return (ref.digest or "").removeprefix("sha256:")


@router.get("/api/tags")
async def tags(request: Request) -> dict[str, Any]:
    refs = await asyncio.to_thread(get_state(request).store.list)
    return {
        "models": [
            {
                "name": r.full_name,
                "model": r.full_name,
                "modified_at": r.manifest.get("created") or rfc3339(0),
                "size": r.size,
                "digest": _digest(r),
                "details": details(r),
            }
            for r in refs
        ]
    }


@router.get("/api/ps")
async def ps(request: Request) -> dict[str, Any]:
    models = []
    for e in get_state(request).manager.loaded():
        if math.isinf(e.keep_alive):
            expires = FAR_FUTURE
        elif e.expires_at is not None:
            expires = rfc3339(e.expires_at)
        else:  # in use: it stays at least keep_alive past the end of its requests
            expires = rfc3339(time.time() + e.keep_alive)
        models.append(
            {
                "name": e.name,
                "model": e.name,
                "size": e.size,
                "digest": _digest(e.ref),
                "details": details(e.ref),
                "expires_at": expires,
                "size_vram": 0,
                "context_length": e.n_ctx,
            }
        )
    return {"models": models}


@router.post("/api/show")
async def show(request: Request) -> dict[str, Any]:
    st = get_state(request)
    body = await parse_body(request, p.ModelRequest)
    ref = st.manager.resolve(body.model)
    return await asyncio.to_thread(_show, ref, body.verbose)


def _show(ref: ModelRef, verbose: bool) -> dict[str, Any]:
    from corral.chat import template_for
    from corral.gguf import open_gguf

    with open_gguf(ref.path) as g:
        meta = dict(g.metadata)
        n_params = sum(t.n_elements for t in g.tensors.values())
    info: dict[str, Any] = {"general.parameter_count": n_params}
    for key, value in meta.items():
        if isinstance(value, list | tuple) or hasattr(value, "tolist"):
            # vocabularies are huge: ollama leaves them out unless asked (verbose)
            value = _plain(value) if verbose else None
        info[key] = _plain(value)
    mf = Modelfile.from_manifest(ref.manifest)
    try:
        template = mf.template or template_for(meta).source
    except CorralError:
        template = ""
    tokens = meta.get("tokenizer.ggml.tokens")
    fim = tokens is not None and any(t in _FIM_TEXTS for t in tokens)
    licence = "\n".join(mf.license) or str(meta.get("general.license") or "")
    out: dict[str, Any] = {
        "modelfile": mf.render(ref.full_name),
        "parameters": parameters_text(mf.parameters),
        "template": template,
        "details": details(ref),
        "model_info": info,
        "capabilities": ["completion", "insert"] if fim else ["completion"],
        "modified_at": ref.manifest.get("created") or rfc3339(0),
        "license": licence,
    }
    if mf.system is not None:
        out["system"] = mf.system
    if mf.messages:
        out["messages"] = mf.messages
    return out


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@router.post("/api/pull")
async def pull(request: Request) -> Response:
    st = get_state(request)
    body = await parse_body(request, p.PullRequest)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    last: dict[str, int] = {}

    def progress(desc: str, done: int, total: int | None) -> None:
        # from the pull's thread; at most one status per percent, so a fast local copy
        # does not flood the client with lines
        pct = int(100 * done / total) if total else done >> 20
        if last.get(desc) == pct and done != total:
            return
        last[desc] = pct
        status = {"status": f"pulling {desc}", "digest": desc, "total": total, "completed": done}
        loop.call_soon_threadsafe(queue.put_nowait, status)

    from corral.store import pull as store_pull

    task = asyncio.ensure_future(asyncio.to_thread(store_pull, body.model, st.store, progress))
    if not body.stream:
        await task
        return JSONResponse({"status": "success"})
    return _stream_statuses(task, queue, st.config.retry_after_s)


def _stream_statuses(
    task: asyncio.Future[Any], queue: asyncio.Queue[dict[str, Any]], retry_after_s: int
) -> Response:
    from starlette.responses import StreamingResponse

    async def lines() -> AsyncIterator[bytes]:
        yield ndjson_line({"status": "pulling manifest"})
        while not (task.done() and queue.empty()):
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                yield ndjson_line(getter.result())
            else:
                getter.cancel()
        try:
            task.result()
        except CorralError as e:
            yield ndjson_line({"error": from_corral_error(e, retry_after_s).message})
            return
        for status in ("verifying sha256 digest", "writing manifest", "success"):
            yield ndjson_line({"status": status})

    return StreamingResponse(lines(), media_type=NDJSON_MEDIA_TYPE)


@router.post("/api/create")
async def create(request: Request) -> Response:
    st = get_state(request)
    body = await parse_body(request, p.CreateRequest)
    if body.quantize:
        raise not_supported("quantize is", "quantize")
    if body.files and (body.from_ or body.modelfile):
        raise bad_request("give 'files' or 'from' (or a modelfile's FROM), not both", "files")
    spec = parse_modelfile(body.modelfile) if body.modelfile else _spec(body)
    if body.files or body.adapters:
        await asyncio.to_thread(_use_uploads, st.store, body, spec)
    ref = await asyncio.to_thread(create_model, st.store, body.model, spec)
    # its defaults changed: reload on next use (every idle instance, one per adapter set)
    for entry in st.manager.loaded():
        if entry.name == ref.full_name and entry.leases == 0:
            await st.manager.unload_instance(entry)
    statuses = [
        {"status": f"using existing layer sha256:{_digest(ref)}"},
        {"status": "writing manifest"},
        {"status": "success"},
    ]
    if not body.stream:
        return JSONResponse(statuses[-1])
    content = b"".join(ndjson_line(s) for s in statuses)
    return Response(content, media_type=NDJSON_MEDIA_TYPE)


def _spec(body: p.CreateRequest) -> Modelfile:
    params: dict[str, Any] = {}
    for key, value in (body.parameters or {}).items():
        if key not in OPTION_NAMES:
            raise bad_request(f"unknown parameter '{key}'", "parameters")
        try:
            params[key] = coerce(key, value)
        except ValueError as e:
            raise bad_request(str(e), "parameters") from None
    messages = []
    for m in body.messages or []:
        if m.role not in ("system", "user", "assistant"):
            raise bad_request(f"message role '{m.role}' cannot be part of a model", "messages")
        messages.append({"role": m.role, "content": m.content or ""})
    licence = [body.license] if isinstance(body.license, str) else list(body.license or [])
    return Modelfile(body.from_, params, body.template, body.system, messages, licence)


def _use_uploads(store: Store, body: p.CreateRequest, spec: Modelfile) -> None:
    """Point `spec` at the uploaded blobs (POST /api/blobs) the request names: the one GGUF
    of `files` becomes its FROM, each GGUF LoRA of `adapters` an ADAPTER at scale 1."""
    if body.files:
        if len(body.files) != 1:
            raise bad_request(
                f"'files' names {len(body.files)} files: corral creates a model from one GGUF",
                "files",
            )
        ((name, digest),) = body.files.items()
        spec.from_ = str(_gguf_blob(store, name, digest, "files"))
    adapters = [
        (str(_gguf_blob(store, name, digest, "adapters")), 1.0)
        for name, digest in (body.adapters or {}).items()
    ]
    if adapters and body.files:
        from corral.adapters import check_adapters

        # create_model stores a FROM file before it checks the adapters: check them first,
        # so a bad adapter does not leave the name pointing at the bare base
        check_adapters(str(spec.from_), adapters)
    spec.adapters += adapters


def _gguf_blob(store: Store, name: str, digest: str, param: str) -> Path:
    """The uploaded blob `digest` given for file `name`; a 400 unless it is a GGUF file."""
    from corral.gguf import sniff_format

    path = uploaded_blob(store, digest, name, param)
    kind = sniff_format(path)
    if kind != "GGUF":
        raise bad_request(f"{param} '{name}' is not a GGUF file (it looks like {kind})", param)
    return path


@router.post("/api/copy")
async def copy(request: Request) -> Response:
    st = get_state(request)
    body = await parse_body(request, p.CopyRequest)
    await asyncio.to_thread(st.store.copy, body.source, body.destination)
    return Response(status_code=200)


@router.delete("/api/delete")
async def delete(request: Request) -> Response:
    st = get_state(request)
    body = await parse_body(request, p.ModelRequest)
    ref = st.manager.resolve(body.model)
    await st.manager.unload(ref.full_name)
    await asyncio.to_thread(st.store.remove, ref.full_name)
    return Response(status_code=200)
