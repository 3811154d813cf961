"""`corral serve`: OpenAI- and ollama-compatible HTTP APIs over the engine's schedulers.

`create_app(ServerConfig(...))` builds the FastAPI app; the CLI runs it under uvicorn.
Importing this package is cheap (the CLI reads `config` for its defaults): fastapi and the
engine load on first use of `create_app`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from corral.server.config import ServerConfig

if TYPE_CHECKING:
    from corral.server.app import create_app

__all__ = ["ServerConfig", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from corral.server.app import create_app

        return create_app
    raise AttributeError(f"module 'corral.server' has no attribute {name!r}")
