"""Errors as each API family shows them.

Routes raise `ApiError` (or let a `CorralError` through); the app's exception handlers turn
it into the body of the family the path belongs to:

    OpenAI and llama.cpp routes  {"error": {"message", "type", "param", "code"}}
    Ollama routes (/api/...)     {"error": "message"}

so a client library always finds the error where it looks for one.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from corral.errors import (
    ContextOverflowError,
    CorralError,
    DownloadError,
    GGUFError,
    ModelNotFoundError,
    QueueFullError,
    TemplateError,
    UnsupportedError,
)


class Family(Enum):
    """Which API a path belongs to, for the shape of its errors."""

    OPENAI = "openai"
    OLLAMA = "ollama"


def family_of(path: str) -> Family:
    """The family whose error shape a path uses (llama.cpp's extras use OpenAI's)."""
    return Family.OLLAMA if path.startswith("/api/") or path == "/api" else Family.OPENAI


class ApiError(Exception):
    """An HTTP error with a one-line message; `code` and `param` feed OpenAI's fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}


def bad_request(message: str, param: str | None = None) -> ApiError:
    """A 400 for input the server cannot use."""
    return ApiError(400, message, param=param)


def not_supported(what: str, param: str | None = None) -> ApiError:
    """A 400 for a feature corral does not offer yet (tools, structured output, images)."""
    return ApiError(400, f"{what} not supported yet", code="unsupported", param=param)


# CorralError subclass -> (status, OpenAI code); the first match wins, so order matters.
_STATUS: tuple[tuple[type[CorralError], int, str | None], ...] = (
    (ModelNotFoundError, 404, "model_not_found"),
    (ContextOverflowError, 400, "context_length_exceeded"),
    (QueueFullError, 503, "server_busy"),
    (TemplateError, 400, "template_error"),
    (UnsupportedError, 400, "unsupported_model"),
    (GGUFError, 400, "invalid_model_file"),
    (DownloadError, 502, "download_failed"),
)


def from_corral_error(e: CorralError, retry_after_s: int = 1) -> ApiError:
    """The HTTP form of a corral error: bad input is 4xx, a full queue 503 + Retry-After."""
    message = " ".join(str(e).split()) or type(e).__name__
    for cls, status, code in _STATUS:
        if isinstance(e, cls):
            headers = {"Retry-After": str(retry_after_s)} if status == 503 else None
            return ApiError(status, message, code=code, headers=headers)
    return ApiError(400, message)


def _openai_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 404:
        return "invalid_request_error"
    if status in (429, 503):
        return "server_busy" if status == 503 else "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def error_body(err: ApiError, family: Family) -> dict[str, Any]:
    """The JSON body of `err` in `family`'s shape."""
    if family is Family.OLLAMA:
        return {"error": err.message}
    return {
        "error": {
            "message": err.message,
            "type": _openai_type(err.status),
            "param": err.param,
            "code": err.code,
        }
    }
