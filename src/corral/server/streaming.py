"""Streaming responses: SSE (OpenAI) and NDJSON (ollama) framing, and a response that always
runs its clean-up.

`EventStream.__call__` wraps Starlette's streaming in try/finally: whether the body ran to
its end, the client went away mid-stream (Starlette cancels the body task when it sees the
disconnect) or before the first byte, `on_close` runs, cancelling the generation and
releasing the model. A plain generator's `finally` would not run if it never started.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

SSE_MEDIA_TYPE = "text/event-stream"
NDJSON_MEDIA_TYPE = "application/x-ndjson"


def dumps(obj: Any) -> str:
    """Compact JSON, non-ASCII kept as is."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def sse_data(obj: Any) -> bytes:
    """One server-sent event carrying `obj` as JSON."""
    return f"data: {dumps(obj)}\n\n".encode()


SSE_DONE = b"data: [DONE]\n\n"


def ndjson_line(obj: Any) -> bytes:
    """One NDJSON line."""
    return (dumps(obj) + "\n").encode()


class EventStream(StreamingResponse):
    """A streaming response that calls `on_close` exactly once, however it ends."""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        media_type: str,
        on_close: Callable[[], None],
        headers: dict[str, str] | None = None,
    ) -> None:
        # no proxy buffering: tokens must reach the client as they come
        hdrs = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})}
        super().__init__(content, media_type=media_type, headers=hdrs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()
