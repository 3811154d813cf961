"""`create_app(config)`: the FastAPI app behind `corral serve`.

API families register as routers (openai/, ollama/, llama.cpp extras); errors are shaped per
family by the handlers below, so every failure a client can cause is a 4xx in the shape its
library reads, and an unexpected one is a logged 500 that leaves the server running.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from corral import __version__
from corral.errors import CorralError
from corral.server.config import ServerConfig
from corral.server.errors import ApiError, error_body, family_of, from_corral_error
from corral.server.manager import ModelManager
from corral.server.middleware import (
    OPEN_PATHS,
    ApiKeyMiddleware,
    BodyLimitMiddleware,
    RequestCountMiddleware,
)
from corral.server.runs import ClientGone
from corral.server.state import ServerState
from corral.server.web import WebPages

log = logging.getLogger("corral.server")


def create_app(config: ServerConfig | None = None) -> FastAPI:
    """A new app with its own model manager; nothing is loaded until a request needs it."""
    from corral.server import llamacpp
    from corral.server.fim import routes as fim_routes
    from corral.server.ollama import embed as ollama_embed
    from corral.server.ollama import routes as ollama_routes
    from corral.server.openai import completions
    from corral.server.openai import embeddings as openai_embeddings
    from corral.server.openai import routes as openai_routes
    from corral.server.retrieval import plugin as retrieval_plugin
    from corral.server.retrieval import routes as retrieval_routes
    from corral.server.tei import routes as tei_routes
    from corral.store import Store

    config = config or ServerConfig()
    store = Store(config.store_home)
    state = ServerState(config, store, ModelManager(config, store))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await state.manager.close()

    app = FastAPI(
        title="corral",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # no CDN-hosted docs pages: the server must work offline
        redoc_url=None,
    )
    app.state.corral = state
    for router in (
        openai_routes.router,
        # before OpenAI's: it answers /v1/completions bodies with `segments` (Tabby) and
        # hands the others to OpenAI's route (see corral.server.fim.routes)
        fim_routes.router,
        completions.router,
        openai_embeddings.router,
        ollama_routes.router,
        ollama_embed.router,
        llamacpp.router,
        tei_routes.router,
        retrieval_routes.router,
    ):
        app.include_router(router)
    _install_error_handlers(app, config.retry_after_s)

    # Middleware run outermost-last-added: count every request, then the key, then the
    # body limit (an unauthenticated client cannot make the server buffer a body).
    app.add_middleware(BodyLimitMiddleware, limit=config.max_body_bytes)
    if config.api_key:
        # the retrieval plugin's routes check their own bearer token, when one is set
        open_paths = OPEN_PATHS | (retrieval_plugin.PLUGIN_PATHS if config.bearer_token else set())
        app.add_middleware(ApiKeyMiddleware, api_key=config.api_key, open_paths=open_paths)
    # the web chat's page sits outside the key check: a browser cannot send the key with
    # a page load, so the page asks for it and sends it on its API calls
    app.add_middleware(WebPages)
    app.add_middleware(RequestCountMiddleware, metrics=state.metrics)
    return app


def _respond(request: Request, err: ApiError) -> JSONResponse:
    return JSONResponse(
        error_body(err, family_of(request.url.path)), status_code=err.status, headers=err.headers
    )


def _install_error_handlers(app: FastAPI, retry_after_s: int) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return _respond(request, exc)

    @app.exception_handler(CorralError)
    async def corral_error(request: Request, exc: CorralError) -> Response:
        return _respond(request, from_corral_error(exc, retry_after_s))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(x) for x in first.get("loc", ()))
        return _respond(request, ApiError(400, f"'{loc}': {first.get('msg', 'invalid')}"))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        return _respond(request, ApiError(exc.status_code, message, headers=exc.headers))

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, exc: ClientGone) -> Response:
        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        msg = f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())}"
        return _respond(request, ApiError(500, msg[:500]))
