"""Pure ASGI middleware: API-key check, request body limit, request counting.

Pure ASGI (not BaseHTTPMiddleware) so streaming responses pass straight through and the
`receive` channel still reports a client's disconnect to the streaming body.
"""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.server.errors import ApiError, error_body, family_of
from corral.server.metrics import Metrics

OPEN_PATHS = frozenset({"/health"})  # answered without an API key (load balancers probe it)
# bodies the route streams to disk itself, of any size (ollama's blob uploads are whole models)
STREAMED_PREFIXES = ("/api/blobs/",)


async def send_error(scope: Scope, send: Send, err: ApiError) -> None:
    """Answer with `err` in the shape of the path's API family."""
    body = json.dumps(error_body(err, family_of(scope.get("path", "")))).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ApiKeyMiddleware:
    """Every route but /health needs `Authorization: Bearer KEY` (OpenAI's scheme, which
    the ollama clients send as a header too)."""

    def __init__(self, app: ASGIApp, api_key: str, open_paths: frozenset[str] = OPEN_PATHS) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode()
        # paths answered without the key (/health; the retrieval plugin's check their own)
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        # constant-time comparison: the key must not leak through response timing
        if not hmac.compare_digest(given.strip(), self.expected):
            msg = "missing or invalid API key: send 'Authorization: Bearer KEY'"
            await send_error(scope, send, ApiError(401, msg, code="invalid_api_key"))
            return
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Reject bodies over `limit` bytes with 413, before any route parses them.

    The body is read here (bounded) and replayed to the app; later `receive` calls go to
    the server so the app still hears about a disconnect. Paths under `streamed` pass
    through unread: their routes stream the body to disk.
    """

    def __init__(
        self, app: ASGIApp, limit: int, streamed: tuple[str, ...] = STREAMED_PREFIXES
    ) -> None:
        self.app = app
        self.limit = limit
        self.streamed = streamed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.streamed):
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await send_error(scope, send, self._too_large())
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left while sending
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await send_error(scope, send, self._too_large())
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self) -> ApiError:
        return ApiError(413, f"request body is larger than {self.limit} bytes", code="too_large")


class RequestCountMiddleware:
    """Count answered requests by route and status for /metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            # the matched route's template, not the raw path: unknown paths share one label,
            # so clients cannot grow the metric without bound
            route = getattr(scope.get("route"), "path", None)
            self.metrics.observe_request(route or "other", status)
