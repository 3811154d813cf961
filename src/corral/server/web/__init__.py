"""The web chat at `/`: one static page (HTML + vanilla JS + CSS) shipped as package data.

The page is served by a small ASGI layer rather than a router because it must load without the
API key: a browser cannot attach `Authorization` to a page navigation, so the page itself asks
for the key and sends it on its API calls. The app factory therefore places `WebPages` outside
the API-key check. Only the fixed files below are served (no path from the request reaches the
file system), and a Content-Security-Policy forbids loading anything from elsewhere: the chat
works offline and a model's text can never pull in a script.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from starlette.types import ASGIApp, Receive, Scope, Send

# URL path -> (file under static/, content type). "/" is the page; the rest are its assets.
PAGES: dict[str, tuple[str, str]] = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/web/chat.js": ("chat.js", "text/javascript; charset=utf-8"),
    "/web/chat.css": ("chat.css", "text/css; charset=utf-8"),
    "/favicon.ico": ("favicon.svg", "image/svg+xml"),
}

# 'self' only: no CDN, no inline script, no frames; connect-src 'self' lets it call the API.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@cache
def read_page(name: str) -> bytes:
    """The bytes of one static file (read once: they are part of the installed package)."""
    return files(__package__).joinpath("static", name).read_bytes()


class WebPages:
    """Pure ASGI: answer GET/HEAD for the chat page and its assets; pass all else on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        page = PAGES.get(scope.get("path", "")) if scope["type"] == "http" else None
        if page is None or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        body = read_page(page[0])
        headers = [
            (b"content-type", page[1].encode()),
            (b"content-length", str(len(body)).encode()),
            # revalidate each load: an upgraded server must not run an old script
            (b"cache-control", b"no-cache"),
            (b"content-security-policy", CSP.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )
