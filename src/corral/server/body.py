"""Request bodies: JSON parsed whatever the Content-Type, validated into a pydantic model.

Parsing here rather than through FastAPI's body parameters means `curl -d '{...}'` (which
sends form encoding) works as it does against ollama, and every parse or type error becomes
one readable 400 line in the route family's shape instead of a 422 list.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import pydantic
from starlette.requests import Request

from corral.server.errors import bad_request

M = TypeVar("M", bound=pydantic.BaseModel)


async def parse_body(request: Request, model: type[M]) -> M:
    """The request's JSON body as `model`; ApiError(400) for anything unusable."""
    return validate(await request_json(request), model)


async def request_json(request: Request) -> Any:
    """The request's body parsed as JSON (any value); ApiError(400) when it is not JSON."""
    raw = await request.body()
    if not raw.strip():
        raise bad_request("request body is empty; send a JSON object")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise bad_request(f"malformed JSON in request body: {e}") from None


def validate(data: Any, model: type[M]) -> M:
    """`data` as `model`, with the first validation error as the message."""
    if not isinstance(data, dict):
        raise bad_request(f"request body must be a JSON object, not {_json_type(data)}")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as e:
        raise bad_request(*_describe(e)) from None


def _describe(e: pydantic.ValidationError) -> tuple[str, str | None]:
    """(message, param) for the first error: "'max_tokens': Input should be a valid integer"."""
    err = e.errors(include_url=False)[0]
    loc = ".".join(str(p) for p in err.get("loc", ()) if not _is_union_tag(p))
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    if err.get("type") == "missing":
        return f"'{loc}' is required", loc or None
    return (f"'{loc}': {msg}" if loc else msg), loc or None


def _is_union_tag(part: object) -> bool:
    # pydantic names union branches in error locations ("str", "list[int]"); users never
    # wrote those, so they are left out of the path shown.
    return isinstance(part, str) and ("[" in part or part in {"str", "int", "float", "bool"})


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
